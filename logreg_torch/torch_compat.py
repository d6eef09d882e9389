"""The one place that touches torch's internals (``torch._*``, ``torch.ops.aten``): small, named
wrappers, so that a torch upgrade that moves one of them breaks here and nowhere else.

- Keeping ``torch._dynamo`` out of runs that never compile (``defer_dynamo_import``).
- What the losses ask before taking their eager fast path or the Triton kernels: is anything
  tracing or transforming (``tracing_or_transformed``, ``forward_ad_active``), is a tensor fake
  (``is_fake``), the real tensor under torch.func's wrappers (``unwrap_functorch``) and ops on
  it outside the transforms (``outside_functorch``), an in-graph assert (``assert_async``), and
  the aten log-sigmoid kernels with ``out=`` buffers.

Keep ``torch._dynamo`` (about 1 s of imports: dynamo, sympy, fx) out of runs that never compile.

Several methods of ``torch.optim.Optimizer`` (``add_param_group``, called by every optimizer's
constructor, ``zero_grad``, ``state_dict``, ``load_state_dict``) are wrapped by torch's internal
``torch._disable_dynamo``, which imports ``torch._dynamo`` on the first call so that the method is
never traced by ``torch.compile``. When ``torch._dynamo`` has not been imported, nothing in this
process is being traced, and the wrapper's job is a no-op: calling the method directly is exact.

``defer_dynamo_import()`` hands each such wrapper a function that does just that while
``torch._dynamo`` is absent, and from the moment anything imports it (``torch.compile``, Adam's
and SGD's ``step``) defers to ``torch._dynamo.disable`` exactly as torch would. The wrapper's
hook (the ``__dynamo_disable`` attribute it caches on the wrapped function) is torch's own, read
by ``torch._compile._disable_dynamo``; if a torch version lays it out differently, nothing here
matches and torch's behaviour is unchanged.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.autograd.forward_ad as _fw_ad
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode as _dispatch_mode

_HOOK = "__dynamo_disable"  # the attribute torch._compile._disable_dynamo caches on fn
_done = False


def _lazy_disable(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        if "torch._dynamo" not in sys.modules:  # nothing is compiling: the disable is a no-op
            return fn(*args, **kwargs)
        import torch._dynamo

        disabled = torch._dynamo.disable(fn, recursive=True, wrapping=False)
        setattr(fn, _HOOK, disabled)  # from now on, exactly torch's own wrapper
        return disabled(*args, **kwargs)

    return call


def _torch_disabled_methods(cls: type) -> list[Callable[..., Any]]:
    """The functions that ``torch._disable_dynamo`` wrapped in ``cls`` and its bases."""
    probe_code = torch._disable_dynamo(lambda: None).__code__
    found = []
    for klass in cls.__mro__:
        for attr in vars(klass).values():
            inner = getattr(attr, "__wrapped__", None)
            if getattr(attr, "__code__", None) is probe_code and callable(inner):
                found.append(inner)
    return found


def _lazy_use_grad(use_grad: Callable[..., Any]) -> Callable[..., Any]:
    """``step`` as ``_use_grad_for_differentiable`` makes it, less its ``import torch._dynamo``
    while nothing compiles: its two ``torch._dynamo.graph_break()`` calls do nothing outside a
    trace, and the grad mode is set and restored as there."""
    inner = use_grad.__wrapped__

    @functools.wraps(inner)
    def step(self, *args: Any, **kwargs: Any) -> Any:
        if "torch._dynamo" in sys.modules:  # something may compile: torch's own path
            return use_grad(self, *args, **kwargs)
        prev = torch.is_grad_enabled()
        try:
            torch.set_grad_enabled(self.defaults["differentiable"])
            return inner(self, *args, **kwargs)
        finally:
            torch.set_grad_enabled(prev)

    step.lazy_use_grad = use_grad
    return step


def _defer_step_imports() -> None:
    """Every ``torch.optim`` optimizer whose ``step`` is wrapped by ``_use_grad`` (Adam, AdamW,
    SGD, ...: it imports ``torch._dynamo`` at the first step, ~1 s of a 20-epoch run) gets the
    lazy one. A class already stepped has torch's profiling hook around it: kept around ours."""
    from torch.optim import optimizer as torch_optimizer

    probe = torch_optimizer._use_grad_for_differentiable(lambda self: None).__code__
    for name in dir(torch.optim):
        cls = getattr(torch.optim, name)
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
            continue
        step = cls.__dict__.get("step")
        hooked = getattr(step, "hooked", False)
        use_grad = getattr(step, "__wrapped__", None) if hooked else step
        if getattr(use_grad, "__code__", None) is not probe:
            continue  # not torch's wrapper (LBFGS, or a layout this module does not know)
        lazy = _lazy_use_grad(use_grad)
        if hooked:
            lazy = torch_optimizer.Optimizer.profile_hook_step(lazy)
            lazy.hooked = True
        cls.step = lazy


