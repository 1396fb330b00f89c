"""The privacy audit of a whole dataset: every sample's predicted reconstruction risk under a defense.

:func:`audit` runs :func:`~i2f_fast.audit.risk.predicted_risk` over a dataset in chunks, one row per
sample (the paper's setting: each sample's gradient is shared on its own) or per batch of B
consecutive samples, and returns a :class:`pyarrow.Table`. With ``out`` every chunk is a shard on
disk (:mod:`~i2f_fast.audit.shards`): an interrupted audit resumes where it stopped.

**torch.distributed.** When a process group is initialised (``torchrun``, see ``python -m
i2f_fast.audit``), the work is split by a strided split without padding at the granularity of a
chunk: chunk c (indices ``c·S … c·S+S−1`` with S the chunk size, less those finished shards already
hold) goes to rank ``c mod W``. Each rank writes its own shards and, after a barrier, rank 0 merges
them; every rank returns the merged table. The same call without a process group runs in one
process and gives the same table, bit for bit: a chunk's samples share batched products whose
rounding depends on a sample's position in the batch, so the chunks, not single samples, are what
the ranks split (a sample-level stride changed the last bits of λ). A resumed run recomputes the
missing chunks whole, so it gives the same table too. The estimates (Hutchinson probes,
quantisation draws) are computed one sample (or batch) at a time, seeded by its index.

**λ_min / λ_max.** On the spectral route (systems of at most ``SPECTRAL_MAX_DIM`` elements whose
dense matrices fit in memory) they are the extreme eigenvalues of the attack's normal matrix
(``JᵀJ`` for the L2 attack, ``JᵀΠJ`` for the cosine attack), from the same cached spectrum that
gives the exact expectation. Off it, ``lambda_max`` is ``λ_max(JᵀJ)`` by Lanczos (for the cosine
attack an upper bound of its projected matrix's) and ``lambda_min`` is null: the smallest
eigenvalue of a large system is not computed.
"""
from __future__ import annotations

import hashlib
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import torch
import torch.nn as nn

from .. import frontdoor
from ..data import ImageBatch
from ..files import tensor_digest
from ..influence import SPECTRAL_MAX_DIM, InversionInfluence, damping_arguments
from ..linearised_attack import OBJECTIVES
from ..solvers import available_memory, dense_spectrum_bytes
from .risk import parse_defense, predicted_risk
from .shards import TABLE_SCHEMA, ShardStore, merge_tables

DEFAULT_CHUNK_SIZE = 8
"""Samples per chunk (and shard) of the per-sample audit when memory allows. Assembling LeNet spectra of
28×28 digits, float64, 1 thread on 2 busy cores, per sample: 2.6–3.2 s in chunks of 2 or 4, 3.0–3.4 s
of 8, 3.2–3.6 s of 16, 3.9 s of 32 (larger batched products leave the caches); 8 keeps the shards
few (225 for the 1,797 digits)."""


@dataclass
class AuditResult:
    """Result of :func:`audit`.

    Attributes:
        table: one row per sample (or per batch), sorted by index, with the columns of
            :data:`~i2f_fast.audit.shards.TABLE_SCHEMA`: index, label, rmse, stderr, bias_rmse,
            noise_rmse, lambda_min, lambda_max, exact, method, eps.
        config: the JSON-ready configuration (model and dataset fingerprints, defense spec,
            objective, mode, damping, seed) the rows were computed with.
        seconds: wall time of this call (resumed shards cost nothing).
        computed: rows this call computed, on every rank together (the others came from finished shards).
        out: the output folder, or None.
    """

    table: pa.Table
    config: dict
    seconds: float
    computed: int
    out: Path | None


@dataclass
class Samples:
    """A dataset as tensors: images ``(N, *S)`` in the model's dtype and labels ``(N,)`` int64."""

    x: torch.Tensor
    y: torch.Tensor
    name: str


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of a model's class, parameter and buffer names, shapes, dtypes and values."""
    digest = hashlib.sha256(type(model).__qualname__.encode())
    for name, t in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor_digest(t).encode())
    return digest.hexdigest()


