"""The optimiser loops of :func:`~i2f_fast.attack.invert`: (signed) Adam with the fused
``attack_step`` (optionally replayed as a CUDA graph) and L-BFGS, in place on the candidates."""
from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from .. import cuda_graphs
from ..ops import attack_step
from .objective import _Objective
from .presets import ADAM_BETAS, LINE_SEARCH_EVALS, AttackConfig, _adam_schedule


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="it", file=sys.stderr, leave=False, disable=not enabled)


@dataclass(frozen=True)
class _LoopOptions:
    """How :func:`invert` runs its optimiser loop (see its arguments)."""

    iterations: int
    history_every: int
    box: tuple
    progress: bool
    attack: str
    cuda_graph: bool
    line_search: str | None = None
    grad_tol: float | None = None

    @property
    def check_every(self) -> int:
        """Iterations between host reads (the progress bar's loss)."""
        return max(self.history_every, cuda_graphs.MIN_CHECK_EVERY)


def _objective_value(loss: torch.Tensor, tv_value: torch.Tensor | None, alpha_tv: float) -> torch.Tensor:
    """Matching loss + α_TV·TV per restart, as a new tensor (safe to keep across iterations)."""
    return loss.clone() if tv_value is None else loss + alpha_tv * tv_value


def _run_adam(objective: _Objective, xs, config: AttackConfig, loop: _LoopOptions):
    """Adam (or signed Adam) with the optional box, in place on ``xs``; returns the history.

    Per iteration outside the model's forward/backward: ``grad_match``, ``tv`` (when α_TV > 0)
    and ``attack_step``, one op each (``python_tests/test_fused_attack.py`` counts them), and no
    host read except the progress bar's every ``loop.check_every`` iterations.
    """
    beta1, beta2 = ADAM_BETAS
    schedule = _adam_schedule(config, loop.iterations, xs.dtype).to(xs.device)
    exp_avg, exp_avg_sq = torch.zeros_like(xs), torch.zeros_like(xs)
    lower, upper = (None if b is None else b.expand(xs.shape[1:]).contiguous() for b in loop.box)

    def iteration(coefficients: torch.Tensor):
        loss, tv_value, gx = objective.value_and_grad(xs)
        attack_step(
            xs, gx, exp_avg, exp_avg_sq, coefficients[0], coefficients[1], coefficients[2],
            beta1=beta1, beta2=beta2, signed=config.signed, lower=lower, upper=upper,
        )
        return loss, tv_value

    run_one = _graphed_iteration(iteration, schedule, xs) if loop.cuda_graph else (lambda it: iteration(schedule[it]))
    steps, history = [], []
    bar = _progress(loop.iterations, loop.progress, f"{loop.attack} attack")
    for it in range(loop.iterations):
        loss, tv_value = run_one(it)
        if it % loop.history_every == 0:
            steps.append(it)
            history.append(_objective_value(loss, tv_value, config.tv))
        if loop.progress and it % loop.check_every == 0:
            bar.set_postfix_str(f"loss {history[-1].min().item():.4g}")
        bar.update()
    bar.close()
    return steps, history, loop.iterations


def _graphed_iteration(iteration, schedule: torch.Tensor, xs: torch.Tensor):
    """``run_one(it)`` that replays one Adam iteration as a CUDA graph (:mod:`i2f_fast.cuda_graphs`).

    The graph reads its row of ``schedule`` through a device-side counter and writes the matching
    loss and TV value into fixed tensors, so replays need nothing from the host.
    """
    counter = torch.zeros(1, dtype=torch.int64, device=xs.device)
    row = schedule[:1].clone()
    static: dict[str, torch.Tensor | None] = {}

    def body():
        torch.index_select(schedule, 0, counter, out=row)
        counter.add_(1)
        loss, tv_value = iteration(row[0])
        if not static:  # first (eager) call: allocate the outputs outside any capture
            static["loss"] = torch.empty_like(loss)
            static["tv"] = None if tv_value is None else torch.empty_like(tv_value)
        static["loss"].copy_(loss)
        if tv_value is not None:
            static["tv"].copy_(tv_value)

    step = cuda_graphs.GraphedStep(body, "attack iteration", xs.device)

    def run_one(_it):
        step()
        return static["loss"], static["tv"]

    return run_one


def _run_lbfgs(objective: _Objective, xs, config: AttackConfig, loop: _LoopOptions):
    """L-BFGS (DLG's optimiser) on the sum of the restarts' objectives; returns the history and
    the iterations run. With ``loop.grad_tol`` it stops once the gradient at the start of an
    iteration is that small relative to the first one, or when an iteration leaves the iterate
    unchanged (one host read per iteration). torch's L-BFGS evaluates the objective at the start of
    every iteration, where the line search usually ended: that evaluation is reused, not repeated."""
    leaf = xs.clone().requires_grad_(True)
    if loop.line_search is None:
        opt = torch.optim.LBFGS([leaf], lr=config.lr, max_iter=1, history_size=100)
    else:  # no absolute tolerances: gradients and losses near the optimum can sit below any fixed one
        opt = torch.optim.LBFGS([leaf], lr=config.lr, max_iter=1, max_eval=1 + LINE_SEARCH_EVALS, history_size=100,
                                tolerance_grad=0.0, tolerance_change=0.0, line_search_fn=loop.line_search)
    last: dict[str, torch.Tensor] = {}
    grad_at_start: list[torch.Tensor] = []  # max |∇_x| where each iteration started

    def closure():
        if "x" not in last or not torch.equal(last["x"], leaf.detach()):
            last["x"] = leaf.detach().clone()
            loss, tv_value, last["grad"] = objective.value_and_grad(last["x"])
            last["objective"] = _objective_value(loss, tv_value, config.tv).detach()
        leaf.grad = last["grad"]
        if len(grad_at_start) <= it:
            grad_at_start.append(last["grad"].abs().max())
        return last["objective"].sum()

    steps, history = [], []
    bar = _progress(loop.iterations, loop.progress, f"{loop.attack} attack (L-BFGS)")
    it = 0
    for it in range(loop.iterations):
        previous = leaf.detach().clone() if loop.grad_tol is not None else None
        opt.step(closure)
        if loop.box[0] is not None:
            with torch.no_grad():
                leaf.clamp_(*loop.box)
        if it % loop.history_every == 0:
            steps.append(it)
            history.append(last["objective"])
        if loop.progress and it % loop.check_every == 0:
            bar.set_postfix_str(f"loss {history[-1].min().item():.4g}")
        bar.update()
        if previous is not None and (
            grad_at_start[it] <= loop.grad_tol * grad_at_start[0] or torch.equal(previous, leaf.detach())
        ):
            break
    bar.close()
    xs.copy_(leaf.detach())
    return steps, history, it + 1
