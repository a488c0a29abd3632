"""Train the lecture's MLP: `python train.py [overrides]`, or a sweep with `python train.py -m ...`.

The same command as the console script `backprop-lab-train`: the Hydra entry lives in the package
(backprop_lab/training/entry/train.py, `main`), the configs in conf/ (the package backprop_lab.conf).
Set BACKPROP_LAB_VERBOSE=1 to see the traceback behind a one-line error.
"""

from backprop_lab.training.entry.train import main, run

__all__ = ["main"]

if __name__ == "__main__":
    run()
