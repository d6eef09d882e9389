"""Newton's method with a backtracking line search, the Hessian by automatic differentiation.

For a convex model (logistic regression) on a full batch. The objective is

    f(theta) = sum over rows of loss_sum(model(X; theta), y, weight) / n_total + penalty(theta)

accumulated chunk by chunk, so the same code serves data in memory (one chunk), data streamed
from disk (many chunks) and torchrun (each rank its own chunks; the data parts of the value,
gradient and Hessian are all-reduced, the penalty added once). Nothing here knows the loss
formula: the derivatives come from torch.autograd / torch.func.

The reference Hessian is reverse-over-reverse autodiff: ``d(grad)/d(theta)`` by one backward
batched over the basis vectors (``is_grads_batched``), through our loss's own differentiable
backward. For the logistic model ``ChunkedObjective.linear`` supplies the same terms factored,
``[X 1]^T diag(l'') [X 1]`` by one matrix product per block of rows with l'' by autodiff in z
(logreg_torch.linear_terms; tests hold it to this reference). (A factored ``J^T diag(h) J``
with J by ``torch.func.jacfwd`` was no faster than the reference: 1.8 s vs 1.4 s per
evaluation on 200k x 100 float64; J = [X 1] itself needs no autodiff.)
With more than ``CG_MIN_PARAMS`` parameters no P x P matrix is formed: the Newton system is
solved by conjugate gradients on Hessian-vector products (truncated Newton).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from logreg_torch.linear_terms import LinearTerms

__all__ = ["CG_MIN_PARAMS", "ChunkedObjective", "Iterate", "SolveReport", "evaluate", "newton",
           "newton_seeded"]

# Above this many parameters the dense Hessian (P^2 memory, P^3 Cholesky) gives way to
# Hessian-vector products and conjugate gradients.
CG_MIN_PARAMS = 2000
# Rows x parameters per block when a chunk's batched backward runs: bounds the memory of the
# dense-Hessian path (4M elements = 32 MB in float64).
BLOCK_ELEMENTS = 1 << 22
ARMIJO_C = 1e-4  # sufficient-decrease constant of the line search
MAX_HALVINGS = 40

Chunk = tuple[Tensor, Tensor, Tensor | None]  # features, targets, per-row weight (or None)


@dataclass
class ChunkedObjective:
    """What Newton minimises. ``loss_sum(logits, targets, weight)`` is the summed data loss of
    one chunk; ``penalty(params)`` takes the named parameters; ``reduce`` sums a tensor over
    ranks in place (torch.distributed.all_reduce) or is None in one process."""

    model: nn.Module
    loss_sum: Callable[[Tensor, Tensor, Tensor | None], Tensor]
    penalty: Callable[[dict[str, Tensor]], Tensor | float]
    chunks: Callable[[], Iterable[Chunk]]
    n_total: int
    reduce: Callable[[Tensor], object] | None = None
    # For a linear model: the same data term by its factored derivatives (X^T diag(h) X by
    # blocks, logreg_torch.linear_terms), used instead of the autodiff Hessian
    linear: LinearTerms | None = None
    # The penalty's Hessian where it is diagonal and known (l1/l2 on the weights), as the
    # P-vector of its diagonal from the named parameters; None: by autodiff, P backward calls
    penalty_hessian: Callable[[dict[str, Tensor]], Tensor] | None = None


@dataclass
class SolveReport:
    """How a solve ended: ``reason`` is "tol" (max|grad| <= tol), "max_iter" or "stalled" (no
    step lowered the objective or the gradient: the floating-point floor)."""

    converged: bool
    n_iter: int
    grad_max: float
    loss: float
    reason: str


@dataclass
class Iterate:
    """One point of the descent, for a loss curve: iteration (0 = the start), objective,
    max|grad|."""

    iteration: int
    loss: float
    grad_max: float


def flat_params(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _named(model: nn.Module, theta: Tensor) -> dict[str, Tensor]:
    out, start = {}, 0
    for name, p in model.named_parameters():
        out[name] = theta[start:start + p.numel()].view_as(p)
        start += p.numel()
    return out


def load_flat(model: nn.Module, theta: Tensor) -> None:
    """Copy a flat parameter vector into the model (in its dtype)."""
    with torch.no_grad():
        for p, v in zip(model.parameters(), _named(model, theta).values(), strict=True):
            p.copy_(v)


def _blocks(obj: ChunkedObjective, n_params: int) -> Iterable[Chunk]:
    rows = max(1, BLOCK_ELEMENTS // n_params)
    for X, y, w in obj.chunks():
        for s in range(0, len(X), rows):
            yield X[s:s + rows], y[s:s + rows], None if w is None else w[s:s + rows]


def _logits(obj: ChunkedObjective, theta: Tensor, X: Tensor) -> Tensor:
    return functional_call(obj.model, _named(obj.model, theta), (X,))


def _block_terms(obj: ChunkedObjective, theta: Tensor, block: Chunk,
                 order: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(value, gradient, Hessian) of one block's share of the data term, up to ``order``."""
    X, y, w = block
    if order == 0:
        with torch.no_grad():
            return obj.loss_sum(_logits(obj, theta, X), y, w) / obj.n_total, None, None
    theta = theta.detach().requires_grad_()
    z = _logits(obj, theta, X)
    value = obj.loss_sum(z, y, w) / obj.n_total
    if order == 1:
        return value.detach(), torch.autograd.grad(value, theta)[0], None
    g, = torch.autograd.grad(value, theta, create_graph=True)
    eye = torch.eye(len(theta), dtype=theta.dtype, device=theta.device)
    H, = torch.autograd.grad(g, theta, eye, is_grads_batched=True)
    return value.detach(), g.detach(), H


