"""Test scaffolding: run train.py and send this very process SIGNAL during global step STEP.

    python tests/signal_at_step.py SIGTERM 7 [train.py overrides...]

The signal goes through the real handlers, exactly as a Ctrl-C or a cluster's SIGTERM would.
"""

import os
import runpy
import signal
import sys
from pathlib import Path

import lightning as L

from backprop_lab.training import train as training

SIGNAL, STEP = getattr(signal, sys.argv.pop(1)), int(sys.argv.pop(1))


class SendSignal(L.Callback):
    def on_before_optimizer_step(self, trainer, pl_module, optimizer):  # inside a block of steps
        if trainer.global_step == STEP:
            os.kill(os.getpid(), SIGNAL)


build_trainer = training.build_trainer


def build_trainer_with_signal(cfg, out):
    trainer, *rest = build_trainer(cfg, out)
    trainer.callbacks.append(SendSignal())
    return (trainer, *rest)


training.build_trainer = build_trainer_with_signal
train_py = Path(__file__).resolve().parents[1] / "train.py"
sys.argv[0] = str(train_py)
runpy.run_path(str(train_py), run_name="__main__")
