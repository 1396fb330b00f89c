"""``StructuredJacobian``: J v, Jᵀ u and JᵀJ v by the four sweeps of ENGINE.md.

One primal run (forward + backward through the engine's own node rules) caches every node's
inputs and loss adjoint. A product is then at most four sweeps over the node list, with ``k``
tangents at once:

1. forward tangents ``ȧ`` (up), 2. backward tangents ``δż`` and the blocks of ``J v`` (down),
3. adjoints ``ē`` of the backward tangents (up), 4. adjoints ``ā`` of the forward tangents (down).

``J v`` is sweeps 1–2, ``Jᵀ u`` sweeps 3–4 and ``JᵀJ v`` all four, where the parameter-space
vector ``J v`` is handed from sweep 2 to sweep 3 layer by layer, in each rule's compact form (the
Gram form for linear layers), so it is never assembled.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn

from .loss import LossNode
from .rules import _add
from .trace import build_nodes


class StructuredJacobian:
    """``J = ∂(∇_θ L)/∂x`` of ``L = loss_fn(model(x), y)`` through the structured engine.

    Args:
        model: the ``nn.Module`` (eval mode for BatchNorm/Dropout; see :mod:`.trace`).
        x: ``(N, *S)`` input batch.
        y: targets for ``loss_fn`` (``(N,)`` int64 labels for the default cross-entropy).
        loss_fn: ``loss_fn(output, y) -> scalar``; None is cross-entropy, mean over the batch.
        params: the trainable parameters (the slots of parameter-space vectors), in order.
        per_sample: each sample is its own batch of one, with its own ``J_n``.
        check_finite: refuse a non-finite loss at ``x`` (see :meth:`set_primal`).

    Shapes: tangents are ``(k, N, *S)``; parameter-space vectors are lists with one tensor per
    parameter, ``(k, *θ_i)``, or ``(k, N, *θ_i)`` in per-sample mode.

    Raises:
        EngineUnsupported: the model cannot be represented exactly (the reason says why).
    """

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        params: Sequence[torch.Tensor],
        loss_fn: Callable | None = None,
        *,
        per_sample: bool = False,
        check_finite: bool = True,
    ):
        self.nodes, self.output = build_nodes(model, x, list(params))
        self.shapes_in = x.shape
        self.per_sample = per_sample
        self.param_shapes = [p.shape for p in params]
        self.loss_node = LossNode(loss_fn, y, per_sample)
        used: dict[int, int] = {}
        for node in self.nodes[1:]:
            node.rule.per_sample = per_sample
            node.rule.reads_x = node.inputs == [0]
            for slot in node.rule.param_slots:
                used[slot] = used.get(slot, 0) + 1
        self.shared = {slot for slot, count in used.items() if count > 1}
        for node in self.nodes[1:]:
            node.rule.shares_params = bool(self.shared.intersection(node.rule.param_slots))
        self._params = [p.detach() for p in params]
        self.set_primal(x, check_finite=check_finite)

    # ---------------------------------------------------------------------------------- primal
    def set_primal(self, x: torch.Tensor, *, check_finite: bool = True) -> None:
        """Move the linearisation point to a new input ``x`` of the traced shape (no re-tracing).

        Runs one forward + backward through the node rules and refreshes ``loss`` and
        ``gradient`` (and every node's cached inputs and adjoints used by the products):
        ``gradient`` is one tensor per parameter, ``θ_i``-shaped, or in per-sample mode
        ``(N, *θ_i)``, each sample's own gradient (read off the cached primal by the node rules).

        ``check_finite=False`` skips the finiteness check of the loss (a host read): an attack's
        diverged restart must not stop the others.

        Raises:
            ValueError: ``x`` does not have the traced shape.
            FloatingPointError: the loss is not finite (only with ``check_finite``).
        """
        if x.shape != self.shapes_in:
            raise ValueError(f"x must keep the traced shape {tuple(self.shapes_in)}, got {tuple(x.shape)}")
        with torch.enable_grad():
            self.loss, self.gradient = self._primal(x, self._params, check_finite)

    def _primal(self, x, params, check_finite: bool = True):
        """Run forward + backward through the rules; cache each node's inputs and adjoint."""
        # per sample, the summed gradient autograd would give is not wanted: the rules give each sample's
        leaves = [p.detach().requires_grad_(not self.per_sample) for p in params]
        values: list[torch.Tensor] = [x.detach().requires_grad_(True)]
        for node in self.nodes[1:]:
            values.append(node.rule.forward([values[i] for i in node.inputs], [leaves[s] for s in node.rule.param_slots]))
        loss = self.loss_node.value(values[self.output])
        if check_finite and not torch.isfinite(loss):
            raise FloatingPointError(f"the loss at x is not finite ({loss.item()})")
        grads = torch.autograd.grad(loss, values[1:] + ([] if self.per_sample else leaves), allow_unused=True)
        adjoints = [None] + list(grads[: len(values) - 1])
        for i, node in enumerate(self.nodes[1:], 1):
            dz = adjoints[i] if adjoints[i] is not None else torch.zeros_like(values[i])
            node.rule.prepare([values[j].detach() for j in node.inputs],
                              [params[s].detach() for s in node.rule.param_slots], values[i].detach(), dz)
        self.loss_node.prepare(values[self.output].detach())
        if self.per_sample:
            gradient = self._sample_gradient(x.shape[0])
        else:
            gradient = [torch.zeros_like(p) if g is None else g for g, p in zip(grads[len(values) - 1:], leaves)]
        self.shapes = [v.shape for v in values]
        self.dtype, self.device = x.dtype, x.device
        return loss.detach(), gradient

    def _sample_gradient(self, n: int) -> list[torch.Tensor]:
        """Per-sample mode: ``(N, *θ_i)`` per parameter, each node's share summed per slot."""
        total: dict[int, torch.Tensor] = {}
        for node in self.nodes[1:]:
            for slot, g in zip(node.rule.param_slots, node.rule.sample_gradient()):
                total[slot] = _add(total.get(slot), g)
        return [total[slot] if slot in total else p.new_zeros(n, *p.shape) for slot, p in enumerate(self._params)]

    # ---------------------------------------------------------------------------------- sweeps
    def _forward_tangents(self, v: torch.Tensor) -> list[torch.Tensor]:
        adot = [v]
        for node in self.nodes[1:]:
            adot.append(node.rule.tangent([adot[i] for i in node.inputs]))
        return adot

    def _backward_tangents(self, adot, materialize: bool) -> list:
        """Sweep 2: each node's block of ``J v`` (compact where allowed and not ``materialize``)."""
        dzdot: list = [None] * len(self.nodes)
        dzdot[self.output] = self.loss_node.hvp(adot[self.output])
        blocks: list = [None] * len(self.nodes)
        for i in range(len(self.nodes) - 1, 0, -1):
            node = self.nodes[i]
            d, dzdot[i] = dzdot[i], None
            if d is None:
                d = torch.zeros_like(adot[i])
            dadots, blocks[i] = node.rule.tangent_back([adot[j] for j in node.inputs], d, materialize)
            for j, t in zip(node.inputs, dadots):
                if j != 0 and t is not None:
                    dzdot[j] = _add(dzdot[j], t)
        return blocks

    def _adjoints(self, u_of_node: list, k: int) -> torch.Tensor:
        """Sweeps 3–4: ``Jᵀ u`` from each node's parameter-space block ``u_of_node[i]``."""
        count = len(self.nodes)
        ebar: list = [None] * count
        abar: list = [None] * count
        for i in range(1, count):
            node = self.nodes[i]
            ebar[i], second = node.rule.adjoint_up([ebar[j] for j in node.inputs], u_of_node[i])
            for j, t in zip(node.inputs, second):
                if t is not None:
                    abar[j] = _add(abar[j], t)
        if ebar[self.output] is not None:
            abar[self.output] = _add(abar[self.output], self.loss_node.hvp(ebar[self.output]))
        for i in range(count - 1, 0, -1):
            node = self.nodes[i]
            a = abar[i]
            abar[i] = None
            if a is None:
                a = torch.zeros(k, *self.shapes[i], dtype=self.dtype, device=self.device)
            for j, t in zip(node.inputs, node.rule.adjoint_down(a)):
                if t is not None:
                    abar[j] = _add(abar[j], t)
        return abar[0]

    def _sum_per_slot(self, blocks: list, slots=None) -> dict[int, torch.Tensor]:
        """Materialised parameter blocks summed over the nodes, per parameter slot (only ``slots``)."""
        total: dict[int, torch.Tensor] = {}
        for node, block in zip(self.nodes[1:], blocks[1:]):
            for slot, t in zip(node.rule.param_slots, block):
                if slots is None or slot in slots:
                    total[slot] = _add(total.get(slot), t)
        return total

    def _sum_shared(self, blocks: list) -> list:
        """Per node, its parameter blocks with shared parameters' blocks summed over the nodes."""
        if not self.shared:
            return blocks
        total = self._sum_per_slot(blocks, self.shared)
        out = [None]
        for node, block in zip(self.nodes[1:], blocks[1:]):
            if node.rule.shares_params:
                block = [total[s] if s in self.shared else t for s, t in zip(node.rule.param_slots, block)]
            out.append(block)
        return out

    # -------------------------------------------------------------------------------- products
    def jvp(self, v: torch.Tensor) -> list[torch.Tensor]:
        """``J v`` for ``v`` ``(k, N, *S)``: one tensor per parameter, ``(k, [N,] *θ_i)``."""
        blocks = self._backward_tangents(self._forward_tangents(v), materialize=True)
        total = self._sum_per_slot(blocks)
        lead = v.shape[:2] if self.per_sample else v.shape[:1]
        return [total[slot] if slot in total else torch.zeros(*lead, *shape, dtype=v.dtype, device=v.device)
                for slot, shape in enumerate(self.param_shapes)]

    def vjp(self, us: Sequence[torch.Tensor]) -> torch.Tensor:
        """``Jᵀ u`` for ``u`` a list of ``(k, [N,] *θ_i)`` → ``(k, N, *S)``."""
        u_of_node = [None] + [[us[s] for s in node.rule.param_slots] for node in self.nodes[1:]]
        return self._adjoints(u_of_node, us[0].shape[0])

    def gram(self, v: torch.Tensor) -> torch.Tensor:
        """``JᵀJ v`` for ``v`` ``(k, N, *S)`` → same shape; ``J v`` is never assembled."""
        blocks = self._backward_tangents(self._forward_tangents(v), materialize=False)
        return self._adjoints(self._sum_shared(blocks), v.shape[0])

    @property
    def nodes_summary(self) -> list[str]:
        """``name: rule`` per node, for ``i2f-fast env`` and logs."""
        return [f"{n.name}: {type(n.rule).__name__}" for n in self.nodes[1:]]
