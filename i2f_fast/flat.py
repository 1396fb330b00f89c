"""Flat parameter buffers: a model's gradients (or any parameter-shaped vectors) as views into one
contiguous ``(*batch, P)`` buffer.

A reduction over "all layers" (the global cosine of a gradient-inversion attack, a norm, a dot
product) is then one kernel over the buffer instead of one per parameter tensor, and writing a
list of per-layer tensors into the buffer is one ``torch.cat(..., out=buffer)`` with no new
allocation. Layout: parameters in ``model.parameters()`` order (the trainable ones, as
:func:`i2f_fast.frontdoor.layout_of` builds it), each flattened row-major, back to back;
``offsets[i]`` is where tensor ``i`` starts.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch


class FlatLayout:
    """Where each of L parameter-shaped tensors lives inside a flat vector of length P.

    Args:
        shapes: the L parameter shapes, in order.

    Attributes:
        shapes: the shapes, as ``torch.Size``.
        sizes: ``numel`` of each shape.
        offsets: start of each tensor in the flat vector (``offsets[i] + sizes[i] = offsets[i + 1]``).
        numel: P, the total length.
    """

    def __init__(self, shapes: Sequence[Sequence[int]]):
        self.shapes = [torch.Size(s) for s in shapes]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.offsets = [0]
        for size in self.sizes[:-1]:
            self.offsets.append(self.offsets[-1] + size)
        self.numel = sum(self.sizes)

    def __len__(self) -> int:
        return len(self.shapes)

    def empty(self, *batch: int, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
        """A new uninitialised ``(*batch, P)`` buffer."""
        return torch.empty(*batch, self.numel, dtype=dtype, device=device)

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """The L tensors ``(*batch, *shape_i)`` of a ``(*batch, P)`` buffer: views (no copy, writes
        go through) whenever ``flat``'s last dimension is contiguous, as in every buffer made here.

        Raises:
            ValueError: the last dimension of ``flat`` is not P.
        """
        if flat.dim() < 1 or flat.shape[-1] != self.numel:
            raise ValueError(f"flat vector has {flat.shape[-1] if flat.dim() else 0} entries, the parameters have {self.numel}")
        batch = flat.shape[:-1]
        return [
            flat.narrow(-1, start, size).reshape(*batch, *shape)
            for start, size, shape in zip(self.offsets, self.sizes, self.shapes)
        ]

    def flatten(self, tensors: Sequence[torch.Tensor], batch_dims: int = 0, out: torch.Tensor | None = None) -> torch.Tensor:
        """Write parameter-shaped tensors ``(*batch, *shape_i)`` into one ``(*batch, P)`` buffer.

        One ``torch.cat``: into ``out`` when given (reused across calls, e.g. once per attack
        iteration), else into a new buffer.

        Args:
            tensors: L tensors shaped ``(*batch, *shape_i)``.
            batch_dims: number of leading batch dimensions shared by all tensors.
            out: optional ``(*batch, P)`` contiguous buffer of the tensors' dtype and device.

        Raises:
            ValueError: wrong count or shape of ``tensors``.
        """
        if len(tensors) != len(self.shapes):
            raise ValueError(f"got {len(tensors)} tensors, the layout has {len(self.shapes)}")
        batch = tensors[0].shape[:batch_dims]
        for i, (t, shape) in enumerate(zip(tensors, self.shapes)):
            if t.shape != (*batch, *shape):
                raise ValueError(f"tensors[{i}] has shape {tuple(t.shape)}, expected {(*batch, *shape)}")
        parts = [t.reshape(*batch, -1) for t in tensors]
        return torch.cat(parts, dim=-1) if out is None else torch.cat(parts, dim=-1, out=out)

    def expand_per_tensor(self, values: torch.Tensor) -> torch.Tensor:
        """``(L,)`` one value per tensor → ``(P,)`` each value repeated over its tensor's entries."""
        if values.shape != (len(self.shapes),):
            raise ValueError(f"values must have shape ({len(self.shapes)},), got {tuple(values.shape)}")
        return values.repeat_interleave(torch.tensor(self.sizes, device=values.device), output_size=self.numel)
