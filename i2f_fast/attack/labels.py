"""Label inference: the labels of a private batch read off its shared cross-entropy gradient."""
from __future__ import annotations

import torch
import torch.nn as nn

from .. import frontdoor

LABEL_STRATEGIES = ("auto", "idlg", "yin")
"""Label inference rules of :func:`infer_labels` (``auto``: iDLG for one sample, Yin for a batch)."""


def infer_labels(model: nn.Module, target_grads, num_samples: int, strategy: str = "auto") -> torch.Tensor:
    """Labels of a private batch from its cross-entropy gradient, read off the last layer.

    Uses the last trainable 2-D parameter whose rows match the classes (the final Linear weight
    ``W``, ``(K, F)``): its gradient row ``k`` is ``Σ_n (p_nk − y_nk) h_n / N``, negative only for
    labels present when the features ``h`` are non-negative (after a sigmoid or ReLU).

    * ``"idlg"`` (Zhao et al. 2020, one sample): ``argmin_k Σ_f ∂L/∂W_kf``.
    * ``"yin"`` (Yin et al. 2021, a batch, as breaching's ``yin``): the ``N`` classes with the most
      negative ``min_f ∂L/∂W_kf`` (assumes distinct labels).
    * ``"auto"``: ``idlg`` for one sample, ``yin`` otherwise.

    Args:
        model: the classifier; its last 2-D trainable parameter must be the ``(K, F)`` output weight.
        target_grads: flat ``(P,)`` or list of parameter-shaped tensors.
        num_samples: N, the batch size (≤ K for ``yin``).
        strategy: one of :data:`LABEL_STRATEGIES`.

    Returns:
        ``(N,)`` int64 labels (for ``yin``, in order of decreasing evidence).

    Raises:
        ValueError: unknown strategy, no output weight, N > K, or ``idlg`` with N > 1.
    """
    frontdoor.choice(strategy, "strategy", LABEL_STRATEGIES)
    named = frontdoor.model_parameters(model)
    layout = frontdoor.layout_of(named)
    shapes = layout.shapes
    grads = layout.views(frontdoor.parameter_vectors(target_grads, layout, "target_grads"))
    weights = [i for i, s in enumerate(shapes) if len(s) == 2]
    if not weights:
        raise ValueError("label inference needs a final Linear layer (a 2-D weight); pass labels instead")
    last = weights[-1]
    w_grad = grads[last]
    classes = w_grad.shape[0]
    num_samples = frontdoor.positive_int(num_samples, "num_samples")
    if num_samples > classes:
        raise ValueError(f"num_samples={num_samples}: cannot infer more labels than the {classes} classes of the output layer; pass labels")
    if strategy == "auto":
        strategy = "idlg" if num_samples == 1 else "yin"
    if strategy == "idlg":
        if num_samples != 1:
            raise ValueError("the iDLG rule recovers the label of one sample; use strategy='yin' for a batch")
        return w_grad.sum(dim=1).argmin().reshape(1)
    return w_grad.min(dim=1).values.argsort()[:num_samples]
