"""Evaluate a checkpoint on the test split: `python scripts/evaluate.py ckpt_path=PATH [data=...] [member=K|ensemble]`.

A population checkpoint reports the mean over its members with the 95% interval and the ensemble's
accuracy; member=K evaluates member K alone, member=ensemble the averaged probabilities.
"""

import hydra
from omegaconf import DictConfig

from backprop_lab.training import cli
from backprop_lab.training.evaluate import evaluate


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    metrics = cli.run(evaluate, cfg)
    line = f"test/acc {metrics['test/acc']:.4f}  test/loss {metrics['test/loss']:.4f}"
    if metrics.get("test/acc_ci95") is not None and cfg.get("member") is None:
        line += f"  (mean of {metrics['population']} members, 95% CI +/- {metrics['test/acc_ci95']:.4f};"
        line += f" ensemble {metrics['ensemble/test_acc']:.4f})"
    print(f"{line}  ({metrics['data_source']})")


if __name__ == "__main__":
    cli.hydra_entry(main)
