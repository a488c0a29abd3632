"""Speed and memory of the hand-written backprop, side by side.

    python scripts/benchmark.py [--json PATH] [--tiny] [--device cpu|cuda|both|auto]


Measures, side by side in one run (medians of interleaved repeats after warm-up):
  manual_vs_reference_step         one SGD step, ManualMLP / ReferenceMLP (on the devices --device selects)
  manual_vs_reference_saved_bytes  bytes saved for backward, manual / reference (saved_tensors_hooks)
  lightning_vs_plain_epoch         one epoch through the project's Lightning path / a bare PyTorch loop
  textbook_vs_project_epoch        Nielsen's network.py (NumPy, per example) epoch / the project's epoch
  cuda_throughput                  samples/s and peak memory at batch 1000 (CUDA only)
and prints one table with PASS/MISS beside each target (nothing is asserted). The measurement code
is in scripts/bench/ (beside this script, not in the installed package). --tiny does every
measurement on almost no work (for tests).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every figure and raw time here")
    parser.add_argument("--tiny", action="store_true", help="almost no work: checks that every key is written")
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda", "both", "auto"),
        default="auto",
        help="where the steps and epochs run (cuda: the GPU only); auto: both with a GPU, else cpu",
    )
    parser.add_argument(
        "--repeats", type=int, help="timed repeats per side of the step and textbook figures (default 15)"
    )
    parser.add_argument("--epoch-repeats", type=int, help="timed Lightning/bare epoch pairs per batch size (default 5)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own choice)")
    args = parser.parse_args(argv)

    import torch

    import bench  # scripts/bench: python puts this script's folder first on sys.path
    from backprop_lab.errors import print_error

    if args.threads:
        torch.set_num_threads(args.threads)
    budget = bench.Budget.tiny_budget() if args.tiny else bench.Budget()
    for name in ("repeats", "epoch_repeats"):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                parser.error(f"--{name.replace('_', '-')} must be >= 1")
            setattr(budget, name, value)
    try:
        bench.resolve_device(args.device)
    except ValueError as e:
        print_error(e)
        return 2
    t0 = time.perf_counter()

    def log(line: str) -> None:
        print(f"[bench {time.perf_counter() - t0:5.1f} s] {line}", file=sys.stderr, flush=True)

    results = bench.run(budget, args.device, log=log)
    print(bench.format_table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
