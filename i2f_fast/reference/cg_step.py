"""Reference kernel of ``i2f_fast::cg_step``: one conjugate-gradient iteration for B rows at once.

Plain torch ops, float32 or float64, no host synchronisation (masks instead of branches), so the
iteration can be captured in a CUDA graph.
"""
import torch


def cg_step_ref(x, r, p, Ap, rr, active):
    """Advance B independent CG systems by one iteration.

    Args:
        x, r, p: ``(B, D)`` iterate, residual and search direction; updated **in place** on the
            rows that take a step.
        Ap: ``(B, D)`` the operator applied to ``p``.
        rr: ``(B,)`` current ``r·r`` per row.
        active: ``(B,)`` bool, rows that should take a step.

    Per active row: ``pAp = p·Ap``; if ``pAp <= 0`` or non-finite the row is frozen (breakdown);
    otherwise ``α = rr/pAp``, ``x += αp``, ``r -= αAp``, ``rr_new = r·r``, ``β = rr_new/rr``,
    ``p = r + βp``. Frozen and inactive rows are left untouched (``rr_new = rr``).

    Returns:
        ``(rr_new, active_new)``: ``(B,)`` new residual norms squared and the mask of rows that
        took a step (``active & ~breakdown``).
    """
    pAp = (p * Ap).sum(dim=1)
    step = active & torch.isfinite(pAp) & (pAp > 0)
    alpha = torch.where(step, rr / torch.where(step, pAp, 1), 0).unsqueeze(1)
    rows = step.unsqueeze(1)
    x.copy_(torch.where(rows, x + alpha * p, x))
    r_new = torch.where(rows, r - alpha * Ap, r)
    rr_new = torch.where(step, (r_new * r_new).sum(dim=1), rr)
    beta = torch.where(step & (rr > 0), rr_new / torch.where(rr > 0, rr, 1), 0).unsqueeze(1)
    p.copy_(torch.where(rows, r_new + beta * p, p))
    r.copy_(r_new)
    return rr_new, step
