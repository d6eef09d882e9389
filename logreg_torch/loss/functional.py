"""Binary cross-entropy (log loss), written by hand: the two public functions, which mirror
``torch.nn.functional``, and the choice of the path that computes them.

Same argument names, defaults, shapes, broadcasting and exception types as torch's; no BCE
kernel of torch is called. Three paths give the same values and gradients (tests check each
against the reference):

- CUDA tensors of float32/bfloat16/float16: the Triton kernels, as torch custom ops
  (``triton_ops``), when ``route.kernels_apply`` says so;
- real CPU tensors in plain eager mode, mean/sum, only the input needing a gradient: the CPU
  kernels (``cpu``: chunked, the gradient written in the forward pass);
- everything else: the reference path (``reference``), which composes with double backward,
  forward AD, ``torch.func``, ``torch.compile(fullgraph=True)``, ``torch.export``, meta and fake
  tensors.

Beyond torch: autocast of the probability version (computes and returns float32);
``label_smoothing`` as Keras defines it (targets become ``y * (1 - eps) + eps / 2``); the logits
version rejects targets outside [0, 1] too (``check_range=False`` skips all range checks);
gradients w.r.t. ``weight`` and ``pos_weight``. Deliberate difference: at p = 0 or 1 exactly,
torch's gradient w.r.t. the *target* is +-inf (-logit(p) unclamped); ours is the derivative of the
clamped loss it returns, +-100.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor

from logreg_torch.loss import checks, cpu, route
from logreg_torch.loss.formulas import smooth
from logreg_torch.loss.reference import logits_reference, probs_reference

__all__ = ["binary_cross_entropy", "binary_cross_entropy_with_logits"]


def _loss(kind: str, input: Tensor, target: Tensor, weight: Tensor | None,
          pos_weight: Tensor | None, reduction: str, label_smoothing: float,
          check: bool) -> Tensor:
    """Validate, then take the Triton kernels, the CPU kernels or the reference path."""
    fn = "binary_cross_entropy" if kind == "probs" else "binary_cross_entropy_with_logits"
    checks.check_reduction(reduction)
    checks.check_label_smoothing(label_smoothing)
    if not isinstance(input, Tensor) or not isinstance(target, Tensor):
        raise TypeError(f"{fn}: input and target must be tensors")
    device = input.device.type  # meta and others have no autocast state to ask about
    autocast = device in ("cpu", "cuda") and torch.is_autocast_enabled(device)
    if autocast:
        # Log loss needs float32 range and precision; do what autocast does for torch's
        # logits loss: compute in float32 and return float32.
        input, target = input.float(), target.float()
    checks.check_tensors(fn, input, target)
    checks.check_broadcast(weight, "weight", input, fn)
    checks.check_broadcast(pos_weight, "pos_weight", input, fn)
    # Like torch, weights of another float dtype are cast to the input's.
    if weight is not None and weight.dtype != input.dtype:
        weight = weight.to(input.dtype)
    if pos_weight is not None and pos_weight.dtype != input.dtype:
        pos_weight = pos_weight.to(input.dtype)
    check_input, check_target = check and kind == "probs", check
    with torch.autocast(device, enabled=False) if autocast else nullcontext():
        if route.kernels_apply(input, target, weight, pos_weight):
            return route.ops().loss(kind, input, target, weight, pos_weight, reduction,
                                    label_smoothing, check_input, check_target, fn)
        if label_smoothing:
            if check:  # check the targets the user gave, not the smoothed ones
                checks.check_range(fn, (target, "target"))
                check_target = False
            target = smooth(target, label_smoothing)
        return _cpu_or_reference(kind, input, target, weight, pos_weight, reduction, fn,
                                 check_input, check_target, check)


def _cpu_or_reference(kind: str, input: Tensor, target: Tensor, weight: Tensor | None,
                      pos_weight: Tensor | None, reduction: str, fn: str, check_input: bool,
                      check_target: bool, in_range: bool) -> Tensor:
    reference = probs_reference if kind == "probs" else logits_reference
    fused = (reduction != "none" and not any(t is not None and t.requires_grad
                                             for t in (target, weight, pos_weight))
             and cpu.plain_cpu(input, target, weight, pos_weight))
    if not fused:  # the CPU kernels check chunk by chunk, while each is in cache
        checks.check_range(fn, *[(input, "input (probabilities)")] * check_input,
                           *[(target, "target")] * check_target)
        return reference(input, target, pos_weight, weight, reduction)
    if kind == "logits" and check_target and pos_weight is None:  # a minibatch of 0/1?
        loss, check_target = cpu.small_hard_label_loss(input, target, weight, reduction, fn)
        if loss is not None:
            return loss
    kernel = cpu.bce_chunk if kind == "probs" else cpu.bcel_chunk
    return cpu.FusedLoss.apply(input, target, pos_weight, weight, reduction, kernel, reference,
                               (fn, check_input, check_target, in_range))


def binary_cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    check_range: bool = True,
) -> Tensor:
    """Binary cross-entropy between probabilities ``input`` and ``target``, like
    ``torch.nn.functional.binary_cross_entropy``.

    Each log term is clamped at -100 as torch does, so p = 0 or 1 gives a finite loss and a
    finite gradient. ``weight`` broadcasts to the input shape. ``check_range=False`` skips the
    [0, 1] checks of input and target.
    """
    return _loss("probs", input, target, weight, None, reduction, label_smoothing, check_range)


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    pos_weight: Tensor | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    check_range: bool = True,
) -> Tensor:
    """Binary cross-entropy on logits, like ``F.binary_cross_entropy_with_logits``.

    Stable for any logit magnitude and accurate in both tails. ``pos_weight`` multiplies the
    positive term and broadcasts to the input shape. Unlike torch, targets outside [0, 1] are
    an error unless ``check_range=False``.
    """
    return _loss("logits", input, target, weight, pos_weight, reduction, label_smoothing,
                 check_range)
