"""logreg_torch: hand-written binary cross-entropy and logistic regression in PyTorch."""

__version__ = "0.1.0"
