"""Evaluate a checkpoint on the test split: `python scripts/evaluate.py ckpt_path=PATH [data=...]`."""

import hydra
from omegaconf import DictConfig

from backprop_lab.training import cli
from backprop_lab.training.evaluate import evaluate


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    metrics = cli.run(evaluate, cfg)
    print(f"test/acc {metrics['test/acc']:.4f}  test/loss {metrics['test/loss']:.4f}  ({metrics['data_source']})")


if __name__ == "__main__":
    cli.hydra_entry(main)
