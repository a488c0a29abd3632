"""Recognise digits in your own images: `backprop-lab-predict --ckpt PATH IMAGE [IMAGE ...]` (or
`python scripts/predict.py ...`).

Each PNG/JPEG (any size, dark ink on light paper or the reverse, drawn or photographed) is
turned into an MNIST-style 28x28 input (backprop_lab.inspection.images.preprocess) and classified. Prints
`path: 7  (7 0.98, 1 0.01, 9 0.00)` per image (the class, then the top three probabilities), or a
JSON list with --json; --show OUT.png saves the inputs the network saw beside its predictions.
A file that cannot be read gets `error: <path>: <what> (<fix>)` on stderr, the rest are still
classified, and the exit status is 1. A bad --ckpt is a one-line error, exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from backprop_lab.errors import ConfigError, one_line, print_error, unwritable


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="PNG or JPEG files, one digit each")
    p.add_argument("--ckpt", required=True, type=Path, help="a checkpoint written by train.py")
    p.add_argument("--model", choices=("manual", "reference"), help="load the weights into this network")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of text lines")
    p.add_argument("--show", type=Path, metavar="OUT.png", help="save the 28x28 inputs and predictions here")
    p.add_argument(
        "--member",
        type=int,
        metavar="K",
        help="a population checkpoint's member K (default: the ensemble, probabilities averaged)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """The console script; returns the exit status."""
    p = parser()
    args = p.parse_args(argv)
    if args.show is not None and args.show.suffix.lower() not in (".png", ".jpg", ".jpeg", ".pdf", ".svg"):
        p.error(f"--show {args.show}: give a .png, .jpg, .pdf or .svg file name")  # before any work is done
    # Here, after the arguments: --help and usage errors come before torch and Lightning load.
    from backprop_lab.inspection.predict import predict_files, predictions_figure, require_images
    from backprop_lab.training.checkpoints import load_checkpoint, run_classes

    try:
        module = require_images(load_checkpoint(args.ckpt, args.model, member=args.member), args.ckpt)
    except ConfigError as e:
        print_error(e)
        return 1
    classes = run_classes(args.ckpt)
    results = predict_files(module, args.images)
    for r in results:
        if r.error is not None:
            print_error(r.line())
        elif not args.json:
            print(r.line(classes))
    if args.json:
        print("[\n" + ",\n".join(json.dumps(r.as_dict()) for r in results) + "\n]")  # one object per line
    if args.show is not None:
        try:
            args.show.parent.mkdir(parents=True, exist_ok=True)
            predictions_figure(results, classes).savefig(args.show, dpi=100)
        except OSError as e:
            print_error(unwritable(e, fix="pass --show a writable file path") or one_line(e))
            return 1
        print(f"wrote {args.show}", file=sys.stderr)
    return 1 if any(r.error is not None for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
