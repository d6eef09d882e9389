"""Newton's method for an l1 penalty (proximal Newton, as liblinear's newGLMNET and glmnet).

    F(theta) = f(theta) + lam * sum_j mask_j |theta_j|

with f the smooth objective of logreg_torch.newton (its value, gradient and Hessian come from
``newton.evaluate``: the same autodiff derivatives as the project's Newton solver). |w| has no
second derivative at 0, so the Newton step is not -H^-1 g: each step minimises the quadratic
model of f plus the l1 term exactly, by coordinate descent on the P x P Hessian (dense: P up
to a few thousand), then backtracks along that step until F falls enough (Armijo on the
model's predicted decrease). Exact zeros come out of the coordinate descent's soft threshold.

It stops as the smooth solvers do, on the largest component of the minimum-norm subgradient
of F (the gradient of f where theta_j != 0; max(|g_j| - lam, 0) at 0) <= tol.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from logreg_torch.newton import ARMIJO_C, MAX_HALVINGS, ChunkedObjective, SolveReport, evaluate

# Coordinate-descent sweeps per Newton step, and the move below which a sweep ends them.
MAX_SWEEPS = 1000
SWEEP_TOL = 1e-13
SUPPORT_EVERY = 5


def subgradient(g: Tensor, theta: Tensor, lam: float, mask: Tensor) -> Tensor:
    """The minimum-norm subgradient of F: zero exactly at its minimum."""
    at_zero = (theta == 0) & mask
    shrunk = torch.sign(g) * (g.abs() - lam).clamp_min(0)
    return torch.where(at_zero, shrunk, g + lam * torch.sign(theta) * mask)


def _l1(theta: Tensor, lam: float, mask: Tensor) -> float:
    return lam * float((theta.abs() * mask).sum())


def _on_support(H: np.ndarray, g: np.ndarray, theta: np.ndarray, u: np.ndarray, lam: float,
                mask: np.ndarray) -> np.ndarray | None:
    """The exact minimiser of the quadratic model if coordinate descent has found its support
    and signs (``u``'s): a linear solve on the support, coordinates whose sign flips dropped
    from it, kept only if consistent (every zero coordinate's model gradient within
    [-lam, lam]); else None, and coordinate descent goes on."""
    free = (u != 0) | (mask == 0)
    s = np.sign(u) * mask
    for _ in range(len(u)):
        fixed = ~free  # these go to 0: their move is -theta
        rhs = -(g[free] + lam * s[free] - H[np.ix_(free, fixed)] @ theta[fixed])
        try:  # collinear features: a (near) singular H, inconsistent below, CD goes on
            step = np.linalg.solve(H[np.ix_(free, free)], rhs)
        except np.linalg.LinAlgError:
            return None
        new = np.zeros_like(u)
        new[free] = theta[free] + step
        flipped = free & (mask != 0) & (np.sign(new) != s)
        if not flipped.any():
            break
        free &= ~flipped
    else:
        return None
    c = g + H @ (new - theta)  # the model's gradient at new
    if np.any(np.abs(c[~free]) > lam * (1 + 1e-9)):
        return None
    return new


def _quadratic_l1_step(H: np.ndarray, g: np.ndarray, theta: np.ndarray, lam: float,
                       mask: np.ndarray) -> np.ndarray:
    """argmin over u of g.(u - theta) + 1/2 (u - theta)' H (u - theta) + lam |mask * u|_1,
    by cyclic coordinate descent, which finds the support; every SUPPORT_EVERY sweeps a
    linear solve on that support ends it (ill-conditioned H: thousands of sweeps otherwise).
    Returns u - theta."""
    u = theta.copy()
    r = np.zeros_like(g)  # H (u - theta), kept up to date
    diag = np.maximum(np.diag(H), np.finfo(H.dtype).tiny)
    scale = max(float(np.abs(theta).max(initial=0.0)), 1.0)
    for sweep in range(MAX_SWEEPS):
        biggest = 0.0
        for j in range(len(u)):
            c = g[j] + r[j] - diag[j] * (u[j] - theta[j])  # linear term without j's own part
            z = theta[j] - c / diag[j]
            t = lam * mask[j] / diag[j]
            new = np.sign(z) * max(abs(z) - t, 0.0)
            move = new - u[j]
            if move != 0.0:
                r += move * H[:, j]
                u[j] = new
                biggest = max(biggest, abs(move))
        if biggest <= SWEEP_TOL * scale:
            break
        if sweep % SUPPORT_EVERY == SUPPORT_EVERY - 1:
            exact = _on_support(H, g, theta, u, lam, mask)
            if exact is not None:
                return exact - theta
    return u - theta


def newton_l1(obj: ChunkedObjective, theta: Tensor, lam: float, mask: Tensor, *, tol: float,
              max_iter: int) -> tuple[Tensor, SolveReport]:
    """Minimise ``obj`` + lam * |mask * theta|_1 from ``theta`` (``mask``: True for the
    penalized entries; the intercept is not). Same report as ``newton.newton``."""
    f, g, _ = evaluate(obj, theta, order=1)
    F = float(f) + _l1(theta, lam, mask)
    gmax = float(subgradient(g, theta, lam, mask).abs().max())
    n_iter, reason = 0, "max_iter"
    mask_np = mask.cpu().numpy().astype(np.float64)
    while gmax > tol and n_iter < max_iter:
        H = evaluate(obj, theta, order=2)[2]  # only where a step follows: P backward passes
        step = _quadratic_l1_step(H.double().cpu().numpy(), g.double().cpu().numpy(),
                                  theta.double().cpu().numpy(), lam, mask_np)
        d = torch.from_numpy(step).to(theta)
        # The model's predicted decrease: negative unless theta is already its minimum.
        delta = float(g.dot(d)) + _l1(theta + d, lam, mask) - _l1(theta, lam, mask)
        noise = 8 * torch.finfo(theta.dtype).eps * max(abs(F), 1.0)
        t, accepted = 1.0, None
        for _ in range(MAX_HALVINGS):
            trial = theta + t * d
            F_new = float(evaluate(obj, trial, order=0)[0]) + _l1(trial, lam, mask)
            if F_new <= F + ARMIJO_C * t * delta + noise:
                accepted = trial
                break
            t *= 0.5
        if accepted is None or delta >= 0:
            reason = "stalled"
            break
        theta, F = accepted, F_new
        n_iter += 1
        f, g, _ = evaluate(obj, theta, order=1)
        gmax = float(subgradient(g, theta, lam, mask).abs().max())
    converged = gmax <= tol
    return theta, SolveReport(converged, n_iter, gmax, F, "tol" if converged else reason)
