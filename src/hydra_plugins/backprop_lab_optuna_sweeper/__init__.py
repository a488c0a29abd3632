"""An Optuna sweeper for Hydra (`hydra/sweeper=optuna`, used by `hparams_search=optuna`), written for this
project because hydra-optuna-sweeper 1.3.0, the newest release, pins optuna<3.

It runs a study in SQLite through Optuna's ask-and-tell interface, launches each batch of trials through
the configured Hydra launcher, resumes a stopped study, and lets each job report its epochs to its trial
so that the pruner can stop it (backprop_lab.training.search). Hydra finds it through the `hydra_plugins`
namespace package; its modules whose names start with `_` are imported only when a search runs.
"""
