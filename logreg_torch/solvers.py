"""Optimizers, learning-rate schedulers, and the full-batch L-BFGS run with its stopping rule,
each built from the config's ``optim`` section. Newton's method is in logreg_torch.newton.

Every full-batch solver stops as scikit-learn's do: when the largest absolute component of the
gradient of the penalized objective is <= ``optim.tol``, or its iteration budget is spent, or
rounding stops it (no step lowers the objective: "stalled")."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from logreg_torch.config import Config
from logreg_torch.newton import Iterate, SolveReport
from logreg_torch.torch_compat import defer_dynamo_import


def make_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer | None:
    o = cfg.optim
    defer_dynamo_import()  # no torch._dynamo import (~1 s) for a run that never compiles
    params = list(model.parameters())
    kernels = kernel_options(params, capturable=cfg.train.cuda_graphs)
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                               **kernels)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay, **kernels)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay, **kernels)
    if o.name == "newton":
        return None  # Newton keeps no state between iterations (logreg_torch.newton)
    # Full-batch L-BFGS with a strong-Wolfe line search; run_lbfgs sets the stopping rule. Its
    # first trial step is optim.lbfgs_lr (1), whatever optim.lr a config inherited: a small lr
    # makes each line search creep up to the step and spend the evaluation budget.
    return torch.optim.LBFGS(params, lr=o.lbfgs_lr, max_iter=o.max_iter,
                             history_size=o.history_size, tolerance_grad=o.tol,
                             tolerance_change=_EXACT_STALL, line_search_fn="strong_wolfe")


def kernel_options(params: list[torch.Tensor], capturable: bool = False) -> dict[str, bool]:
    """How SGD / Adam / AdamW run their update. On CUDA: torch's fused kernel, one launch for
    every parameter's update with the step count kept on the device (the default, foreach,
    launches several kernels per step and keeps the count on the host); it also takes
    GradScaler's unscale and inf check into the kernel, so an fp16 step makes no host sync.
    ``capturable`` (train.cuda_graphs): the update may be captured in a CUDA graph.
    On the CPU: torch's default, so that CPU results stay bit for bit what they were."""
    if params and all(p.is_cuda for p in params):
        return {"fused": True, "capturable": True} if capturable else {"fused": True}
    return {}


_KERNEL_KEYS = ("fused", "foreach", "capturable")


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """``optimizer.load_state_dict(state)``, keeping this run's kernel options. A checkpoint
    holds the flags of the device it was written on, and torch would restore them: a GPU run
    resumed on the CPU would step with the fused CPU kernel (not the CPU default), a CPU run
    resumed on a GPU with the unfused one, and with train.cuda_graphs its capture would fail
    (not capturable). Torch also places the step counts by these flags (on the device for
    fused and capturable steps)."""
    options = [{k: g[k] for k in _KERNEL_KEYS if k in g} for g in optimizer.param_groups]
    groups = [{**saved, **mine} for saved, mine in zip(state["param_groups"], options,
                                                       strict=True)]
    optimizer.load_state_dict({**state, "param_groups": groups})


def make_scheduler(cfg: Config, optimizer: torch.optim.Optimizer | None):
    o = cfg.optim
    if optimizer is None:
        return None
    if o.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=o.step_size, gamma=o.gamma)
    if o.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.train.epochs)
    if o.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=o.gamma, patience=2)
    return None


def step_scheduler(scheduler, monitored: float) -> None:
    """One scheduler step after an epoch; ReduceLROnPlateau watches ``monitored`` (the val loss,
    or the train loss without a validation split)."""
    if scheduler is None:
        return
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(monitored)
    else:
        scheduler.step()


# torch's L-BFGS also stops when the loss or the step changes by less than tolerance_change; in
# float32 that fires far from the optimum (|loss change| < 1e-10 at max|grad| 5e-4). Kept only
# for an exact stall (no change at all), which the report then calls "stalled".
_EXACT_STALL = torch.finfo(torch.float64).tiny


def _max_abs_grad(params: list[torch.Tensor]) -> float:
    grads = [p.grad.abs().max() for p in params if p.grad is not None and p.grad.numel()]
    return float(torch.stack(grads).max()) if grads else 0.0


def run_lbfgs(optimizer: torch.optim.LBFGS, closure: Callable[[], torch.Tensor], *, tol: float,
              budget: int, on_iter: Callable[[Iterate], None] | None = None) -> SolveReport:
    """Up to ``budget`` L-BFGS iterations from where ``optimizer`` stands (its history carries
    over between calls and checkpoints). Stops on max|grad| <= tol, the budget, or a stall.

    ``on_iter`` gets one point per iteration (0 = the start): the lowest objective its line
    search evaluated, which is the point strong-Wolfe accepts, and max|grad| there."""
    group = optimizer.param_groups[0]
    params = group["params"]
    # The evaluation budget (torch's default 1.25 x max_iter) must not end a run that still
    # has iterations: strong-Wolfe takes up to 25 evaluations per iteration.
    group.update(max_iter=budget, max_eval=budget * 30, tolerance_grad=tol,
                 tolerance_change=_EXACT_STALL)
    state = optimizer.state[params[0]]
    start = state.get("n_iter", 0)
    points: dict[int, Iterate] = {}

    def tracked() -> torch.Tensor:
        loss = closure()
        k = state.get("n_iter", 0) - start
        point = Iterate(k, float(loss.detach()), _max_abs_grad(params))
        if k not in points or point.loss <= points[k].loss:
            points[k] = point
        return loss

    optimizer.step(tracked)
    n_iter = state.get("n_iter", 0) - start
    loss = closure()  # the gradient at the final point, which torch does not keep
    grad_max = _max_abs_grad(params)
    if on_iter is not None:
        for k in sorted(points):
            on_iter(points[k])
    converged = grad_max <= tol
    reason = "tol" if converged else ("max_iter" if n_iter >= budget else "stalled")
    return SolveReport(converged, n_iter, grad_max, float(loss.detach()), reason)


def epoch_budget(max_iter: int, epochs: int, epoch: int, used: int) -> int:
    """Iterations a full-batch solver may run in ``epoch`` (0-based): an equal share of
    ``max_iter`` per epoch, with what earlier epochs left unused carried forward."""
    share = -(-max_iter // epochs)
    return max(0, min(share * (epoch + 1), max_iter) - used)
