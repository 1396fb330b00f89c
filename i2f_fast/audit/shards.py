"""Where an audit keeps its results: one Parquet file per shard, its configuration, the merge.

Layout of an audit's output folder ``out``::

    audit-config.json            the configuration every shard was computed with (JSON)
    shards/part-<key>.parquet    the rows of one shard (a set of sample or batch indices); the
                                 schema metadata carries the configuration's fingerprint
    results.parquet, results.csv the merged table, one row per index, sorted by index

Every file is written atomically (temp file + rename): a killed run leaves whole shards or none,
so a resumed run recomputes exactly the indices that no finished shard holds. A shard's name is a
hash of its index set, so two runs never overwrite each other's different shards. The merge
refuses shards of another configuration, a repeated index and a missing one.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..files import atomic_path, write_json

CONFIG_FILE = "audit-config.json"
SHARD_FOLDER = "shards"
RESULTS_PARQUET = "results.parquet"
RESULTS_CSV = "results.csv"
_FINGERPRINT_KEY = b"i2f_fast.audit.config"

TABLE_SCHEMA = pa.schema([
    ("index", pa.int64()),        # position in the audited data, or batch b (per batch of B: samples B·b …)
    ("label", pa.int64()),        # the sample's label (null for a batch)
    ("rmse", pa.float64()),       # predicted RMSE per element, √(E‖Δ‖²/D), under the defense
    ("stderr", pa.float64()),     # its standard error (0 when exact)
    ("bias_rmse", pa.float64()),  # the defense's deterministic part (clipping bias, pruning, top-k)
    ("noise_rmse", pa.float64()), # its random part (Gaussian noise, quantisation)
    ("lambda_min", pa.float64()), # smallest eigenvalue of the attack's normal matrix (null off the spectral route)
    ("lambda_max", pa.float64()), # largest eigenvalue (spectrum, or Lanczos on JᵀJ off the spectral route)
    ("exact", pa.bool_()),        # no Monte Carlo / Hutchinson estimate entered
    ("method", pa.string()),      # how the noise term was computed: spectral, hutchinson, draws, none
    ("eps", pa.float64()),        # absolute damping of the prediction
])
"""Columns of an audit's table (see :func:`i2f_fast.audit.audit`)."""


class AuditConfigError(ValueError):
    """An output folder already holds an audit of another configuration, or shards of two.

    ``str()`` is ``"out <folder>: <reason>"``; ``folder`` and ``reason`` are kept for the command
    line, which names its flag (``--out``) instead."""

    def __init__(self, folder, reason: str):
        super().__init__(reason if folder is None else f"out {folder}: {reason}")
        self.folder, self.reason = folder, reason

    def __reduce__(self):  # pickled from rank 0 to the other ranks
        return AuditConfigError, (self.folder, self.reason)


def fingerprint(config: dict) -> str:
    """SHA-256 of the configuration's canonical JSON."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def merge_tables(tables: list[pa.Table], units: int, where) -> pa.Table:
    """The rows of ``tables`` sorted by index, checked to hold every index ``0 … units−1`` once.

    Raises:
        AuditConfigError: a repeated or a missing index (``where``: the output folder, or None).
    """
    table = pa.concat_tables(tables).sort_by("index") if tables else TABLE_SCHEMA.empty_table()
    index = table.column("index").to_pylist()
    repeated = sorted({i for i, j in zip(index, index[1:]) if i == j})
    if repeated:
        raise AuditConfigError(where, f"index {repeated[0]} is there more than once ({len(repeated)} repeated)")
    missing = sorted(set(range(units)) - set(index))
    if missing or len(index) != units:
        raise AuditConfigError(where, f"{len(missing)} of {units} indices are missing (first {missing[:5]})")
    return table


class ShardStore:
    """The shards of one audit configuration in ``out`` (see the module docstring).

    Args:
        out: the output folder (created by :meth:`prepare`).
        config: the audit's JSON-ready configuration.
    """

    def __init__(self, out: Path, config: dict):
        self.out = Path(out)
        self.config = config
        self.key = fingerprint(config)
        self.folder = self.out / SHARD_FOLDER

    def prepare(self, resume: bool) -> None:
        """Make the folder ready for this configuration (one process only: rank 0).

        Writes the configuration, or checks the one already there; without ``resume`` the shards of
        an earlier run of the same configuration are discarded (the audit starts over). Stale
        temporary files of a killed run are removed.

        Raises:
            AuditConfigError: ``out`` holds an audit of another configuration (naming what differs).
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.out / CONFIG_FILE
        if path.exists():
            try:
                old = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise AuditConfigError(self.out, f"cannot read {CONFIG_FILE} of an earlier audit: {err}") from err
            if fingerprint(old) != self.key:
                differ = sorted(k for k in set(old) | set(self.config) if old.get(k) != self.config.get(k))
                raise AuditConfigError(
                    self.out, f"holds an audit with another configuration (differs in: {', '.join(differ)}); "
                    "use another output folder or delete it",
                )
        for stale in self.folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        if not resume:
            for shard in self.shard_paths():
                shard.unlink()
            for name in (RESULTS_PARQUET, RESULTS_CSV):
                (self.out / name).unlink(missing_ok=True)
        write_json(path, self.config)

    def shard_paths(self) -> list[Path]:
        return sorted(self.folder.glob("part-*.parquet"))

    def _read(self, path: Path) -> pa.Table:
        table = pq.read_table(path)
        found = (table.schema.metadata or {}).get(_FINGERPRINT_KEY, b"").decode()
        if found != self.key:
            raise AuditConfigError(
                self.out, f"shard {path.name} was computed with another configuration; "
                "refusing to mix shards of two audits (use another output folder or delete it)",
            )
        return table.replace_schema_metadata(None)

    def finished(self) -> list[int]:
        """The indices the finished shards hold (sorted).

        Raises:
            AuditConfigError: a shard of another configuration, or an index held twice.
        """
        tables = [self._read(p).select(["index"]) for p in self.shard_paths()]
        if not tables:
            return []
        index = sorted(pa.concat_tables(tables).column("index").to_pylist())
        repeated = [i for i, j in zip(index, index[1:]) if i == j]
        if repeated:
            raise AuditConfigError(self.out, f"index {repeated[0]} is in two shards; delete the folder and rerun")
        return index

    def write(self, table: pa.Table) -> Path:
        """Write one shard atomically; its name is the hash of its index set."""
        index = table.column("index").to_pylist()
        name = hashlib.sha256(json.dumps(index).encode()).hexdigest()[:20]
        path = self.folder / f"part-{name}.parquet"
        with atomic_path(path) as tmp:
            pq.write_table(table.replace_schema_metadata({_FINGERPRINT_KEY: self.key.encode()}), tmp)
        return path

    def merge(self, units: int) -> pa.Table:
        """Merge every shard, check it holds each index ``0 … units−1`` once, and write
        ``results.parquet`` and ``results.csv`` (atomically). Returns the merged table.

        Raises:
            AuditConfigError: shards of another configuration, a repeated or a missing index.
        """
        table = merge_tables([self._read(p) for p in self.shard_paths()], units, self.out)
        with atomic_path(self.out / RESULTS_PARQUET) as tmp:
            pq.write_table(table, tmp)
        with atomic_path(self.out / RESULTS_CSV) as tmp:
            pacsv.write_csv(table, tmp)
        return table
