"""The command-line entry points, one module each: `train` and `evaluate` (@hydra.main, configs from the package
backprop_lab.conf) and `predict` (argparse). The console scripts backprop-lab-train, -evaluate and -predict call
them, and so do the thin train.py, scripts/evaluate.py and scripts/predict.py of a checkout.

Hydra names the job after the module that holds the task function, so the modules are named as the jobs
(train.log, evaluate.log in a run folder; the SLURM job name).
"""
