"""Train the lecture's MLP: `python train.py [overrides]`, or a sweep with `python train.py -m ...`.

Set BACKPROP_LAB_VERBOSE=1 to see the traceback behind a one-line error.
"""

import hydra
from omegaconf import DictConfig

from backprop_lab import cli


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = cli.run(cli.train, cfg)  # backprop_lab.training.train(cfg), after a quick config check
    return metrics.get(cfg.optimized_metric)


if __name__ == "__main__":
    cli.hydra_entry(main)
