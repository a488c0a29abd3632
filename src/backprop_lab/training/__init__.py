"""The training shell: the LightningModule (the system), its callbacks, checkpoint IO, config checks,
train(cfg) and evaluate(cfg), and the one-line errors of the entry points.

Only `train.py`/`evaluate.py` here read the Hydra config; everything they build takes plain,
typed arguments. Nothing is imported here, so `training.cli` stays quick to load.
"""
