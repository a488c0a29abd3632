"""Train the lecture's MLP: `backprop-lab-train [overrides]` or `python train.py [overrides]`; a sweep with `-m`.

Set BACKPROP_LAB_VERBOSE=1 to see the traceback behind a one-line error.
"""

import hydra
from omegaconf import DictConfig

from backprop_lab.paths import CONFIG_PATH
from backprop_lab.training import cli


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def main(cfg: DictConfig) -> float:
    """One run (or one job of a sweep); returns the value of `optimized_metric` to a sweeper, always a float."""
    from backprop_lab.training.search import objective
    from backprop_lab.training.train import train  # here: Hydra's own errors and --help come before Lightning loads

    metrics = cli.run(train, cfg)
    # NaN for a run without the metric (failed), never None
    return objective(metrics, cfg.optimized_metric, cfg.paths.output_dir)


def run() -> None:
    """The console script: `main` with Hydra's own errors (unknown option, bad override) as one line too."""
    cli.hydra_entry(main)


if __name__ == "__main__":
    run()
