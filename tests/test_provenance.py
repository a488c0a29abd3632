"""provenance.py and metrics.json's `provenance`: versions, the code's git commit, the device, the data files'
sha256; and the data modules say which files they read."""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
import torch
from test_data import make_idx_dir

from backprop_lab import provenance
from backprop_lab.data import MNISTDataModule, MNISTSubsetDataModule
from backprop_lab.data.idx import load_subset
from backprop_lab.training.train import train
from conftest import ROOT, compose_cfg

GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="no git on this machine")


def git(folder: Path, *args: str) -> str:
    command = [GIT, "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, check=True).stdout.strip()


def test_versions_are_those_installed():
    v = provenance.versions()
    assert v["python"] == platform.python_version()
    assert v["torch"] == torch.__version__ and v["torch"].split("+")[0] == metadata.version("torch").split("+")[0]
    for name in ("lightning", "hydra-core", "torchmetrics"):
        assert v[name] == metadata.version(name)


@needs_git
def test_git_state_of_a_checkout_clean_then_dirty(tmp_path):
    pkg = tmp_path / "repo" / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "m.py").write_text("x = 1\n")
    git(tmp_path / "repo", "init", "-q")
    git(tmp_path / "repo", "add", ".")
    git(tmp_path / "repo", "commit", "-q", "-m", "first")
    head = git(tmp_path / "repo", "rev-parse", "HEAD")
    (tmp_path / "repo" / "notes.txt").write_text("untracked files are not code changes\n")
    assert provenance.git_state(pkg) == {"git_commit": head, "git_dirty": False}
    (pkg / "m.py").write_text("x = 2\n")
    assert provenance.git_state(pkg) == {"git_commit": head, "git_dirty": True}


@needs_git
def test_git_state_is_none_for_an_untracked_copy_or_outside_git(tmp_path, monkeypatch):
    """An installed copy inside some repository (e.g. a venv in a user's project) is not that repository's code."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # git looks no further up than tmp_path
    plain = tmp_path / "plain"
    plain.mkdir()
    assert provenance.git_state(plain) == {"git_commit": None, "git_dirty": None}
    user = tmp_path / "project"
    site = user / ".venv" / "site-packages" / "pkg"
    site.mkdir(parents=True)
    (site / "m.py").write_text("x = 1\n")
    (user / "README").write_text("a user's project\n")
    git(user, "init", "-q")
    git(user, "add", "README")
    git(user, "commit", "-q", "-m", "theirs")
    assert provenance.git_state(site) == {"git_commit": None, "git_dirty": None}


def test_git_state_without_git_is_none_not_an_error(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert provenance.git_state() == {"git_commit": None, "git_dirty": None}


@needs_git
def test_git_state_of_this_package_is_this_checkout():
    """The checkout holding the package, whatever the current directory."""
    state = provenance.git_state()
    assert state["git_commit"] == git(ROOT, "rev-parse", "HEAD") and isinstance(state["git_dirty"], bool)


def test_device_name_names_the_cpu_or_the_gpu():
    name = provenance.device_name("cpu")
    assert isinstance(name, str) and name and name == provenance.cpu_name()
    if Path("/proc/cpuinfo").is_file() and "model name" in Path("/proc/cpuinfo").read_text():
        assert name in Path("/proc/cpuinfo").read_text()
    if torch.cuda.is_available():
        assert provenance.device_name(torch.device("cuda", 0)) == torch.cuda.get_device_name(0)


def test_checksums_are_sha256_and_none_for_a_vanished_file(tmp_path):
    data = tmp_path / "d.bin"
    data.write_bytes(bytes(range(256)) * 5000)  # over one read chunk
    sums = provenance.checksums([data, tmp_path / "gone"])
    assert sums == {str(data): hashlib.sha256(data.read_bytes()).hexdigest(), str(tmp_path / "gone"): None}


def test_the_data_modules_name_the_files_they_read(tmp_path):
    subset_file = load_subset()[2]
    subset = MNISTSubsetDataModule()
    assert subset.files == []
    subset.setup()
    assert subset.files == [subset_file]
    written = make_idx_dir(tmp_path / "MNIST" / "raw", gz="mixed")  # four small IDX files, two of them gzipped
    full = MNISTDataModule(data_dir=str(tmp_path), val_size=5, download=False)
    full.setup()
    assert sorted(full.files) == sorted(map(str, written))
    fallback = MNISTDataModule(data_dir=str(tmp_path / "empty"), val_size=5, download=False)
    with pytest.warns(UserWarning, match="5,000-DIGIT"):
        fallback.setup()
    assert fallback.files == [subset_file]


def test_a_runs_metrics_json_records_its_provenance(tmp_path):
    train(compose_cfg(tmp_path, "test=false", "data.train_size=100"))
    p = json.loads((tmp_path / "metrics.json").read_text())["provenance"]
    assert set(p) == {"versions", "git_commit", "git_dirty", "device", "data_source", "data_files"}
    assert p["versions"] == provenance.versions() and p["device"] == provenance.cpu_name()
    assert p["data_source"] == "mnist-subset"
    subset_file = load_subset()[2]
    assert p["data_files"] == {subset_file: hashlib.sha256(Path(subset_file).read_bytes()).hexdigest()}
    if GIT is not None:
        assert p["git_commit"] == git(ROOT, "rev-parse", "HEAD")
