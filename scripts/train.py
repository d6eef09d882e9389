"""Train from a config; the same as ``logreg-torch train``, and the entry point for torchrun:

    python scripts/train.py configs/default.yaml optim.lr=0.1
    torchrun --nproc_per_node=2 scripts/train.py configs/default.yaml
"""

import sys

from logreg_torch.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]], exiting=True))
