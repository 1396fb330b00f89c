"""Replaying one loop iteration as a CUDA graph, with an eager fallback (the attack and CG loops).

A loop whose iteration is a fixed sequence of kernels on fixed tensors (updated in place, scalars
kept on the device, no host reads) can be captured once and replayed: one graph launch per
iteration instead of one launch per kernel, and no Python in between. :class:`GraphedStep` runs
``step()`` eagerly on a side stream for the first ``warmup`` calls (as ``torch.cuda.graph``
requires; these are real iterations), the first of them under ``torch.cuda.set_sync_debug_mode
("warn")``, so that a step that reads the host (``.item()``, ``bool(tensor)``, ``nonzero``) is
detected, without interrupting the iteration, before any capture is tried; then it captures
``step`` and replays it. When the probe or
the capture fails, the reason is logged on the ``i2f_fast`` logger and every later call runs
``step()`` eagerly, so the loop's results do not depend on whether capture worked.

Only CUDA tensors take this path: :func:`wanted` is False for every other device, and nothing in
this module touches CUDA unless a caller passed a CUDA device.
"""
from __future__ import annotations

import logging
import warnings
from typing import Callable

import torch

LOGGER = logging.getLogger("i2f_fast")
_HOST_READ_WARNING = "called a synchronizing CUDA operation"
"""What sync-debug mode "warn" says at a host read. Turning the mode on also warns once that it "is a
prototype feature and does not yet detect all synchronizing operations": that notice is no host read
(taking it for one kept the CG loop from being graphed on an H200)."""
MIN_CHECK_EVERY = 10
"""Fewest iterations between host reads of a graphed loop (a read stalls the graph pipeline)."""


def wanted(device: torch.device, requested: bool | None) -> bool:
    """Whether a loop on ``device`` should try graph capture: ``requested`` if given (True on a
    non-CUDA device is a ValueError), else True exactly for CUDA devices."""
    is_cuda = torch.device(device).type == "cuda"
    if requested is None:
        return is_cuda
    if requested and not is_cuda:
        raise ValueError(f"cuda_graph=True needs CUDA tensors, got {torch.device(device)}")
    return bool(requested)


class GraphedStep:
    """Calls ``step()`` once per call: eagerly while warming up, then by replaying a CUDA graph.

    Args:
        step: zero-argument function doing one iteration with in-place device ops only; it must not
            rebind Python state that later calls depend on, and must not read the host.
        name: what the step is, for the log message (e.g. ``"attack iteration"``).
        device: the CUDA device the step runs on.
        warmup: eager iterations before the capture (≥ 1; torch needs a few for cuDNN / cuBLAS
            workspaces and autograd's lazy state).

    Attributes:
        graph: the captured ``torch.cuda.CUDAGraph`` once capture succeeded, else None.
        fallback_reason: why the loop runs eagerly (None while warming up or when graphed).
    """

    def __init__(self, step: Callable[[], None], name: str, device: torch.device, warmup: int = 3):
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1, got {warmup}")
        self.step, self.name, self.device, self.warmup = step, name, torch.device(device), warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self.fallback_reason: str | None = None
        self.calls = 0
        self._stream = torch.cuda.Stream(device=self.device)

    def _eager_on_side_stream(self, probe: bool) -> str | None:
        """One eager step on the side stream; with ``probe``, returns the first host-sync warning."""
        current = torch.cuda.current_stream(self.device)
        self._stream.wait_stream(current)
        sync = None
        with torch.cuda.stream(self._stream):
            if not probe:
                self.step()
            else:
                previous = torch.cuda.get_sync_debug_mode()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    torch.cuda.set_sync_debug_mode("warn")
                    try:
                        self.step()
                    finally:
                        torch.cuda.set_sync_debug_mode(previous)
                sync = next((str(w.message) for w in caught if _HOST_READ_WARNING in str(w.message)), None)
        current.wait_stream(self._stream)
        return sync

    def _fall_back(self, reason: str) -> None:
        self.fallback_reason = reason
        LOGGER.warning("i2f_fast: %s runs eagerly, CUDA graph capture is not possible: %s", self.name, reason)

    def _capture(self) -> bool:
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.step()
        except Exception as err:  # noqa: BLE001 — any capture failure means: run eagerly
            torch.cuda.synchronize(self.device)
            self._fall_back(f"capture failed: {type(err).__name__}: {err}")
            return False
        self.graph = graph
        return True

    def __call__(self) -> None:
        self.calls += 1
        if self.graph is not None:
            self.graph.replay()
        elif self.fallback_reason is not None:
            self.step()
        elif self.calls <= self.warmup:
            sync = self._eager_on_side_stream(probe=self.calls == 1)
            if sync is not None:
                self._fall_back(f"the step reads the host: {sync}")
        elif self._capture():
            self.graph.replay()  # capture records the kernels without running them
        else:
            self.step()
