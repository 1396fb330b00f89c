"""The ``i2f-fast`` command: ``demo`` (I²F on built-in data), ``attack`` and ``compare`` (a real
gradient-inversion attack, alone or next to I²F), ``validate`` (the prediction against the attack's
own optimum) and ``env`` (what is installed).

``i2f-fast demo`` is what ``make demo`` runs: LeNet (the paper's DLG-style ConvNet) on built-in
handwritten digits, one I²F system per sample (the paper's batch-of-one setting, all samples
solved together) for Gaussian gradient noise of several variances. It prints a table, and writes
``results.json`` and a log-log plot into ``--out``.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

from . import __version__
from .attack import ATTACKS, INITS, OPTIMIZERS
from .data import DATASETS, load_dataset
from .experiments.audit_job import add_audit_args
from .experiments.output import damping_label
from .defenses import DEFENSES
from .influence import DEFAULT_EPS_REL, InversionInfluence
from .models import INIT_SCHEMES, MODELS, build_model
from .validate import LIMIT_EPS_REL, OBJECTIVE_ATTACKS

# `compare` and `validate` run one small per-sample problem at a time, on 1 thread by default: a second thread
# gains little there and cost 10-40x on cores shared with other work (measured: 3.8 s vs 42 s per validate
# system on 2 busy cores).
# compare: Gaussian variances over 4 decades (predicted RMSE ~2e-3 to ~0.3); five levels took up to 5.4 min.
COMPARE_STRENGTHS = [1e-8, 1e-6, 1e-4]
# 28x28 LeNet: Adam stops far short of the optimum (JᵀJ down to ~1e-7·λ_max) and 8 x 5 attacks took ~10 min.
COMPARE_IMAGE_SIZE = 16
VALIDATE_IMAGE_SIZE = 12  # the local attack converges there in a few hundred L-BFGS iterations (16x16: thousands)
VALIDATE_VARIANCES = [1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3]

COLUMNS = ("sample", "label", "variance", "jt_delta_norm", "lambda_max", "i2f_lower_bound", "i2f", "rmse", "expected_rmse",
           "iterations", "seconds")


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="i2f-fast", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"i2f_fast {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show the full traceback instead of a one-line message (anywhere on the line)")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="I²F and its lower bound under Gaussian gradient noise, per sample")
    demo.add_argument("--out", type=Path, default=Path("i2f-results"), help="output folder (default ./i2f-results)")
    demo.add_argument("--dataset", choices=DATASETS, default="digits")
    demo.add_argument("--root", default=None, help="dataset folder for mnist/cifar10/cifar100 (torchvision layout)")
    demo.add_argument("--model", choices=sorted(MODELS), default="lenet")
    demo.add_argument("--init", choices=INIT_SCHEMES, default=None, help="weight initialisation (default: the model's)")
    demo.add_argument("--samples", type=int, default=8, help="number of samples (default 8)")
    demo.add_argument("--variances", type=_positive_float, nargs="+", default=[1e-8, 1e-6, 1e-4],
                      help="Gaussian noise variances (default 1e-8 1e-6 1e-4: the linear regime, README 'validate')")
    _add_damping_args(demo)
    demo.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")

    attack = sub.add_parser("attack", help="defend a shared gradient, invert it, measure and draw the reconstruction")
    _add_problem_args(attack, samples=1)
    attack.add_argument("--strength", type=float, default=None,
                        help="the defense's main parameter (gaussian: var, laplace: scale, dp: noise multiplier, "
                             "prune/topk: ratio, quantize: bits, eigen: scale)")
    attack.add_argument("--init-images", choices=INITS, default="randn", help="start of the attack (default randn)")
    attack.add_argument("--infer-labels", action="store_true", help="infer the labels from the gradient (iDLG / Yin)")
    attack.add_argument("--quiet", action="store_true", help="no progress bar")

    compare = sub.add_parser("compare", help="the predicted RMSE next to a real attack's RMSE, per sample and strength")
    _add_problem_args(compare, samples=8, defense="gaussian", iterations=500, attack="dlg", restarts=4,
                      image_size=COMPARE_IMAGE_SIZE, threads=1)
    compare.add_argument("--strengths", type=float, nargs="+", default=COMPARE_STRENGTHS,
                         help="defense strengths (default Gaussian variances "
                              f"{' '.join(f'{s:g}' for s in COMPARE_STRENGTHS)})")
    _add_damping_args(compare)
    compare.add_argument("--box", action=argparse.BooleanOptionalAction, default=True,
                         help="project the attack onto the valid pixel box (default on)")
    compare.add_argument("--quiet", action="store_true", help="no progress bar")

    validate = sub.add_parser(
        "validate", help="the prediction against the attack's own optimum (started at x) and the attack, per noise level"
    )
    _add_data_args(validate, samples=3, image_size=VALIDATE_IMAGE_SIZE, threads=1)
    validate.set_defaults(dtype="float64")
    validate.add_argument("--variances", type=_positive_float, nargs="+", default=VALIDATE_VARIANCES,
                          help="Gaussian noise variances σ² (default 1e-8 … 1e-3: the linear regime and beyond)")
    validate.add_argument("--objective", choices=tuple(OBJECTIVE_ATTACKS), default="l2",
                          help="l2 (checked with the dlg attack, default) or cosine (gs)")
    validate.add_argument("--restarts", type=int, default=2, help="random starts of the global attack (default 2)")
    validate.add_argument("--iterations", type=int, default=400, help="global attack iterations (default 400)")
    validate.add_argument("--local-iterations", type=int, default=2000,
                          help="cap on the local attack's L-BFGS iterations (default 2000)")
    validate.add_argument("--grad-tol", type=_positive_float, default=1e-6,
                          help="the local attack stops at this gradient relative to its start (default 1e-6)")
    validate.add_argument("--eps-rel", type=_positive_float, default=LIMIT_EPS_REL,
                          help=f"damping of the prediction relative to λ_max (default {LIMIT_EPS_REL:g}: ε → 0)")
    validate.add_argument("--box", action="store_true", help="project the global attack onto the valid pixel box")
    validate.add_argument("--quiet", action="store_true", help="no progress bar")

    _add_calibrate_parser(sub)
    audit = sub.add_parser("audit", help="predicted reconstruction risk of every sample of a dataset under a defense")
    _add_data_args(audit, samples=None, threads=1)
    _add_damping_args(audit)
    add_audit_args(audit)

    sub.add_parser("env", help="print versions, threads and the available kernel backends")
    _add_reproduce_parser(sub)
    return parser


def _add_reproduce_parser(sub) -> None:
    from .experiments.reproduce import EXPERIMENTS

    reproduce = sub.add_parser("reproduce", help="reproduce one of the paper's findings (E1-E8), or all of them")
    reproduce.add_argument("experiment", help=f"one of {', '.join(EXPERIMENTS)}, or all")
    reproduce.add_argument("--out", type=Path, default=Path("i2f-reproduce"), help="output folder (default ./i2f-reproduce)")
    reproduce.add_argument("--quick", action="store_true", help="small sizes: about a minute per experiment")
    reproduce.add_argument("--resume", action="store_true",
                           help="skip experiments already finished in --out with the same configuration")
    reproduce.add_argument("--dataset", choices=DATASETS, default=None,
                           help="data of every experiment (default: each experiment's, built-in digits / natural)")
    reproduce.add_argument("--root", default=None, help="dataset folder for mnist/cifar10/cifar100 (torchvision layout)")
    reproduce.add_argument("--model", choices=sorted(MODELS), default=None, help="model (default: each experiment's)")
    reproduce.add_argument("--iterations", type=int, default=None,
                           help="attack iterations (default: each experiment's; the paper's scripts use 24000)")
    reproduce.add_argument("--seed", type=int, default=None, help="seed (default: each experiment's)")
    reproduce.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_calibrate_parser(sub) -> None:
    """``i2f-fast calibrate``: the smallest Gaussian / DP noise meeting a target on a quantile of predicted RMSE."""
    from .audit.accounting import ACCOUNTANTS
    from .audit.calibrate import CALIBRATED_DEFENSES

    p = sub.add_parser("calibrate", help="the smallest noise (Gaussian variance or DP noise multiplier) whose quantile "
                                         "of predicted attack RMSE reaches a target, checked by the attack")
    _add_data_args(p, samples=64, image_size=VALIDATE_IMAGE_SIZE, threads=1)
    p.set_defaults(dtype="float32")
    p.add_argument("--target-rmse", type=_positive_float, required=True,
                   help="predicted attack RMSE per element (normalised space) to reach")
    p.add_argument("--quantile", type=float, default=0.05,
                   help="quantile of the per-sample RMSE that must reach it (default 0.05: all but the 5%% most exposed)")
    p.add_argument("--defense", choices=CALIBRATED_DEFENSES, default="gaussian", help="noise to calibrate (default gaussian)")
    p.add_argument("--clip", type=_positive_float, default=None, help="dp: per-sample clipping norm C")
    p.add_argument("--batch", type=int, default=1, help="dp: batch size B (recorded; the per-sample risk does not use it)")
    p.add_argument("--sample-rate", type=_positive_float, default=None, help="dp: Poisson sample rate q of the training run")
    p.add_argument("--steps", type=int, default=None, help="dp: DP-SGD steps T of the training run")
    p.add_argument("--delta", type=_positive_float, default=None, help="dp: δ of (ε, δ)-DP")
    p.add_argument("--accountant", choices=ACCOUNTANTS, default="rdp", help="dp: Opacus accountant (default rdp)")
    p.add_argument("--objective", choices=tuple(OBJECTIVE_ATTACKS), default="l2", help="attack objective (default l2)")
    p.add_argument("--eps-rel", type=_positive_float, default=None,
                   help=f"damping relative to λ_max (default {DEFAULT_EPS_REL:g}, the calibrated one)")
    p.add_argument("--max-noise", type=_positive_float, default=None,
                   help="upper end of the search: variance (gaussian, default 1) or noise multiplier (dp, default 100)")
    p.add_argument("--check-samples", type=int, default=3, help="most exposed samples the attack checks (default 3; 0: none)")
    p.add_argument("--restarts", type=int, default=2, help="random starts of the check's attack (default 2)")
    p.add_argument("--iterations", type=int, default=400, help="iterations of the check's attack (default 400)")
    p.add_argument("--local-iterations", type=int, default=2000,
                   help="cap on the L-BFGS iterations of the check's attack from x (default 2000)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_damping_args(p: argparse.ArgumentParser) -> None:
    """``--eps`` (absolute) and ``--eps-rel`` (× λ_max), exclusive; neither: the calibrated default."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--eps", type=float, default=None, help="absolute damping ε of I²F (the paper's code uses 1)")
    group.add_argument("--eps-rel", type=_positive_float, default=None,
                       help=f"damping relative to each sample's λ_max (default {DEFAULT_EPS_REL:g}, calibrated "
                            "against the converged attack: README 'Which damping')")


