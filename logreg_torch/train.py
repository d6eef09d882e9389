"""The training entry points under their old import path (``from logreg_torch.train import fit``).

The code lives by concern: ``objective`` (the criterion), ``solvers`` (optimizers, schedulers,
L-BFGS stopping), ``loop`` (one epoch, ``evaluate``), ``fit`` (``fit(config)``), ``runs`` (run
folder, checkpoints, the final report) and ``predict`` (logits, probabilities, checkpoints).
"""

from logreg_torch.config import load_config
from logreg_torch.fit import fit
from logreg_torch.loop import evaluate, train_one_epoch, train_one_epoch_streaming
from logreg_torch.objective import Objective, fast_path_applies, make_objective
from logreg_torch.predict import (
    model_from_checkpoint,
    predict_logits,
    predict_proba,
    resolved_config_of,
)
from logreg_torch.runs import FitResult, TrainingError, new_run_dir
from logreg_torch.solvers import make_optimizer, make_scheduler

__all__ = [
    "FitResult", "Objective", "TrainingError", "evaluate", "fast_path_applies", "fit",
    "load_config", "make_objective", "make_optimizer", "make_scheduler", "model_from_checkpoint",
    "new_run_dir", "predict_logits", "predict_proba", "resolved_config_of", "train_one_epoch",
    "train_one_epoch_streaming",
]
