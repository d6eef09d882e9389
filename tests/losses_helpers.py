"""What the loss tests share (test_losses.py, test_loss_autograd.py, test_loss_bad_input.py):
the reductions, tolerances per dtype, random probabilities with exact 0s and 1s, and the
comparison of our result with torch's."""

import torch

REDUCTIONS = ["none", "mean", "sum"]
# Tolerances per dtype: half types differ from torch by rounding of intermediates.
TOL = {
    torch.float64: dict(rtol=1e-12, atol=1e-12),
    torch.float32: dict(rtol=2e-6, atol=1e-6),
    torch.float16: dict(rtol=2e-3, atol=2e-3),
    torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
}


def _probs(shape, dtype=torch.float64, gen=None, edges=True):
    p = torch.rand(shape, generator=gen, dtype=torch.float64)
    if edges and p.numel() >= 4:  # exact 0 and 1 are the edges torch clamps
        flat = p.view(-1)
        flat[0], flat[1] = 0.0, 1.0
    return p.to(dtype)


def _compare(ours, theirs, dtype):
    assert ours.dtype == theirs.dtype
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, equal_nan=True, **TOL[dtype])