def _add_data_args(
    p: argparse.ArgumentParser, samples: int, image_size: int | None = None, threads: int | None = None
) -> None:
    """Flags of the jobs built on :func:`~i2f_fast.experiments.problem.load_problem`: output, data, model."""
    p.add_argument("--out", type=Path, default=Path("i2f-results"), help="output folder (default ./i2f-results)")
    p.add_argument("--dataset", choices=DATASETS, default="digits")
    p.add_argument("--root", default=None, help="dataset folder for mnist/cifar10/cifar100 (torchvision layout)")
    p.add_argument("--image-size", type=int, default=image_size,
                   help=f"side of digits/natural images (default {image_size or '28/32'})")
    p.add_argument("--model", choices=sorted(MODELS), default="lenet")
    p.add_argument("--init", choices=INIT_SCHEMES, default=None, help="weight initialisation (default: the model's)")
    p.add_argument("--samples", type=int, default=samples, help=f"number of samples (default {samples or 'all'})")
    p.add_argument("--start", type=int, default=0, help="index of the first sample")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=threads,
                   help=f"torch CPU threads (default: {threads or 'torch' + chr(39) + 's'})")


def _add_problem_args(
    p: argparse.ArgumentParser, samples: int, defense: str = "none", iterations: int = 2000, attack: str = "gs",
    restarts: int = 1, image_size: int | None = None, threads: int | None = None,
) -> None:
    """Flags shared by ``attack`` and ``compare``: data, model, defense and attack settings."""
    _add_data_args(p, samples, image_size, threads)
    p.add_argument("--defense", choices=sorted(DEFENSES), default=defense, help=f"gradient defense (default {defense})")
    p.add_argument("--clip-norm", type=_positive_float, default=1.0, help="per-sample clipping bound of --defense dp")
    p.add_argument("--eigen-index", type=int, default=0, help="eigenpair of --defense eigen (0 = largest)")
    p.add_argument("--attack", choices=ATTACKS, default=attack, help=f"gs (Inverting Gradients) or dlg (default {attack})")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam", help="adam, or lbfgs for dlg")
    p.add_argument("--iterations", type=int, default=iterations,
                   help=f"attack iterations (default {iterations}; the paper's scripts use 24000)")
    p.add_argument("--restarts", type=int, default=restarts, help=f"random restarts, run together (default {restarts})")
    p.add_argument("--tv", type=float, default=None, help="total-variation weight (default: the attack's, 0)")
    p.add_argument("--lr", type=float, default=None, help="attack step size (default 0.1; L-BFGS 1)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, leave=False)


def run_demo(args) -> dict:
    """Run the demo job; returns the dictionary written to ``results.json``."""
    if args.samples < 1:
        raise SystemExit("i2f-fast demo: --samples must be >= 1")
    if args.eps is not None and not (math.isfinite(args.eps) and args.eps >= 0):
        raise SystemExit("i2f-fast demo: --eps must be a finite number >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(args.seed)
    batch = load_dataset(args.dataset, n=args.samples, root=args.root)
    model = build_model(args.model, tuple(batch.images.shape[1:]), batch.num_classes, init=args.init, seed=args.seed)
    model = model.to(dtype)
    x, y = batch.images.to(dtype), batch.labels
    N, D = x.shape[0], math.prod(x.shape[1:])

    bar = _progress(2, "I²F")
    t0 = time.perf_counter()
    influence = InversionInfluence(model, x, y, per_sample=True, generator=gen)
    P = influence.jacobian.num_params
    bar.set_postfix_str("λ_max (Lanczos)")
    lam = influence.max_eigenvalue()
    bar.update()
    bar.set_postfix_str(f"{len(args.variances)} variances × {N} samples")
    deltas = torch.stack([math.sqrt(v) * torch.randn(N, P, generator=gen, dtype=dtype) for v in args.variances])
    # The exact expectation assembles each sample's spectrum (where it fits); the solve of every
    # variance and sample together then runs on it.
    expected = [influence.expected_i2f_sq(math.sqrt(v), args.eps, eps_rel=args.eps_rel).rmse for v in args.variances]
    res = influence.i2f(deltas, args.eps, eps_rel=args.eps_rel)
    bound = res.jt_delta_norm / lam
    bar.update()
    bar.close()
    total = time.perf_counter() - t0
    seconds = total / (N * len(args.variances))
    rows = [
        dict(
            sample=n, label=int(y[n]), variance=var, jt_delta_norm=res.jt_delta_norm[k, n].item(),
            lambda_max=lam[n].item(), i2f_lower_bound=bound[k, n].item(), i2f=res.value[k, n].item(),
            rmse=res.rmse[k, n].item(), expected_rmse=expected[k][n].item(), iterations=int(res.iterations[k, n]),
            seconds=seconds,
        )
        for k, var in enumerate(args.variances)
        for n in range(N)
    ]
    return dict(
        config=dict(
            dataset=args.dataset, model=args.model, init=args.init, samples=N, input_dim=D, num_params=P,
            variances=list(args.variances), eps=args.eps,
            eps_rel=None if args.eps is not None else args.eps_rel or DEFAULT_EPS_REL,
            damping=damping_label(args.eps, args.eps_rel), method=res.method,
            dtype=args.dtype, seed=args.seed, per_sample=True, strategy=influence.jacobian.strategy,
        ),
        environment=dict(torch=torch.__version__, threads=torch.get_num_threads(), python=platform.python_version()),
        total_seconds=total,
        rows=rows,
    )


def _print_table(result: dict) -> None:
    header = ("sample", "label", "variance", "‖Jᵀδ‖", "λ_max", "I²F_lb", "I²F", "RMSE pred", "E RMSE", "s/sample")
    print(" ".join(f"{h:>10}" for h in header))
    for r in result["rows"]:
        cells = (
            f"{r['sample']:>10d}", f"{r['label']:>10d}", f"{r['variance']:>10.0e}", f"{r['jt_delta_norm']:>10.3e}",
            f"{r['lambda_max']:>10.3e}", f"{r['i2f_lower_bound']:>10.3e}", f"{r['i2f']:>10.3e}", f"{r['rmse']:>10.3e}",
            f"{r['expected_rmse']:>10.3e}", f"{r['seconds']:>10.4f}",
        )
        print(" ".join(cells))
    cfg = result["config"]
    print(
        f"\n{cfg['model']} ({cfg['num_params']:,} parameters) on {cfg['samples']} {cfg['dataset']} samples, "
        f"{cfg['damping']} ({cfg['method']} solver), {cfg['dtype']}, {result['environment']['threads']} threads: "
        f"{result['total_seconds']:.2f} s in total"
    )
    print("RMSE pred: the DLG attack's predicted per-element RMSE for this δ; E RMSE: its expectation over the noise. "
          "Check them against the attack itself: i2f-fast validate (or compare)")


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    samples = sorted({r["sample"] for r in result["rows"]})
    colors = plt.cm.viridis([i / max(1, len(samples) - 1) for i in range(len(samples))])
    for color, n in zip(colors, samples):
        rows = [r for r in result["rows"] if r["sample"] == n]
        var = [r["variance"] for r in rows]
        root_d = math.sqrt(result["config"]["input_dim"])
        ax.loglog(var, [r["rmse"] for r in rows], "o-", color=color, label=f"sample {n} (label {rows[0]['label']})")
        ax.loglog(var, [r["i2f_lower_bound"] / root_d for r in rows], "x--", color=color, alpha=0.6)
    ax.set_xlabel("Gaussian noise variance σ²")
    ax.set_ylabel("predicted attack RMSE ‖Δx‖/√D (normalised space)")
    cfg = result["config"]
    ax.set_title(f"I²F (solid) and lower bound (dashed): {cfg['model']} on {cfg['dataset']}, {cfg['damping']}")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def print_env() -> None:
    """Versions, threads, the compiled extensions and which kernel backends run here (and why not)."""
    from . import _loader
    from .backend import BackendUnavailableError, requested_backend, resolve, triton_status, unavailable_reason

    print(f"i2f_fast     {__version__}")
    print(f"python       {platform.python_version()} ({sys.executable})")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"torch        {torch.__version__} (CUDA {torch.version.cuda or 'none'}, GPU: {gpu})")
    print(f"triton       {triton_status()[1]}")
    print(f"threads      {torch.get_num_threads()} torch / {os.cpu_count()} cores")
    facts = _loader.BUILD
    if facts:
        print(f"built with   torch {facts.get('torch')}, CUDA architectures: {facts.get('cuda_archs') or 'none'}")
    print("extensions:")
    for ext in (_loader.CPU, _loader.CUDA):
        extra = ""
        if ext.loaded and ext.module is not None and ext.name.endswith("_C"):
            extra = f" (OpenMP {'on' if ext.module.openmp else 'off'})"
        print(f"  {ext.name:<16} {ext.reason}{extra}")
    try:
        requested = requested_backend()
    except ValueError as err:  # a bad I2F_FAST_BACKEND: say so instead of failing
        requested = f"invalid, {err}"
    print(f"backends (requested: {requested}):")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for name in ("native", "triton", "reference"):
        for device in devices:
            why = unavailable_reason(name, torch.device(device))
            state = "available" if why is None else f"not available: {why}"
            print(f"  {name:<10} {device:<5} {state}")
    if not requested.startswith("invalid"):
        for device in devices:
            try:
                print(f"{requested} picks {resolve(torch.device(device))} for {device} tensors")
            except BackendUnavailableError as err:
                print(f"{requested} fails for {device} tensors: {err}")
    _print_engine_coverage()


def _print_engine_coverage() -> None:
    """Whether the structured JᵀJ engine represents each built-in model, and with which node rules."""
    from .engine import EngineUnsupported, StructuredJacobian
    from .models import MODELS, build_model

    print("structured JᵀJ engine (InversionJacobian strategy 'auto' uses it where it applies):")
    for name in MODELS:
        shape = (3, 32, 32) if name == "resnet18" else (1, 28, 28)
        model = build_model(name, shape)
        x, y = torch.zeros(1, *shape), torch.zeros(1, dtype=torch.long)
        try:
            engine = StructuredJacobian(model, x, y, list(model.parameters()))
        except EngineUnsupported as err:
            print(f"  {name:<10} falls back to autograd: {err}")
            continue
        rules = [type(node.rule).__name__ for node in engine.nodes[1:]]
        generic = rules.count("GenericRule")
        print(f"  {name:<10} {len(rules)} nodes, {len(rules) - generic} hand-written rules, {generic} generic")


def main(argv: list[str] | None = None) -> int:
    """Run the ``i2f-fast`` command line ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Errors end the command with one line, ``i2f-fast <command>: error: <message>`` (a
    ``SystemExit``); ``--debug`` anywhere on the line shows the traceback instead. ``--out`` is
    created and checked for writing before any computation.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    args = _parser().parse_args([a for a in argv if a != "--debug"])
    try:
        _check_common_args(args)
        return _COMMANDS[args.command](args)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:  # noqa: BLE001 — every error becomes one line unless --debug
        if debug:
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        raise SystemExit(f"i2f-fast {args.command}: error: {message} (run with --debug for the traceback)") from err


def _check_common_args(args) -> None:
    """Checks of the flags several commands share, before any computation: counts, and ``--out``
    (created, and written to once, so that a bad folder fails now and not after the job)."""
    for flag in ("samples", "threads", "image_size"):
        value = getattr(args, flag, None)
        if value is not None and value < 1 and not (flag == "threads" and value == 0):
            raise SystemExit(f"i2f-fast {args.command}: --{flag.replace('_', '-')} must be >= 1, got {value}")
    if getattr(args, "start", 0) < 0:
        raise SystemExit(f"i2f-fast {args.command}: --start must be >= 0, got {args.start}")
    out = getattr(args, "out", None)
    if out is not None:
        _check_out(args.command, out)


def _check_out(command: str, out: Path) -> None:
    """Create ``out`` and check that a file can be written in it; SystemExit naming ``--out`` if not."""
    from .files import atomic_path

    try:
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(f"{out} exists and is not a folder")
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / ".i2f-fast-write-check") as probe:
            probe.write_text("")
        (out / ".i2f-fast-write-check").unlink(missing_ok=True)  # torchrun: every rank checks the same --out
    except OSError as err:
        raise SystemExit(f"i2f-fast {command}: --out {out} cannot be written: {err}") from err


def _demo_command(args) -> int:
    from .files import atomic_path, write_json

    result = run_demo(args)
    write_json(args.out / "results.json", result)
    with atomic_path(args.out / "i2f_vs_noise.png") as tmp:
        _plot(result, tmp)
    _print_table(result)
    print(f"wrote {args.out / 'results.json'} and {args.out / 'i2f_vs_noise.png'}")
    return 0


def _env_command(args) -> int:
    print_env()
    return 0


def _check_attack_args(args) -> None:
    flags = [("--iterations", args.iterations), ("--restarts", args.restarts)]
    if args.command in ("validate", "calibrate"):
        flags.append(("--local-iterations", args.local_iterations))
    for flag, value in flags:
        if value < 1:
            raise SystemExit(f"i2f-fast {args.command}: {flag} must be >= 1")


def _attack_command(args) -> int:
    from .experiments.attack_job import print_attack, run_attack
    from .experiments.output import save_grid
    from .files import write_json

    _check_attack_args(args)
    result, problem, restarts = run_attack(args)
    write_json(args.out / "attack.json", result)
    save_grid(problem.x, restarts, problem.batch, result["best_restart"], args.out / "attack.png")
    print_attack(result)
    print(f"wrote {args.out / 'attack.json'} and {args.out / 'attack.png'}")
    return 0


def _compare_command(args) -> int:
    from .experiments.compare_job import print_compare, run_compare
    from .experiments.output import save_scatter
    from .files import write_json

    _check_attack_args(args)
    result = run_compare(args, progress=not args.quiet)
    write_json(args.out / "compare.json", result)
    rows, cfg = result["rows"], result["config"]
    save_scatter(
        [r["i2f_rmse"] for r in rows], [r["attack_rmse"] for r in rows], [r["strength"] for r in rows],
        f"{cfg['attack']} attack vs its prediction ({damping_label(cfg['eps'], cfg['eps_rel'])})\n"
        f"{cfg['model']} on {cfg['dataset']}, {cfg['defense']} defense", "predicted RMSE ‖Δx‖/√D", args.out / "compare.png",
    )
    print_compare(result)
    print(f"wrote {args.out / 'compare.json'} and {args.out / 'compare.png'}")
    return 0


def _validate_command(args) -> int:
    from .experiments.output import save_scatter
    from .files import write_json
    from .experiments.validate_job import print_validate, run_validate

    _check_attack_args(args)
    result = run_validate(args, progress=not args.quiet)
    write_json(args.out / "validate.json", result)
    rows, cfg = result["rows"], result["config"]
    save_scatter(
        [r["predicted_rmse"] for r in rows] * 2, [r["local_rmse"] for r in rows] + [r["global_rmse"] for r in rows],
        [r["variance"] for r in rows] * 2,
        f"{cfg['attack']} objective vs its prediction (ε = {cfg['eps_rel']:g}·λ_max)\n{cfg['model']} on {cfg['dataset']}",
        "predicted RMSE ‖Δ‖/√D", args.out / "validate.png",
        kinds=["local (from x)"] * len(rows) + [f"global ({cfg['restarts']} random starts)"] * len(rows), level_name="σ²",
    )
    print_validate(result)
    print(f"wrote {args.out / 'validate.json'} and {args.out / 'validate.png'}")
    return 0


def _reproduce_command(args) -> int:
    from .experiments.reproduce import check_name
    from .experiments.reproduce.runner import report, run_all, run_experiment

    try:
        check_name(args.experiment, allow_all=True)
    except ValueError as err:
        raise SystemExit(f"i2f-fast reproduce: error: {err}") from err
    overrides = dict(dataset=args.dataset, root=args.root, model=args.model, iterations=args.iterations, seed=args.seed)
    options = dict(quick=args.quick, overrides=overrides, resume=args.resume, progress=not args.quiet)
    if args.experiment != "all":
        record, table = run_experiment(args.experiment, args.out, **options)
        print(report(record, table))
        print(f"wrote {args.out / args.experiment / 'result.json'} and {args.out / args.experiment / 'figure.png'}")
        return 0
    entries = run_all(args.out, **options)
    print(f"wrote {args.out / 'index.md'}")
    return 1 if any(e.get("failed") for e in entries) else 0


def _calibrate_command(args) -> int:
    from .experiments.calibrate_job import print_calibrate, run_calibrate, save_plot
    from .files import write_json

    _check_attack_args(args)
    result = run_calibrate(args, progress=not args.quiet)
    write_json(args.out / "calibrate.json", result)
    save_plot(result, args.out / "calibrate.png")
    print_calibrate(result)
    print(f"wrote {args.out / 'calibrate.json'} and {args.out / 'calibrate.png'}")
    return 0


def _audit_command(args) -> int:
    from .experiments.audit_job import print_audit, run_audit

    result = run_audit(args)
    if result is not None:  # rank 0 (or the only process)
        print_audit(result, args.out)
    return 0


_COMMANDS = {"demo": _demo_command, "env": _env_command, "attack": _attack_command, "compare": _compare_command,
             "validate": _validate_command, "audit": _audit_command, "calibrate": _calibrate_command,
             "reproduce": _reproduce_command}


if __name__ == "__main__":
    sys.exit(main())
