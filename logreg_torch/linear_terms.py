"""Newton's terms for a linear model, by chunks of rows, accumulated in the parameters' dtype.

For ``z = X w + b`` and a loss that is a sum over rows, the data term's derivatives factor:

    gradient = [X 1]^T l'(z)        Hessian = [X 1]^T diag(l''(z)) [X 1]

with l' and l'' the per-row first and second derivatives of the summed loss in z. Those come
from autodiff of the loss on the N-vector z alone (the rows are independent, so the gradient of
sum(l'(z)) is l''(z)): the loss formula stays in the loss module, and the P x P part is one
matrix product per block of rows instead of P backward passes (logreg_torch.newton's
reverse-over-reverse reference, which the tests hold this to).

Precision: the sums are kept in theta's dtype. With float64 theta over float32 rows (the float64
finish of a float32 solve) each block of rows is converted to float64 in a reused buffer (one
per thread: the blocks are shared out to a pool of threads), so value and gradient are float64
throughout and no float64 copy of X is ever made. The Hessian
block products run in the rows' own dtype: the Newton system needs no more than float32 (it sets
the direction; the float64 gradient sets where the solve stops), and a float32 product is
twice as fast as a float64 one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor

from logreg_torch.runtime import in_threads

Chunk = tuple[Tensor, Tensor, Tensor | None]  # features, targets, per-row weight (or None)

# Rows per block: a float64 block of 100 features is 13 MB, one per thread, so that the
# conversion, the two matrix-vector products and the Hessian product read it while it is still
# in cache (L3 here); the per-block ops' fixed costs favour larger blocks. A float64 pass over
# 1e6 x 100 on two threads after a float32 solve: 4k rows 94 ms, 8k 80, 16k 74, 24k 75.
BLOCK_ROWS = 16384


@dataclass
class LinearTerms:
    """The data term of a linear model (weights, then the bias if ``bias``) as chunks give it:
    ``loss_sum(z, targets, weight)`` is a block's summed loss, divided by ``n_total``.
    ``row_terms(z, targets, weight, order)``, when given, returns that sum with l' and (order 2)
    l'' in closed form, in place of autodiff through ``loss_sum`` (a third of a float64 pass's
    time over 1e6 x 100 went to the autodiff's per-block overhead)."""

    loss_sum: Callable[[Tensor, Tensor, Tensor | None], Tensor]
    chunks: Callable[[], Iterable[Chunk]]
    n_total: int
    bias: bool = True
    # The Hessian from 1/k of the rows (the first 1/k of each block), scaled up by k: a sampled
    # Newton system, for a solve that starts next to the optimum (the float64 finish).
    hessian_stride: int = 1
    row_terms: Callable[[Tensor, Tensor, Tensor | None, int],
                        tuple[Tensor, Tensor | None, Tensor | None]] | None = None
    _buffer: dict = field(default_factory=dict, repr=False)  # a reused float64 block a thread

    def __call__(self, theta: Tensor, order: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """This process's (value, gradient up to ``order`` >= 1, Hessian if ``order`` 2). The
        blocks of each chunk are shared out to a pool of threads, torch at one thread in each
        (as logreg_torch.fast does for the float32 epoch): a block's dozen ops are then not each
        split over the cores and joined again, which cost a float64 pass over 1e6 x 100 a fifth
        of its time (92 -> 75 ms) after a float32 solve. Partial sums add up in a fixed order."""
        parts = []
        for X, y, rw in self.chunks():
            starts = list(range(0, len(X), BLOCK_ROWS))
            parts += in_threads(partial(self._sum_blocks, theta, order, X, y, rw), starts,
                                X.device)
        value = torch.zeros((), dtype=torch.float64, device=theta.device)
        grad = torch.zeros_like(theta) if order >= 1 else None
        hess = theta.new_zeros(len(theta), len(theta)) if order == 2 else None
        for v, g, h in parts:
            value += v
            if grad is not None:
                grad += g
            if hess is not None:
                hess += h
        scale = 1.0 / self.n_total
        return (value * scale, None if grad is None else grad * scale,
                None if hess is None else hess * scale)

    def _sum_blocks(self, theta: Tensor, order: int, X: Tensor, y: Tensor, rw: Tensor | None,
                    starts: list[int], slot: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """(value, gradient, Hessian) of the blocks of X at ``starts``: one thread's share."""
        w, b = self._split(theta)
        value = torch.zeros((), dtype=torch.float64, device=theta.device)
        grad = torch.zeros_like(theta)
        hess = theta.new_zeros(len(theta), len(theta)) if order == 2 else None
        k = self.hessian_stride
        sample = None
        if order == 2 and k > 1:
            sample = _Sample(sum(-(-min(BLOCK_ROWS, len(X) - s) // k) for s in starts) + 64)
        # l'' of every row only for the full system; the sampled one takes its rows' at the end.
        row_order = 2 if hess is not None and sample is None else min(order, 1)
        for xb, x, yb, wb in self._blocks_of(X, y, rw, starts, theta.dtype, slot):
            z = torch.mv(x, w) if b is None else torch.addmv(b, x, w)
            v, gz, hz = self._row_terms(z, yb, wb, row_order)
            value += v.double()
            if order >= 1:
                grad[:len(w)].addmv_(x.t(), gz)
                if b is not None:
                    grad[-1] += gz.sum()
            if sample is not None:
                # The first 1/k of the block's rows (a run, read while in cache), as one
                # product at the end; blocks are spread over the data, so is the sample.
                r = -(-len(z) // k)
                sample.add(xb[:r], z[:r], yb[:r], None if wb is None else wb[:r], len(z) / r)
            elif hess is not None:
                self._add_hessian(hess, xb, hz)
        if sample is not None:
            self._add_sample(hess, sample)
        return value, grad, hess

    def sampled_hessian(self, theta: Tensor) -> Tensor:
        """This process's sampled Newton system alone: the rows ``__call__`` samples (the first
        1/k of each block, k = ``hessian_stride``; every row for k = 1), read where they lie
        and never converted, their logits in the rows' dtype (the system is a float32 product
        either way). It reads 1/k of the rows, for a step whose gradient comes from elsewhere
        (logreg_torch.newton.newton_seeded). The runs are not gathered into one copy (a fresh
        26 MB copy and the weighted copy the product needs were half the system's time on
        1e6 x 100: page faults); they are shared out to threads as the pass's blocks are."""
        k = self.hessian_stride
        hess = theta.new_zeros(len(theta), len(theta))
        for X, y, rw in self.chunks():
            spans = [(s, min(BLOCK_ROWS, len(X) - s)) for s in range(0, len(X), BLOCK_ROWS)]
            runs = [(slice(s, s + -(-m // k)), m) for s, m in spans]
            for part in in_threads(partial(self._sampled_part, theta, X, y, rw), runs, X.device):
                hess += part
        return hess / self.n_total

    def _sampled_part(self, theta: Tensor, X: Tensor, y: Tensor, rw: Tensor | None,
                      runs: list[tuple[slice, int]], slot: int) -> Tensor:
        """The sampled system of the ``runs`` of X (each a slice and the rows of the block it
        stands for): one thread's share."""
        hess = theta.new_zeros(len(theta), len(theta))
        if not runs:
            return hess
        w, b = self._split(theta)
        rows, wx = [r for r, _ in runs], w.to(X.dtype)
        z = torch.cat([torch.mv(X[r], wx) for r in rows])
        if b is not None:
            z += b.to(z.dtype)
        hz = self._row_terms(z, _cat_runs(y, rows, z.dtype), _cat_runs(rw, rows, z.dtype), 2)[2]
        if self.hessian_stride > 1:  # each sampled row stands for m / r rows of its block
            hz *= torch.cat([hz.new_full((r.stop - r.start,), m / (r.stop - r.start))
                             for r, m in runs])
        self._add_runs(hess, X, rows, hz)
        return hess

    def _add_runs(self, hess: Tensor, X: Tensor, runs: list[slice], hz: Tensor) -> None:
        """[X 1]^T diag(hz) [X 1] over the runs of rows of ``X`` (``hz`` their l'', in order),
        summed in the rows' dtype and added to ``hess``: two products per run."""
        d = X.shape[1]
        part = X.new_zeros(d, d)
        col = X.new_zeros(d)
        at = 0
        for r in runs:
            rows, h = X[r], hz[at:at + r.stop - r.start]
            at += len(h)
            part.addmm_(rows.t(), rows * h.unsqueeze(1))
            if self.bias:
                col.addmv_(rows.t(), h)
        hess[:d, :d] += part.to(hess.dtype)
        if self.bias:
            hess[:d, d] += col.to(hess.dtype)
            hess[d, :d] += col.to(hess.dtype)
            hess[d, d] += hz.sum()

    def hvp(self, theta: Tensor, v: Tensor) -> Tensor:
        """This process's Hessian of the data term times ``v``: X^T (l'' * (X v))."""
        w, b = self._split(theta)
        vw, vb = self._split(v)
        out = torch.zeros_like(theta)
        blocks = (block for X, y, rw in self.chunks() for block in
                  self._blocks_of(X, y, rw, range(0, len(X), BLOCK_ROWS), theta.dtype, 0))
        for _, x, y, rw in blocks:
            z = torch.mv(x, w) if b is None else torch.addmv(b, x, w)
            hz = self._row_terms(z, y, rw, 2)[2]
            u = hz * (torch.mv(x, vw) if vb is None else torch.addmv(vb, x, vw))
            out[:len(w)].addmv_(x.t(), u)
            if b is not None:
                out[-1] += u.sum()
        return out / self.n_total

    def _row_terms(self, z: Tensor, y: Tensor, weight: Tensor | None,
                   order: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
        if self.row_terms is None:
            return _autodiff_row_terms(self.loss_sum, z, y, weight, order)
        with torch.no_grad():
            return self.row_terms(z, y, weight, order)

    def _split(self, theta: Tensor) -> tuple[Tensor, Tensor | None]:
        return (theta[:-1], theta[-1]) if self.bias else (theta, None)

    def _blocks_of(self, X: Tensor, y: Tensor, rw: Tensor | None, starts: Iterable[int],
                   dtype: torch.dtype, slot: int) -> Iterable[tuple[Tensor, Tensor, Tensor,
                                                                    Tensor | None]]:
        """(rows as stored, rows in ``dtype``, targets, weights) of the blocks at ``starts``,
        converted in the buffer of thread ``slot``."""
        for s in starts:
            xb = X[s:s + BLOCK_ROWS]
            x = xb if xb.dtype == dtype else self._converted(xb, dtype, slot)
            yield (xb, x, y[s:s + BLOCK_ROWS].to(dtype),
                   None if rw is None else rw[s:s + BLOCK_ROWS].to(dtype))

    def _converted(self, xb: Tensor, dtype: torch.dtype, slot: int) -> Tensor:
        """``xb`` in ``dtype``, written into a reused buffer of its layout (column-major X, as
        the fused full batch stores it, gives column-major blocks: a copy that reads runs)."""
        n, d = xb.shape
        key = (dtype, xb.device, d, slot)
        buf = self._buffer.get(key)
        if buf is None or buf.numel() < BLOCK_ROWS * d:
            buf = self._buffer[key] = torch.empty(BLOCK_ROWS * d, dtype=dtype, device=xb.device)
        column_major = xb.stride(0) == 1 and d > 1
        out = (buf[:n * d].view(d, n).t() if column_major else buf[:n * d].view(n, d))
        return out.copy_(xb)

    def _add_sample(self, hess: Tensor, sample: _Sample) -> None:
        if sample.n:
            rows, z, y, rw, times = sample.parts()
            self._add_hessian(hess, rows, self._row_terms(z, y, rw, 2)[2] * times)

    def _add_hessian(self, hess: Tensor, xb: Tensor, hz: Tensor) -> None:
        """[X 1]^T diag(hz) [X 1] of the rows ``xb``, in their dtype, added to ``hess``."""
        d = xb.shape[1]
        h = hz.to(xb.dtype)
        hx = xb * h.unsqueeze(1)
        hess[:d, :d] += torch.mm(xb.t(), hx).to(hess.dtype)
        if self.bias:
            col = hx.sum(0).to(hess.dtype)
            hess[:d, d] += col
            hess[d, :d] += col
            hess[d, d] += hz.sum()


def _autodiff_row_terms(loss_sum, z: Tensor, y: Tensor, weight: Tensor | None,
                        order: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(summed loss, l'(z), l''(z)) of one block, by autodiff in z (rows are independent)."""
    if order == 0:
        with torch.no_grad():
            return loss_sum(z, y, weight), None, None
    with torch.enable_grad():
        z = z.detach().requires_grad_()
        value = loss_sum(z, y, weight)
        gz, = torch.autograd.grad(value, z, create_graph=order == 2)
        hz = torch.autograd.grad(gz.sum(), z)[0] if order == 2 else None
    return value.detach(), gz.detach(), hz


def _cat_runs(t: Tensor | None, runs: list[slice], dtype: torch.dtype) -> Tensor | None:
    return None if t is None else torch.cat([t[r] for r in runs]).to(dtype)


class _Sample:
    """The rows of a sampled Newton system, copied block by block into buffers that grow
    (by doubling) when the estimate of their number was short."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.n = capacity, 0
        self.buffers: list[Tensor | None] | None = None

    def add(self, rows: Tensor, z: Tensor, y: Tensor, weight: Tensor | None,
            times: float) -> None:
        parts = (rows, z, y, weight, torch.full_like(z, times))
        if self.buffers is None:
            self.buffers = [None if p is None else p.new_empty((self.capacity, *p.shape[1:]))
                            for p in parts]
        if self.n + len(z) > len(self.buffers[1]):
            self.buffers = [None if b is None else torch.cat([b, torch.empty_like(b)])
                            for b in self.buffers]
        for b, p in zip(self.buffers, parts, strict=True):
            if b is not None:
                b[self.n:self.n + len(z)].copy_(p)
        self.n += len(z)

    def parts(self) -> list[Tensor | None]:
        return [None if b is None else b[:self.n] for b in self.buffers]
