"""``i2f-fast audit``: the predicted reconstruction risk of every sample of a dataset under a defense,
written as Parquet / CSV, a summary, figures and ``report.html`` (:mod:`i2f_fast.audit`).

Under ``torchrun`` (``torchrun --nproc-per-node=N -m i2f_fast.audit ...``) the job joins the process
group torchrun describes in its environment (gloo on CPU, NCCL with one GPU per rank when CUDA is
there), the ranks split the samples, and rank 0 merges the shards and writes the report. Without
torchrun it runs in one process.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from ..audit import AuditConfigError, audit, parse_defense
from ..audit.report import (
    CHECK_ITERATIONS, CHECK_LOCAL_ITERATIONS, CHECK_SAMPLES, check_with_attack, summary, write_report,
)
from ..data import DatasetUnavailableError, load_dataset
from ..linearised_attack import OBJECTIVES
from ..models import build_model


def add_audit_args(p: argparse.ArgumentParser) -> None:
    """The flags of ``audit`` beyond the data and damping ones (:func:`i2f_fast.cli._add_data_args`)."""
    p.add_argument("--defense", default="gaussian:1e-4",
                   help="none, gaussian:VAR, dp:clip=C,noise=Z[,batch=B], prune:R, topk:R or quantize:BITS "
                        "(default gaussian:1e-4)")
    p.add_argument("--objective", choices=OBJECTIVES, default="l2", help="the attack's objective: l2 (DLG) or cosine (GS)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--per-sample", action="store_true",
                      help="one row per sample, each gradient shared alone (the paper's setting; the default)")
    mode.add_argument("--batch-size", type=int, default=None, metavar="B",
                      help="one row per batch of B consecutive samples (the attacker inverts the batch's mean gradient)")
    p.add_argument("--resume", action="store_true", help="keep the finished shards in --out and compute only the rest")
    p.add_argument("--chunk-size", type=int, default=None, help="samples per chunk and shard (default: 8 where they fit)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="the model's dtype (the spectra are float64)")
    p.add_argument("--check", type=int, default=CHECK_SAMPLES,
                   help=f"run the real attack on this many most and least exposed samples (default {CHECK_SAMPLES}; 0: off)")
    p.add_argument("--check-iterations", type=int, default=CHECK_ITERATIONS,
                   help=f"iterations of the check's random-start attack (default {CHECK_ITERATIONS})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _distributed() -> bool:
    """Join torchrun's process group (its environment says so); True when one is running."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not torch.distributed.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            torch.distributed.init_process_group("nccl")
        else:
            torch.distributed.init_process_group("gloo")
    return True


def run_audit(args) -> dict | None:
    """Run the audit job; on rank 0 returns the summary written to ``summary.json`` (other ranks: None)."""
    for flag in ("batch_size", "chunk_size", "check_iterations"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise SystemExit(f"i2f-fast audit: --{flag.replace('_', '-')} must be >= 1, got {value}")
    if args.check < 0:
        raise SystemExit(f"i2f-fast audit: --check must be >= 0, got {args.check}")
    try:
        parse_defense(args.defense, "--defense")
    except ValueError as err:
        raise SystemExit(f"i2f-fast audit: {err}") from err
    if args.root is not None and not Path(args.root).is_dir():
        raise SystemExit(f"i2f-fast audit: --root {args.root} is not a folder")
    if args.threads:
        torch.set_num_threads(args.threads)
    extra = {"image_size": args.image_size} if args.image_size and args.dataset in ("digits", "natural") else {}
    try:
        samples = load_dataset(args.dataset, n=args.samples, start=args.start, root=args.root, **extra)
    except DatasetUnavailableError as err:
        raise SystemExit(f"i2f-fast audit: --dataset {args.dataset} --root {args.root}: {err}") from err
    distributed = _distributed()
    try:
        device = torch.device("cuda", torch.cuda.current_device()) if distributed and torch.cuda.is_available() else "cpu"
        model = build_model(args.model, tuple(samples.images.shape[1:]), samples.num_classes, init=args.init, seed=args.seed)
        model = model.to(device=device, dtype=getattr(torch, args.dtype))
        per_sample = args.batch_size is None
        try:
            result = audit(
                model, samples, args.defense, objective=args.objective, per_sample=per_sample, batch_size=args.batch_size,
                out=args.out, resume=args.resume, chunk_size=args.chunk_size, eps=args.eps, eps_rel=args.eps_rel,
                seed=args.seed, progress=not args.quiet,
            )
        except AuditConfigError as err:
            raise SystemExit(f"i2f-fast audit: --out {err.folder}: {err.reason}") from err
        if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
            return None
        checks = check_with_attack(model.cpu(), samples, result, args.check if per_sample else 0,
                                   iterations=args.check_iterations, local_iterations=CHECK_LOCAL_ITERATIONS, seed=args.seed)
        written = write_report(result, samples, checks, args.out)
        return dict(config=result.config, seconds=result.seconds, computed=result.computed, checks=checks,
                    rows=result.table.num_rows, summary=summary(result.table), files=[str(p) for p in written])
    finally:
        if distributed:
            torch.distributed.destroy_process_group()


def print_audit(result: dict, out: Path) -> None:
    """A few lines: what was audited, the quantiles, the check, the files."""
    cfg = result["config"]
    q = result["summary"]["overall"]
    print(f"audited {result['rows']} {'samples' if cfg['mode'] == 'per_sample' else 'batches'} of {cfg['dataset']['name']} "
          f"under {cfg['defense']} ({cfg['objective']} attack) in {result['seconds']:.1f} s "
          f"({result['computed']} computed now, the rest from finished shards)")
    print(f"predicted RMSE: min {q['q00']:.3g}, 5% {q['q05']:.3g}, median {q['q50']:.3g}, 95% {q['q95']:.3g}, "
          f"max {q['q100']:.3g} (smaller = more exposed)")
    for c in result["checks"]:
        print(f"  check #{c['index']} ({c['group']}): audit {c['expected_rmse']:.3g}, predicted for the draw "
              f"{c['predicted_rmse']:.3g}, attack from x {c['local_rmse']:.3g}{'' if c['local_converged'] else ' (cap)'}, "
              f"random start {c['global_rmse']:.3g}")
    print(f"wrote {Path(out) / 'results.parquet'}, results.csv, summary.json, figures and report.html")
