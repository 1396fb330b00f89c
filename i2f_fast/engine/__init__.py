"""The structured JᵀJ engine (ENGINE.md): fused mixed second-order products per layer.

:class:`StructuredJacobian` computes ``J v``, ``Jᵀ u`` and ``JᵀJ v`` by four sweeps over a
``torch.fx`` trace of the model, with hand-written node rules for the common layers and a
``torch.func`` rule for everything else; ``JᵀJ v`` never forms the parameter-space vector ``J v``.
``InversionJacobian(strategy="engine")`` (the default where it applies) uses it.
"""
from .jacobian import StructuredJacobian
from .trace import EngineUnsupported

__all__ = ["EngineUnsupported", "StructuredJacobian"]