def evaluate(obj: ChunkedObjective, theta: Tensor,
             order: int = 2) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Objective value, gradient (order >= 1) and Hessian (order 2) at ``theta``, all
    reduced over ranks; the value is float64."""
    if obj.linear is not None:
        value, grad, hess = obj.linear(theta, order)
    else:
        value, grad, hess = _autodiff_terms(obj, theta, order)
    if obj.reduce is not None:
        obj.reduce(value)
        for t in (grad, hess):
            if t is not None:
                obj.reduce(t)
    pv, pg, pH = _penalty_terms(obj, theta, order)
    value += pv
    return (value, None if grad is None else grad + pg,
            None if hess is None else hess + pH)


def _autodiff_terms(obj: ChunkedObjective, theta: Tensor,
                    order: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """This process's data term by reverse-over-reverse autodiff, block by block: the
    reference for any model."""
    P = len(theta)
    value = torch.zeros((), dtype=torch.float64, device=theta.device)
    grad = torch.zeros_like(theta) if order >= 1 else None
    hess = theta.new_zeros(P, P) if order == 2 else None
    for block in _blocks(obj, P if order == 2 else 1):
        v, g, H = _block_terms(obj, theta, block, order)
        value += v.double()
        if grad is not None:
            grad += g
        if hess is not None:
            hess += H
    return value, grad, hess


def _penalty_terms(obj: ChunkedObjective, theta: Tensor, order: int):
    """The penalty's value, gradient and Hessian: its closed-form Hessian where the objective
    has one (``penalty_hessian``), else by autodiff on the P-vector alone, one backward per
    column from a scalar (a batched backward, or torch.autograd.functional / torch.func, passes
    gradient tensors, and the first call that does imports torch's symbolic-shapes module:
    sympy, 0.7 s, most of a float64 finish). The P calls cost ~5 ms at P = 101, ~1 s at 1001."""
    closed = order == 2 and obj.penalty_hessian is not None
    value, grad, hess = _penalty_autodiff(obj, theta, 1 if closed else order)
    if closed:
        hess = torch.diag(obj.penalty_hessian(_named(obj.model, theta.detach())).to(theta))
    return value, grad, hess


def _penalty_autodiff(obj: ChunkedObjective, theta: Tensor, order: int):
    t = theta.detach().requires_grad_(order >= 1)
    with torch.enable_grad():
        value = _penalty_value(obj, t)
        if order == 0 or not value.requires_grad:
            grad = torch.zeros_like(theta) if order >= 1 else None
            hess = theta.new_zeros(len(theta), len(theta)) if order == 2 else None
            return value.detach().double(), grad, hess
        grad, = torch.autograd.grad(value, t, create_graph=order == 2)
        hess = None
        if order == 2:
            hess = theta.new_zeros(len(theta), len(theta))
            for i in range(len(theta)) if grad.requires_grad else ():
                column, = torch.autograd.grad(grad[i], t, retain_graph=True, allow_unused=True)
                if column is not None:
                    hess[i] = column
    return value.detach().double(), grad.detach(), hess


def _penalty_value(obj: ChunkedObjective, t: Tensor) -> Tensor:
    out = obj.penalty(_named(obj.model, t))
    return out if isinstance(out, Tensor) else t.new_tensor(float(out))


def hvp(obj: ChunkedObjective, theta: Tensor, v: Tensor) -> Tensor:
    """Hessian times ``v`` (reverse-over-reverse autodiff, or the factored linear terms),
    chunk by chunk, reduced."""
    out = torch.zeros_like(theta) if obj.linear is None else obj.linear.hvp(theta, v)
    for X, y, w in _blocks(obj, 1) if obj.linear is None else ():
        t = theta.detach().requires_grad_()
        value = obj.loss_sum(_logits(obj, t, X), y, w) / obj.n_total
        g, = torch.autograd.grad(value, t, create_graph=True)
        out += torch.autograd.grad(g, t, v)[0]
    if obj.reduce is not None:
        obj.reduce(out)

    if obj.penalty_hessian is not None:
        return out + obj.penalty_hessian(_named(obj.model, theta.detach())).to(theta) * v
    # The penalty's part: the gradient of (its gradient . v), a scalar (see _penalty_terms)
    t = theta.detach().requires_grad_()
    with torch.enable_grad():
        value = _penalty_value(obj, t)
        if not value.requires_grad:
            return out
        grad, = torch.autograd.grad(value, t, create_graph=True)
        if not grad.requires_grad:
            return out
        hv, = torch.autograd.grad(grad.dot(v), t, allow_unused=True)
    return out if hv is None else out + hv


def _solve_dense(H: Tensor, g: Tensor) -> Tensor:
    """-H^-1 g by Cholesky; a singular or indefinite H (perfect separation, a constant
    column) gets the least-squares step of its positive part instead."""
    L, info = torch.linalg.cholesky_ex(H)
    if int(info) == 0:
        return -torch.cholesky_solve(g.unsqueeze(1), L).squeeze(1)
    evals, evecs = torch.linalg.eigh(H)
    keep = evals > evals.abs().max() * torch.finfo(H.dtype).eps * len(H)
    coords = (evecs.t() @ g)[keep] / evals[keep]
    return -(evecs[:, keep] @ coords)


def _solve_cg(obj: ChunkedObjective, theta: Tensor, g: Tensor, max_steps: int = 250) -> Tensor:
    """Approximately solve H p = -g by conjugate gradients, to a relative residual of
    min(0.5, sqrt(|g|)) (Eisenstat-Walker forcing: superlinear near the optimum)."""
    gnorm = float(torch.linalg.vector_norm(g))
    target = min(0.5, gnorm ** 0.5) * gnorm
    p = torch.zeros_like(g)
    r = -g.clone()
    d = r.clone()
    rr = r.dot(r)
    for _ in range(max_steps):
        Hd = hvp(obj, theta, d)
        curvature = d.dot(Hd)
        if curvature <= 0:  # flat direction: stop with what we have (or steepest descent)
            return p if p.abs().max() > 0 else -g
        alpha = rr / curvature
        p += alpha * d
        r -= alpha * Hd
        rr_new = r.dot(r)
        if float(rr_new) ** 0.5 <= target:
            break
        d = r + (rr_new / rr) * d
        rr = rr_new
    return p


def _line_search(obj: ChunkedObjective, theta: Tensor, f: Tensor, g: Tensor, p: Tensor,
                 order: int) -> tuple[float, tuple | None]:
    """Backtracking from step 1 until the Armijo condition holds. Differences below the
    rounding error of f count as no increase, so that steps near the optimum are not refused
    for noise. Returns (step, ``evaluate``'s terms there up to ``order``) or (0, None)."""
    slope = float(g.dot(p))
    if slope >= 0:  # not a descent direction (H lost positive definiteness in rounding)
        p, slope = -g, -float(g.dot(g))
    noise = 8 * torch.finfo(theta.dtype).eps * max(abs(float(f)), 1.0)
    t = 1.0
    for _ in range(MAX_HALVINGS):
        terms = evaluate(obj, theta + t * p, order=order)
        if float(terms[0]) <= float(f) + ARMIJO_C * t * slope + noise:
            return t, terms
        t *= 0.5
    return 0.0, None


def newton(obj: ChunkedObjective, theta: Tensor, *, tol: float, max_iter: int,
           on_iter: Callable[[Iterate], None] | None = None) -> tuple[Tensor, SolveReport]:
    """Minimise ``obj`` from ``theta`` until max|grad| <= tol or ``max_iter`` Newton steps.

    Every step: gradient and Hessian (or CG on Hessian-vector products), direction
    -H^-1 g, Armijo backtracking from step 1. Two steps in a row that lower neither the
    objective nor max|grad| end the solve as "stalled" (the floating-point floor).

    With the factored linear terms every point is evaluated once, value, gradient and Hessian
    together (one pass over the rows; the Hessian is one block product more), so a step costs
    one pass. The autodiff reference computes the Hessian (P backward passes) only where a
    step follows, and the gradient after the line search."""
    dense = len(theta) <= CG_MIN_PARAMS
    order = 2 if obj.linear is not None and dense else 1
    # A sampled system (the float64 finish, next to the optimum) is formed once and kept while
    # each step at least halves max|grad|: the passes after the first need no system.
    keep = obj.linear is not None and obj.linear.hessian_stride > 1
    f, g, H = evaluate(obj, theta, order=order)
    gmax = float(g.abs().max())
    if on_iter is not None:
        on_iter(Iterate(0, float(f), gmax))
    n_iter, flat_steps = 0, 0
    while gmax > tol and n_iter < max_iter and flat_steps < 2:
        if dense:
            p = _solve_dense(H if H is not None else evaluate(obj, theta, order=2)[2], g)
        else:
            p = _solve_cg(obj, theta, g)
        trial = (1 if keep else order) if obj.linear is not None else 0
        t, terms = _line_search(obj, theta, f, g, p, trial)
        if terms is None:
            flat_steps = 2
            break
        theta = theta + t * p
        n_iter += 1
        f_old, g_old = float(f), gmax
        H_old = H
        f, g, H = terms if terms[1] is not None else evaluate(obj, theta, order=1)
        gmax = float(g.abs().max())
        if keep and H is None and gmax <= 0.5 * g_old:
            H = H_old
        flat_steps = flat_steps + 1 if float(f) >= f_old and gmax >= g_old else 0
        if on_iter is not None:
            on_iter(Iterate(n_iter, float(f), gmax))
    converged = gmax <= tol
    reason = "tol" if converged else ("stalled" if flat_steps >= 2 else "max_iter")
    return theta, SolveReport(converged, n_iter, gmax, float(f), reason)


def newton_seeded(obj: ChunkedObjective, theta: Tensor, g: Tensor, *, tol: float,
                  max_iter: int, on_iter: Callable[[Iterate], None] | None = None,
                  ) -> tuple[Tensor, SolveReport]:
    """``newton`` from ``theta`` whose gradient ``g`` is already known well enough to step on
    (the float32 solve's at its stall: off by ~1e-9 where its value is too noisy to go on),
    with a linear model's sampled system (every row's where they are few): one step -H^-1 g
    from the sampled rows alone, then one pass for value and gradient at the new point.
    Converged there (max|grad|, recomputed, <= tol), that is the answer: one pass over the
    rows instead of ``newton``'s two. Else ``newton`` goes on from the point with the smaller
    max|grad|."""
    linear = obj.linear
    if max_iter < 1 or linear is None or len(theta) > CG_MIN_PARAMS:
        return newton(obj, theta, tol=tol, max_iter=max_iter, on_iter=on_iter)
    H = linear.sampled_hessian(theta)
    if obj.reduce is not None:
        obj.reduce(H)
    step = theta + _solve_dense(H + _penalty_terms(obj, theta, 2)[2], g)
    f, g1, _ = evaluate(obj, step, order=1)
    gmax = float(g1.abs().max())
    better = gmax < float(g.abs().max())
    if (better or gmax <= tol) and on_iter is not None:
        on_iter(Iterate(1, float(f), gmax))
    if gmax <= tol:
        return step, SolveReport(True, 1, gmax, float(f), "tol")

    def renumbered(point: Iterate) -> None:
        if on_iter is not None and point.iteration > 0:
            on_iter(dataclasses.replace(point, iteration=point.iteration + 1))

    theta, report = newton(obj, step if better else theta, tol=tol, max_iter=max_iter - 1,
                           on_iter=renumbered)
    return theta, dataclasses.replace(report, n_iter=report.n_iter + 1)
