"""``python -m logreg_torch`` is the ``logreg-torch`` command."""

from logreg_torch.cli import run

run()
