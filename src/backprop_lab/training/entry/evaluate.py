"""Evaluate a checkpoint on the test split: `backprop-lab-evaluate ckpt_path=PATH [data=...] [member=K|ensemble]`
(or `python scripts/evaluate.py ...`).

A population checkpoint reports the mean over its members with the 95% interval and the ensemble's
accuracy; member=K evaluates member K alone, member=ensemble the averaged probabilities.
"""

import hydra
from omegaconf import DictConfig

from backprop_lab.paths import CONFIG_PATH
from backprop_lab.training import cli


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from backprop_lab.training.evaluate import evaluate  # after Hydra's own errors and --help, as in train

    metrics = cli.run(evaluate, cfg)
    line = f"test/acc {metrics['test/acc']:.4f}  test/loss {metrics['test/loss']:.4f}"
    if metrics.get("test/acc_ci95") is not None and cfg.get("member") is None:
        line += f"  (mean of {metrics['population']} members, 95% CI +/- {metrics['test/acc_ci95']:.4f};"
        line += f" ensemble {metrics['ensemble/test_acc']:.4f})"
    print(f"{line}  ({metrics['data_source']})")


def run() -> None:
    """The console script: `main` with Hydra's own errors as one line too."""
    cli.hydra_entry(main)


if __name__ == "__main__":
    run()
