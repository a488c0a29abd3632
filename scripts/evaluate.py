"""Evaluate a checkpoint on the test split: `python scripts/evaluate.py ckpt_path=PATH [data=...] [member=K|ensemble]`.

The same command as the console script `backprop-lab-evaluate` (backprop_lab/training/entry/evaluate.py).
"""

from backprop_lab.training.entry.evaluate import run

if __name__ == "__main__":
    run()
