"""Test scaffolding: real `python train.py` processes, forked from this warm one.

    python tests/train_forks.py

Reads one JSON request a line on stdin, {"args": [train.py overrides...], "out": PREFIX, "signal": [NAME, STEP]
or null, "save_forever": bool}, forks a child that runs train.py as `python train.py args...` would (as
__main__, its stdout and stderr in PREFIX.stdout and PREFIX.stderr), prints `started PID`, and once the child
is gone `exited PID CODE` (CODE as subprocess reports it: the exit status, or -N after signal N). Each child is
a process of its own, which signals and SIGKILL reach as they would any run; forking spares each the ~12 s
import of torch and Lightning. End of input ends this process.

Scaffolding the requests can add to the child's trainer:
  signal: send the signal NAME to the child itself during global step STEP, through the real handlers,
          exactly as a Ctrl-C or a cluster's SIGTERM would.
  save_forever: once training starts, save last.ckpt over and over through the project's trainer (its
          checkpoint plugin), as an epoch end or an interrupt would, printing "saved N" after each.
"""

import json
import os
import runpy
import signal
import sys
import traceback
from pathlib import Path

import lightning as L

from backprop_lab.training import train as training

TRAIN_PY = Path(__file__).resolve().parents[1] / "train.py"


class SendSignal(L.Callback):
    def __init__(self, signum: int, step: int) -> None:
        self.signum, self.step = signum, step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):  # inside a block of steps
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


class SaveForever(L.Callback):
    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_start(self, trainer, pl_module):
        n = 0
        while True:
            trainer.save_checkpoint(self.path)
            n += 1
            print(f"saved {n}", flush=True)


def child(request: dict) -> int:
    """Runs in the forked child: train.py with the request's arguments and scaffolding; its exit code."""
    for fd, suffix in ((1, ".stdout"), (2, ".stderr")):
        os.dup2(os.open(request["out"] + suffix, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    build_trainer = training.build_trainer

    def build_trainer_with_scaffolding(cfg, out):
        trainer, *rest = build_trainer(cfg, out)
        if request.get("signal"):
            name, step = request["signal"]
            trainer.callbacks.append(SendSignal(getattr(signal, name), step))
        if request.get("save_forever"):
            trainer.callbacks.append(SaveForever(out / "checkpoints" / "last.ckpt"))
        return (trainer, *rest)

    training.build_trainer = build_trainer_with_scaffolding
    sys.argv = [str(TRAIN_PY), *request["args"]]
    try:
        runpy.run_path(str(TRAIN_PY), run_name="__main__")
        return 0
    except SystemExit as e:  # as the interpreter exits: None is 0, a message is printed and exits 1
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1


for line in iter(sys.stdin.readline, ""):
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = child(request)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)  # never back into this loop
    print(f"started {pid}", flush=True)
    _, status = os.waitpid(pid, 0)
    print(f"exited {pid} {os.waitstatus_to_exitcode(status)}", flush=True)
