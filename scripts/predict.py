"""Recognise digits in your own images: `python scripts/predict.py --ckpt PATH IMAGE [IMAGE ...]`.

The same command as the console script `backprop-lab-predict` (backprop_lab/training/entry/predict.py).
"""

import sys

from backprop_lab.training.entry.predict import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