def defer_dynamo_import() -> None:
    """Let the optimizers' dynamo-disabled methods and their ``step`` skip importing
    ``torch._dynamo`` while nothing compiles (see the module docstring). Idempotent; cheap
    after the first call."""
    global _done
    if _done:
        return
    for fn in _torch_disabled_methods(torch.optim.Optimizer):
        if getattr(fn, _HOOK, None) is None:  # not yet called: torch has cached nothing
            setattr(fn, _HOOK, _lazy_disable(fn))
    _defer_step_imports()
    _done = True


# ----------------------------------------------------------------------------- for the losses

# log_sigmoid_forward(v) returns log(sigmoid(v)) and, on CPU, exp(-|v|) as a by-product;
# log_sigmoid_backward turns that by-product into a sigmoid with one division (see
# losses_fast.bcel_chunk). The ``out=`` overloads write into reused scratch tensors.
LOG_SIGMOID_FORWARD = torch.ops.aten.log_sigmoid_forward.output
LOG_SIGMOID_BACKWARD = torch.ops.aten.log_sigmoid_backward.grad_input


def functorch_transforms_active() -> bool:
    """Inside a torch.func transform (grad, vmap, jvp, ...)."""
    return torch._C._are_functorch_transforms_active()


def forward_ad_active() -> bool:
    """Inside a ``torch.autograd.forward_ad.dual_level``."""
    return _fw_ad._current_level >= 0


def is_fake(t: Tensor) -> bool:
    """A fake tensor (export, FakeTensorMode), possibly under torch's functional wrapper."""
    if type(t) in (Tensor, torch.nn.Parameter):
        return False
    from torch._subclasses.fake_tensor import is_fake as _is_fake  # imports sympy: only here

    return _is_fake(t)


def tracing_or_transformed() -> bool:
    """True under torch.compile/export, a torch.func transform, forward AD or any dispatch or
    torch-function mode (fake tensors, meta device contexts, profilers of ops)."""
    return (torch.compiler.is_compiling() or functorch_transforms_active()
            or forward_ad_active() or _dispatch_mode() is not None
            or torch._C._is_torch_function_mode_enabled())


def unwrap_functorch(t: Tensor) -> Tensor:
    """The real tensor under torch.func's wrappers (itself when there are none)."""
    while torch._C._functorch.is_functorch_wrapped_tensor(t):
        t = torch._C._functorch.get_unwrapped(t)
    return t


def outside_functorch():
    """A context in which ops on the real tensors under torch.func's wrappers run as plain ops,
    outside the transforms (for what has no batching rule: ``torch._assert_async``)."""
    return torch._C._DisableFuncTorch()


def assert_async(condition: Tensor, message: str) -> None:
    """An assert that stays on the device and in a compiled graph: no host sync."""
    torch._assert_async(condition, message)
