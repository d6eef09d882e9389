"""Predictions of a trained model: logits and probabilities for the rows of a table, and the
model and config stored in a checkpoint."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from logreg_torch.checkpoint import CheckpointError
from logreg_torch.config import Config, config_from_dict
from logreg_torch.model import build_model
from logreg_torch.runtime import Runtime, autocast


@torch.no_grad()
def predict_logits(model: nn.Module, X: Tensor, runtime: Runtime | None = None,
                   batch_size: int = 1 << 16) -> Tensor:
    """Logits for every row of X, in X's dtype even under mixed precision."""
    model.eval()
    out = []
    for xb in X.split(batch_size):
        with autocast(runtime) if runtime is not None else torch.autocast("cpu", enabled=False):
            out.append(model(xb).to(X.dtype))
    return torch.cat(out) if out else X.new_zeros(0)


def predict_proba(model: nn.Module, X: Tensor, runtime: Runtime | None = None) -> Tensor:
    """Probabilities of class 1 for every row of X."""
    return torch.sigmoid(predict_logits(model, X, runtime))


def model_from_checkpoint(state: dict) -> nn.Module:
    args = state["model_args"]
    model = build_model(args["name"], args["in_features"], args["hidden"], args["dropout"],
                        args["bias"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint weights do not fit a {args['name']} model with "
                              f"{args['in_features']} features: {str(e).splitlines()[0]}") from None
    return model.to(torch.float64 if state["config"]["train"]["precision"] == "fp64"
                    else torch.float32)


def resolved_config_of(state: dict) -> Config:
    return config_from_dict(state["config"], source="checkpoint config")