def as_samples(dataset, model: nn.Module, dtype: torch.dtype) -> Samples:
    """An :class:`ImageBatch` or a ``torch.utils.data.Dataset`` of ``(image, label)`` pairs as tensors,
    checked against the model (its input shape and its number of outputs).

    Raises:
        TypeError / ValueError naming ``dataset``: not a dataset, empty, items that are not
        ``(image, label)`` pairs or of different shapes, samples that do not fit the model, labels
        outside its outputs.
    """
    if isinstance(dataset, ImageBatch):
        x, y, name = dataset.images, dataset.labels, dataset.name
    else:
        if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
            raise TypeError(
                f"dataset must be an i2f_fast.data.ImageBatch or a torch Dataset of (image, label) pairs, "
                f"got {type(dataset).__name__}"
            )
        images, labels = [], []
        for i in range(len(dataset)):
            item = dataset[i]
            if not (isinstance(item, (tuple, list)) and len(item) >= 2):
                raise ValueError(f"dataset[{i}] must be an (image, label) pair, got {type(item).__name__}")
            image = item[0] if isinstance(item[0], torch.Tensor) else torch.as_tensor(item[0])
            if images and image.shape != images[0].shape:
                raise ValueError(f"dataset[{i}] has shape {tuple(image.shape)}, dataset[0] {tuple(images[0].shape)}")
            images.append(image)
            labels.append(int(item[1]))
        if not images:
            raise ValueError("dataset is empty")
        x, y, name = torch.stack(images), torch.tensor(labels, dtype=torch.int64), type(dataset).__name__
    x = frontdoor.float_tensor(x.to(dtype) if x.is_floating_point() else x, "dataset images", min_dims=2)
    classes = frontdoor.output_classes(model, x.to(next(model.parameters()).device), "dataset samples")
    y = frontdoor.labels(y, "dataset labels", x.shape[0], classes)
    return Samples(x, y, name)


def _world() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised process group, else ``(0, 1)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _from_rank0(make, world: int):
    """``make()`` on rank 0, its result (or its exception) on every rank."""
    if world == 1:
        return make()
    box = [None]
    if torch.distributed.get_rank() == 0:
        try:
            box = [("ok", make())]
        except Exception as err:  # noqa: BLE001 — re-raised on every rank below
            box = [("error", err)]
    torch.distributed.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise value
    return value


def _unit_generator(seed: int, index: int, device: torch.device) -> torch.Generator:
    """The random stream of one sample (or batch): the same on every rank and in every chunk."""
    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + index) % 2**63)


