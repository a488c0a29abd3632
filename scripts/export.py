"""Export a checkpoint as an ONNX or TorchScript file that outputs class probabilities, for other runtimes.

    python scripts/export.py --ckpt PATH --format onnx|torchscript [--member K|ensemble] [--out FILE]

The file maps x (B, 784) float32 in [0, 1], any batch size B, to the class probabilities predict.py prints
(B, 10); a population checkpoint exports the ensemble (its members' probabilities averaged) unless
--member K picks one. --out defaults to a file beside the checkpoint (last.ckpt -> last.onnx, last-member3.onnx).
A bad checkpoint, member, format or output path is a one-line error, exit status 1 (docs/export.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backprop_lab.errors import ConfigError, print_error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, type=Path, help="a checkpoint written by train.py")
    parser.add_argument("--format", required=True, metavar="onnx|torchscript", help="the file format")
    parser.add_argument("--member", metavar="K|ensemble", help="a population's member K (default: the ensemble)")
    parser.add_argument("--out", type=Path, metavar="FILE", help="where to write (default: beside the checkpoint)")
    args = parser.parse_args(argv)
    from backprop_lab.training.export import export  # after the arguments: --help comes before torch loads

    member = int(args.member) if args.member is not None and args.member.lstrip("-").isdigit() else args.member
    try:
        out = export(args.ckpt, args.format, member, args.out)
    except ConfigError as e:
        print_error(e)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
