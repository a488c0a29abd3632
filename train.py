"""Train the lecture's MLP: `python train.py [overrides]`, or a sweep with `python train.py -m ...`.

Set BACKPROP_LAB_VERBOSE=1 to see the traceback behind a one-line error.
"""

import hydra
from omegaconf import DictConfig

from backprop_lab.training import cli


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from backprop_lab.training.train import train  # here: Hydra's own errors and --help come before Lightning loads

    metrics = cli.run(train, cfg)
    return metrics.get(cfg.optimized_metric)


if __name__ == "__main__":
    cli.hydra_entry(main)
