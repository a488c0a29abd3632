"""Test scaffolding: run train.py, and once training starts save last.ckpt over and over until killed.

    python tests/write_checkpoints.py [train.py overrides...]

Each save goes through the project's trainer (its checkpoint plugin), as an epoch end or an
interrupt would; "saved N" is printed after each.
"""

import runpy
import sys
from pathlib import Path

import lightning as L

from backprop_lab.training import train as training


class SaveForever(L.Callback):
    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_start(self, trainer, pl_module):
        n = 0
        while True:
            trainer.save_checkpoint(self.path)
            n += 1
            print(f"saved {n}", flush=True)


build_trainer = training.build_trainer


def build_trainer_saving_forever(cfg, out):
    trainer, *rest = build_trainer(cfg, out)
    trainer.callbacks.append(SaveForever(out / "checkpoints" / "last.ckpt"))
    return (trainer, *rest)


training.build_trainer = build_trainer_saving_forever
train_py = Path(__file__).resolve().parents[1] / "train.py"
sys.argv[0] = str(train_py)
runpy.run_path(str(train_py), run_name="__main__")