def audit(
    model: nn.Module,
    dataset,
    defense="gaussian:1e-4",
    *,
    objective: str = "l2",
    per_sample: bool = True,
    batch_size: int | None = None,
    out=None,
    resume: bool = False,
    chunk_size: int | None = None,
    eps: float | None = None,
    eps_rel: float | None = None,
    seed: int = 0,
    progress: bool = True,
) -> AuditResult:
    """Predicted reconstruction risk of every sample (or batch) of ``dataset`` under ``defense``.

    For each sample: the predicted RMSE per element of the attack's reconstruction, its expectation
    over the defense's randomness (:func:`~i2f_fast.audit.risk.predicted_risk`: exact on the float64
    spectral route where the dimension allows, else an estimate with its standard error), λ_min and
    λ_max of the attack's normal matrix (module docstring), the label and the index.

    Args:
        model: the attacked model, used as given (``eval()`` mode for BatchNorm / Dropout); never modified.
        dataset: an :class:`~i2f_fast.data.ImageBatch` or any ``torch.utils.data.Dataset`` of
            ``(image, label)`` pairs (images ``(C, H, W)`` in the model's input space, labels ints).
        defense: a spec string (``none``, ``gaussian:VAR``, ``dp:clip=C,noise=Z[,batch=B]``,
            ``prune:R``, ``topk:R``, ``quantize:BITS``) or a :class:`~i2f_fast.audit.risk.Defense`.
        objective: the attack's objective, ``"l2"`` (DLG) or ``"cosine"`` (GS).
        per_sample: one row per sample (the paper's setting); False: one row per batch of
            ``batch_size`` consecutive samples (batch ``b`` holds samples ``b·B … b·B+B−1``; the
            last one may be smaller, as Opacus's Poisson batches vary; a ``dp`` defense divides
            its noise by its own ``batch``, which must equal ``batch_size``).
        batch_size: B, only with ``per_sample=False``.
        out: output folder for the shards and the merged ``results.parquet`` / ``results.csv``;
            None keeps everything in memory.
        resume: keep the finished shards in ``out`` and compute only the rest (else ``out`` starts over).
        chunk_size: samples (or batches) per chunk and shard; default :data:`DEFAULT_CHUNK_SIZE`
            samples where their dense spectra fit in memory, 1 batch per batch.
        eps, eps_rel: damping, as :meth:`InversionInfluence.i2f` (default ``1e-8·λ_max``).
        seed: seeds the estimates (Hutchinson probes, quantisation draws), per sample.
        progress: a progress bar (samples/s, ETA) on stderr, on rank 0.

    Returns:
        :class:`AuditResult`.

    Raises:
        TypeError / ValueError naming the argument (an unknown defense spec, samples that do not fit
        the model, ``resume`` without ``out``, ...); :class:`~i2f_fast.audit.shards.AuditConfigError`
        (a ValueError) when ``out`` holds an audit of another configuration.
    """
    start_time = time.perf_counter()
    named = frontdoor.model_parameters(model)
    dtype, device = named[0][1].dtype, named[0][1].device
    defense = parse_defense(defense, "defense")
    objective = frontdoor.choice(objective, "objective", OBJECTIVES)
    per_sample = frontdoor.boolean(per_sample, "per_sample")
    resume = frontdoor.boolean(resume, "resume")
    progress = frontdoor.boolean(progress, "progress")
    seed = frontdoor.integer(seed, "seed")
    eps, eps_rel = damping_arguments(eps, eps_rel)
    if per_sample and batch_size is not None:
        raise ValueError("batch_size is for per_sample=False (one row per batch); per_sample=True audits each sample alone")
    if not per_sample:
        if batch_size is None:
            raise ValueError("batch_size is required with per_sample=False (the batch the attacker inverts)")
        batch_size = frontdoor.positive_int(batch_size, "batch_size")
        if defense.kind == "dp" and defense.batch != batch_size:
            raise ValueError(
                f"defense {defense.spec!r}: dp's batch={defense.batch} must equal batch_size={batch_size} "
                "(Opacus divides the noise by the batch size)"
            )
    if chunk_size is not None:
        chunk_size = frontdoor.positive_int(chunk_size, "chunk_size")
    if out is not None and not isinstance(out, (str, Path)):
        raise TypeError(f"out must be a folder path or None, got {type(out).__name__}")
    if resume and out is None:
        raise ValueError("resume needs out (the folder with the finished shards)")
    samples = as_samples(dataset, model, dtype)
    N = samples.x.shape[0]
    units = N if per_sample else math.ceil(N / batch_size)
    config = dict(
        model=dict(cls=type(model).__qualname__, fingerprint=model_fingerprint(model),
                   num_params=sum(p.numel() for _, p in named), dtype=str(dtype).removeprefix("torch.")),
        dataset=dict(name=samples.name, size=N, input_shape=list(samples.x.shape[1:]),
                     fingerprint=tensor_digest(samples.x, samples.y)),
        defense=defense.spec,
        objective=objective,
        mode="per_sample" if per_sample else "batch",
        batch_size=batch_size,
        eps=eps,
        eps_rel=eps_rel,
        seed=seed,
    )
    rank, world = _world()
    store = ShardStore(Path(out), config) if out is not None else None

    def prepare() -> list[int]:
        if store is None:
            return []
        store.prepare(resume)
        return store.finished()

    finished = set(_from_rank0(prepare, world))
    D = math.prod(samples.x.shape[1:]) * (1 if per_sample else batch_size)
    per_system = dense_spectrum_bytes(D, 1, torch.float64)
    spectral = D <= SPECTRAL_MAX_DIM and per_system <= available_memory(device) // 2
    together = per_sample and spectral and defense.kind != "quantize"  # exact rows: one batched spectrum per chunk
    if chunk_size is None:
        fits = available_memory(device) // 2 // per_system if together else DEFAULT_CHUNK_SIZE
        chunk_size = max(1, min(DEFAULT_CHUNK_SIZE, fits))
    # Block-cyclic split: chunk c (indices c·S … c·S+S−1, less the finished ones) goes to rank c mod W.
    chunks = [[i for i in range(c, min(c + chunk_size, units)) if i not in finished] for c in range(0, units, chunk_size)]
    mine = [chunk for chunk in chunks if chunk][rank::world]

    from tqdm.auto import tqdm

    bar = tqdm(total=sum(map(len, mine)), desc=f"audit (rank {rank}/{world})" if world > 1 else "audit",
               unit="sample" if per_sample else "batch", file=sys.stderr, disable=not progress or rank != 0)
    computed = []
    for indices in mine:
        table = _chunk_rows(model, samples, indices, defense, objective, per_sample, batch_size, eps, eps_rel,
                            seed, spectral, together, device, dtype)
        if store is not None:
            store.write(table)
        computed.append(table)
        bar.update(len(indices))
    bar.close()

    if store is not None:
        if world > 1:
            torch.distributed.barrier()
        table = _from_rank0(lambda: store.merge(units), world)
    else:
        gathered = [computed]
        if world > 1:
            gathered = [None] * world
            torch.distributed.all_gather_object(gathered, computed)
        table = merge_tables([t for part in gathered for t in part], units, None)
    counts = [sum(t.num_rows for t in computed)]
    if world > 1:
        counts = [None] * world
        torch.distributed.all_gather_object(counts, sum(t.num_rows for t in computed))
    return AuditResult(table, config, time.perf_counter() - start_time, sum(counts), Path(out) if out is not None else None)


