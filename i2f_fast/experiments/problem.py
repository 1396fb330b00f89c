"""The set-up shared by the ``attack`` and ``compare`` jobs: data, model and the defended gradient."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..data import ImageBatch, load_dataset
from ..defenses import DEFENSES, DefenseResult, apply_defense
from ..models import build_model


@dataclass
class Problem:
    """A model in ``eval()`` mode and a batch in its dtype (images ``(N, C, H, W)``, labels ``(N,)``)."""

    batch: ImageBatch
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


def load_problem(args) -> Problem:
    """Dataset ``args.dataset`` (samples ``args.start …``), model ``args.model`` built for it with
    ``args.init`` and ``args.seed``, in ``args.dtype``. Raises SystemExit for bad sizes."""
    if args.samples < 1:
        raise SystemExit(f"i2f-fast {args.command}: --samples must be >= 1")
    extra = {"image_size": args.image_size} if args.image_size and args.dataset in ("digits", "natural") else {}
    batch = load_dataset(args.dataset, n=args.samples, start=args.start, root=args.root, **extra)
    dtype = getattr(torch, args.dtype)
    model = build_model(args.model, tuple(batch.images.shape[1:]), batch.num_classes, init=args.init, seed=args.seed)
    return Problem(batch, model.to(dtype), batch.images.to(dtype), batch.labels)


def defend(name: str, strength, grads: torch.Tensor, problem_xy, args, generator) -> DefenseResult:
    """Apply defense ``name`` with ``strength`` to ``grads`` of ``(model, x, y) = problem_xy``."""
    model, x, y = problem_xy
    spec = DEFENSES[name]
    options = {}
    if name == "dp":
        options["clip_norm"] = args.clip_norm
    if name == "eigen":
        options["index"] = args.eigen_index
    batch_kw = dict(model=model, x=x, y=y) if spec.needs_batch else {}
    return apply_defense(name, grads, strength, generator=generator, **batch_kw, **options)
