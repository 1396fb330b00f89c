"""Files the library writes: strict JSON and PNG figures, every one atomically (temp file + rename,
:func:`atomic_path`), so a reader never sees a half-written file."""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path

import torch


def _finite(obj):
    """Replace inf / NaN floats (e.g. the PSNR of a perfect reconstruction) by None, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path`` (one
    ``os.replace``), on failure removed: a reader never sees a half-written file, even when the
    job is killed mid-write (the old file, if any, stays until the rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; the file gets a normal file's permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: dict) -> None:
    """Strict JSON (non-finite numbers written as null), written atomically (:func:`atomic_path`)."""
    text = json.dumps(_finite(obj), indent=2, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_figure(fig, path: Path, dpi: int) -> None:
    """``fig`` as a PNG at ``path``, written atomically (:func:`atomic_path`), then closed."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    pyplot().close(fig)


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def tensor_digest(*tensors: torch.Tensor) -> str:
    """SHA-256 (hex) of the tensors' dtypes, shapes and values: the key under which a result computed
    from them is stored, so a changed input is never served a stale file."""
    digest = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()
