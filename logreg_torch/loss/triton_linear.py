"""The host side of fast.py's fused linear + BCE-with-logits kernel on CUDA
(``triton_kernels.linear_loss_forward``): X read once, the value and every gradient from the
same registers.

Called inside ``fast._LinearBCEWithLogits.forward`` (an eager autograd Function: the training
loop's full-batch fast path), so it is a plain launch, not a custom op. ``route.linear_applies``
says when; otherwise fast.py takes its torch-ops path. Imports triton.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from logreg_torch.loss.checks import range_message
from logreg_torch.loss.triton_kernels import ABSENT, EACH, SCALAR, linear_loss_forward
from logreg_torch.torch_compat import assert_async

# Launch shape, from register counts of the sm_90 builds (no GPU measurement yet): a tile of
# 4096 elements over 8 warps takes ~125 registers per thread (two programs per SM); 8192 took
# all 255 (one program per SM).
TILE = 4096  # elements of X per program and iteration: BLOCK_N rows of BLOCK_D columns
MAX_ROWS = 512
PROGRAMS_PER_SM = 8  # enough programs in flight to keep the memory system busy
NUM_WARPS = 8


def _pow2(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


@functools.cache
def _multiprocessors(device: torch.device) -> int:
    if device.type != "cuda":
        return 1  # Triton's interpreter (tests): programs run one after another anyway
    return torch.cuda.get_device_properties(device).multi_processor_count


def forward(features: Tensor, w: Tensor, bias: Tensor | None, targets: Tensor,
            pos_weight: Tensor | None, check_range: bool, want_grad_z: bool
            ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """(sum of the losses, sum of g_i x_i, sum of g_i, g or None), float32 sums, where g_i is
    n times dL/dz_i; ``w`` is the (D,) weight row. No host sync: the target check is a flag on
    the device and one in-graph assert."""
    n, d = features.shape
    block_d = max(16, _pow2(d))
    block_n = max(1, min(MAX_ROWS, TILE // block_d))
    blocks = (n + block_n - 1) // block_n
    iters = _pow2((blocks + PROGRAMS_PER_SM * _multiprocessors(features.device) - 1)
                  // (PROGRAMS_PER_SM * _multiprocessors(features.device)))
    programs = (blocks + iters - 1) // iters
    part = torch.empty(programs, block_d + 2, dtype=torch.float32, device=features.device)
    flags = torch.empty(programs, dtype=torch.int32, device=features.device)
    grad_z = torch.empty(n, dtype=w.dtype, device=features.device) if want_grad_z else None
    if pos_weight is None:
        pw, pw_mode = features, ABSENT
    else:
        pw, pw_mode = pos_weight.contiguous(), (SCALAR if pos_weight.numel() == 1 else EACH)
    # launched directly: eager only (torch's wrap_triton would go through a higher-order op)
    linear_loss_forward[(programs,)](
        features, w, features if bias is None else bias, targets, pw,
        features if grad_z is None else grad_z, part, flags, n, d, features.stride(0),
        features.stride(1), HAS_B=bias is not None, PW_MODE=pw_mode, WRITE_GZ=want_grad_z,
        CHECK_Y=check_range, ITERS=iters, BLOCK_N=block_n, BLOCK_D=block_d,
        num_warps=NUM_WARPS)
    if check_range:
        fn = "binary_cross_entropy_with_logits"
        assert_async(flags.sum() == 0, range_message(fn, ["target"]))
    sums = part.sum(0)
    return sums[0], sums[2:2 + d].to(w.dtype), sums[1].to(w.dtype), grad_z
