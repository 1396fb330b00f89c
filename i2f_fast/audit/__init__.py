"""Privacy audit of a dataset: which samples a gradient-inversion attack can reconstruct, under which
defense (:func:`audit`, ``i2f-fast audit``, ``torchrun -m i2f_fast.audit``), from the per-sample
predicted risk of :mod:`~i2f_fast.audit.risk`."""
from .core import AuditResult, audit
from .risk import DEFENSE_KINDS, Defense, Risk, parse_defense, predicted_risk
from .shards import TABLE_SCHEMA, AuditConfigError

__all__ = [
    "AuditConfigError", "AuditResult", "DEFENSE_KINDS", "Defense", "Risk", "TABLE_SCHEMA", "audit", "parse_defense",
    "predicted_risk",
]
