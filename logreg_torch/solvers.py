"""Optimizers, learning-rate schedulers, and the stopping rule of the full-batch solver
(L-BFGS), each built from the config's ``optim`` section."""

from __future__ import annotations

import torch
from torch import nn

from logreg_torch.config import Config


def make_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    o = cfg.optim
    params = list(model.parameters())
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    # Full-batch L-BFGS with a strong-Wolfe line search stops on tol, like scikit-learn's lbfgs.
    return torch.optim.LBFGS(params, lr=o.lr, max_iter=o.max_iter, history_size=o.history_size,
                             tolerance_grad=o.tol, tolerance_change=o.tol * 1e-3,
                             line_search_fn="strong_wolfe")


def make_scheduler(cfg: Config, optimizer: torch.optim.Optimizer):
    o = cfg.optim
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


def lbfgs_converged(optimizer: torch.optim.Optimizer, max_iter: int) -> bool:
    """Whether a full-batch L-BFGS has met its tolerances (False for any other optimizer)."""
    if not isinstance(optimizer, torch.optim.LBFGS):
        return False
    # L-BFGS stops early inside step() when it meets tolerance_grad/tolerance_change; running
    # fewer than max_iter iterations in the last step means it converged.
    state = optimizer.state[optimizer.param_groups[0]["params"][0]]
    return state.get("n_iter", 0) % max_iter != 0 or state.get("func_evals", 0) == 0
