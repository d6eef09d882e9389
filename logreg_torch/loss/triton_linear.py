"""The host side of fast.py's fused linear + BCE-with-logits kernel on CUDA
(``triton_kernels.linear_loss_forward``): X read once, the value and every gradient from the
same registers.

Called inside ``fast._LinearBCEWithLogits.forward`` (an eager autograd Function: the training
loop's full-batch fast path), so it is a plain launch, not a custom op. ``route.linear_applies``
says when; otherwise fast.py takes its torch-ops path. Imports triton.

Launch shape. Each program keeps a tile of BLOCK_N rows by BLOCK_D (D rounded up to a power of
two) columns of X in registers, and a step of it waits on memory, then on two sums across the
tile (one over columns for the logits, one over rows for g^T X). What keeps the memory system
busy is bytes in flight: several programs per SM (registers allow 2-4), the next tile's loads
issued before this tile's sums (PREFETCH), and exactly as many programs as fit at once (a second,
partial wave would leave SMs idle), each taking every programs-th block of rows. A column-major X
(as fit stores it) is read along its columns: BLOCK_N rows of a column are contiguous, so tiles
of at least 32 rows load whole 128-byte lines. The partial rows (one per program) are summed by
one torch op.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from logreg_torch.loss.checks import range_message
from logreg_torch.loss.triton_kernels import ABSENT, EACH, SCALAR, linear_loss_forward
from logreg_torch.loss.triton_launch import Launcher
from logreg_torch.torch_compat import assert_async

# (X's bytes per element, largest BLOCK_D) -> (elements of X per tile, warps, programs per SM,
# prefetch); the first entry whose BLOCK_D bound holds. From register counts of the sm_90 builds
# (cuobjdump: a 4096-element fp32 tile over 4 warps with the prefetch, ~168 registers: 3 programs
# per SM), not yet from GPU timings: scripts/tune_gpu.py times the alternatives on a GPU and
# prints this table to paste here. (Measured on an H200 before the prefetch and the exact grid,
# with 4096-element tiles over 8 warps and 8 programs per SM: 2.86 ms for 1e7 x 100 float32,
# X.sum() 0.96 ms.)
LAUNCH = {
    (4, 32): (4096, 4, 3, True),
    (4, 256): (4096, 4, 3, True),
    (4, 4096): (8192, 8, 1, True),
    (2, 32): (4096, 4, 3, True),
    (2, 256): (4096, 4, 3, True),
    (2, 4096): (8192, 8, 1, True),
}
MAX_ROWS = 1024
_LAUNCHER = Launcher(linear_loss_forward)
_MESSAGE = range_message("binary_cross_entropy_with_logits", ["target"])


def _pow2(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


def launch_config(itemsize: int, block_d: int) -> tuple[int, int, int, bool]:
    """(tile, warps, programs per SM, prefetch) for an X of ``itemsize`` bytes per element."""
    size = 4 if itemsize >= 4 else 2
    return next(cfg for (s, bound), cfg in LAUNCH.items() if s == size and block_d <= bound)


@functools.cache
def _multiprocessors(device: torch.device) -> int:
    if device.type != "cuda":
        return 1  # Triton's interpreter (tests): programs run one after another anyway
    return torch.cuda.get_device_properties(device).multi_processor_count


def grid(n: int, d: int, itemsize: int, device: torch.device, config=None) -> dict:
    """The launch for an (n, d) X: programs and the kernel's shape constants."""
    block_d = max(16, _pow2(d))
    tile, warps, per_sm, prefetch = config or launch_config(itemsize, block_d)
    block_n = max(1, min(MAX_ROWS, tile // block_d))
    blocks = (n + block_n - 1) // block_n
    slots = per_sm * _multiprocessors(device)
    iters = (blocks + slots - 1) // slots
    programs = (blocks + iters - 1) // iters
    return dict(programs=programs, ITERS=iters, BLOCK_N=block_n, BLOCK_D=block_d,
                PREFETCH=prefetch, num_warps=warps)


def forward(features: Tensor, w: Tensor, bias: Tensor | None, targets: Tensor,
            pos_weight: Tensor | None, check_range: bool, want_grad_z: bool, config=None
            ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """(mean loss, its gradient w.r.t. ``w`` (the (D,) weight row) and w.r.t. the bias, float32,
    and g or None), where g_i is n times dL/dz_i. No host sync: the target check is a count on
    the device and one in-graph assert."""
    n, d = features.shape
    shape = grid(n, d, features.element_size(), features.device, config)
    programs = shape.pop("programs")
    part = torch.empty(programs, d + 3, dtype=torch.float32, device=features.device)
    grad_z = torch.empty(n, dtype=w.dtype, device=features.device) if want_grad_z else None
    if pos_weight is None:
        pw, pw_mode = features, ABSENT
    else:
        pw, pw_mode = pos_weight.contiguous(), (SCALAR if pos_weight.numel() == 1 else EACH)
    # launched directly: eager only (torch's wrap_triton would go through a higher-order op)
    _LAUNCHER[(programs,)](
        features, w, features if bias is None else bias, targets, pw,
        features if grad_z is None else grad_z, part, n, d, features.stride(0),
        features.stride(1), programs, 1.0 / n, HAS_B=bias is not None, PW_MODE=pw_mode,
        WRITE_GZ=want_grad_z, CHECK_Y=check_range, **shape)
    sums = part.sum(0)
    if check_range:
        assert_async(sums[2] == 0, _MESSAGE)
    return sums[0], sums[3:], sums[1], grad_z
