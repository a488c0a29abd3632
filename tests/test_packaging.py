"""`pip install .` gives the console scripts, and they work outside the checkout: the configs come from the
installed package, outputs land in the current directory's outputs/, and a user's own config folder joins
through Hydra's search path.

The project is installed from a copy of its sources with `pip install --target` (no dependencies: this
interpreter's are used), and that target goes first on PYTHONPATH, before the editable install of the checkout.
A marker key added to the copy's conf/train.yaml and conf/evaluate.yaml shows which configs a run composed.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from backprop_lab.data.idx import load_subset
from conftest import ROOT, TINY

SCRIPTS = {
    "backprop-lab-train": "backprop_lab.training.entry.train:run",
    "backprop-lab-evaluate": "backprop_lab.training.entry.evaluate:run",
    "backprop-lab-predict": "backprop_lab.training.entry.predict:main",
}
MARKER = "installed_copy_marker"
JUNK = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The folder pip installed the package into (--target), from a copy of the checkout's sources."""
    tmp = tmp_path_factory.mktemp("packaging")
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "conf", source / "conf", ignore=JUNK)
    shutil.copytree(ROOT / "src", source / "src", ignore=JUNK, symlinks=True)  # src/backprop_lab/conf: a link
    for name in ("train.yaml", "evaluate.yaml"):
        with open(source / "conf" / name, "a") as f:
            f.write(f"\n{MARKER}: true\n")
    target = tmp / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-compile"]
    subprocess.run([*pip, "--target", str(target), str(source)], check=True, capture_output=True, timeout=300)
    return target


def start(installed: Path, script: str, *args: str, cwd: Path) -> subprocess.Popen:
    """A console script as a user starts it, from `cwd`, with the installed copy first on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed), os.environ.get("PYTHONPATH", "")])}
    env.pop("BACKPROP_LAB_VERBOSE", None)
    command = [str(installed / "bin" / script), *args]
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_wheel_declares_the_console_scripts_and_ships_the_configs(installed):
    (info,) = installed.glob("backprop_lab-*.dist-info")
    entry_points = configparser.ConfigParser()
    entry_points.read(info / "entry_points.txt")
    assert dict(entry_points["console_scripts"]) == SCRIPTS
    assert all((installed / "bin" / name).is_file() for name in SCRIPTS)
    conf = installed / "backprop_lab" / "conf"
    assert conf.is_dir() and not conf.is_symlink() and (conf / "__init__.py").is_file()
    shipped = {p.relative_to(conf) for p in conf.rglob("*.yaml")}
    assert shipped == {p.relative_to(ROOT / "conf") for p in (ROOT / "conf").rglob("*.yaml")}


def test_the_console_scripts_train_evaluate_and_predict_outside_the_checkout(installed, tmp_path):
    """From an empty folder, each a new interpreter as a user starts it: one tiny epoch of an experiment from the
    user's config folder (the rest from the package), then evaluate and predict on its checkpoint. Nothing on
    stderr a user cannot act on: no deprecation warnings, and predict's bad file is its one error line."""
    mine = tmp_path / "my_conf" / "experiment"
    mine.mkdir(parents=True)
    (mine / "tiny_mine.yaml").write_text("# @package _global_\nseed: 7\nmodel:\n  hidden: [9]\n")
    work = tmp_path / "work"
    work.mkdir()
    searchpath = f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]"
    train = start(installed, "backprop-lab-train", *TINY, "experiment=tiny_mine", searchpath, cwd=work)
    _, err = train.communicate(timeout=300)
    assert train.returncode == 0, err[-3000:]
    assert "deprecated" not in err.lower(), err[-3000:]
    (run_dir,) = (work / "outputs" / "runs").iterdir()  # outputs/ of the current folder
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert config[MARKER] is True  # composed from the installed package's configs, not the checkout's
    assert config["seed"] == 7 and config["model"]["hidden"] == [9]  # and the user's experiment
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 1 and metrics["test/acc"] > 0
    assert metrics["provenance"]["git_commit"] is None  # an installed copy is no checkout's code
    assert (run_dir / "train.log").is_file()

    ckpt = run_dir / "checkpoints" / "last.ckpt"
    digit, junk = work / "digit.png", work / "notes.png"
    Image.fromarray(load_subset()[0][0].reshape(28, 28).numpy()).save(digit)
    junk.write_text("not an image")
    evaluate = start(installed, "backprop-lab-evaluate", f"ckpt_path={ckpt}", "data=mnist_subset", cwd=work)
    predict = start(installed, "backprop-lab-predict", "--ckpt", str(ckpt), str(junk), str(digit), cwd=work)
    (out, err), (predicted, predict_err) = evaluate.communicate(timeout=300), predict.communicate(timeout=300)
    assert evaluate.returncode == 0, err[-3000:]
    assert "deprecated" not in err.lower(), err[-3000:]
    assert out.splitlines()[-1].startswith("test/acc ") and out.endswith("(mnist-subset)\n")
    (evaluation,) = (work / "outputs" / "evaluations").iterdir()
    assert yaml.safe_load((evaluation / ".hydra" / "config.yaml").read_text())[MARKER] is True
    assert predict.returncode == 1  # a bad file: reported, the rest classified
    assert predict_err.startswith(f"error: {junk}: not an image") and predict_err.count("\n") == 1, predict_err
    assert predicted.startswith(f"{digit}: ") and predicted.count("\n") == 1
    assert sorted(p.name for p in work.iterdir()) == ["digit.png", "notes.png", "outputs"]