def _chunk_rows(model, samples: Samples, indices: list[int], defense, objective, per_sample, batch_size, eps, eps_rel,
                seed, spectral, together, device, dtype) -> pa.Table:
    """The table rows of ``indices`` (samples per-sample, else batches): the samples of an exact
    per-sample chunk together (one batched spectrum), every other row alone with its own seed."""
    solve = dict(objective=objective, eps=eps, eps_rel=eps_rel)
    if together:
        rows = torch.tensor(indices)
        groups = [(samples.x[rows], samples.y[rows], indices)]
    elif per_sample:
        groups = [(samples.x[i : i + 1], samples.y[i : i + 1], [i]) for i in indices]
    else:
        groups = []
        for b in indices:
            span = slice(b * batch_size, (b + 1) * batch_size)
            groups.append((samples.x[span], samples.y[span], [b]))
    columns = {name: [] for name in TABLE_SCHEMA.names}
    for x, y, group in groups:
        gen = _unit_generator(seed, group[0], device)
        influence = InversionInfluence(model, x.to(device=device, dtype=dtype), y.to(device), per_sample=per_sample,
                                       generator=gen)
        n = len(group)
        if spectral:
            lam = influence.spectrum(objective=objective).eigenvalues  # (n, D) ascending, cached for the risk
            lam_min, lam_max = lam[:, 0].tolist(), lam[:, -1].tolist()
        else:
            lam_min, lam_max = [None] * n, influence.max_eigenvalue().reshape(n).tolist()
        risk = predicted_risk(influence, defense, generator=gen, **solve)
        columns["index"] += group
        columns["label"] += y.tolist() if per_sample else [None]
        for name in ("rmse", "stderr", "bias_rmse", "noise_rmse", "eps"):
            columns[name] += getattr(risk, name).tolist()
        columns["lambda_min"] += lam_min
        columns["lambda_max"] += lam_max
        columns["exact"] += [risk.exact] * n
        columns["method"] += [risk.method] * n
    return pa.table(columns, schema=TABLE_SCHEMA)
