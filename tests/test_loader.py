"""InMemoryLoader: each index once per epoch in a seeded order, DDP shards, blocks of mini-batches, and exact
resume mid-epoch (by itself and through a Lightning checkpoint)."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch
from lightning.fabric.utilities.types import _Stateful

from backprop_lab.data import Block, InMemoryLoader


def loader(n=103, **kw) -> InMemoryLoader:
    kw = {"batch_size": 10, "shuffle": True, "seed": 5, **kw}
    return InMemoryLoader(torch.arange(n).float().unsqueeze(1).repeat(1, 3), torch.arange(n), **kw)


def epoch_order(dl: InMemoryLoader) -> list[int]:
    batches = list(dl)
    assert all(torch.equal(x[:, 0].long(), y) for x, y in batches)  # x rows travel with their y
    return torch.cat([y for _, y in batches]).tolist()


def test_each_index_once_per_epoch_and_epochs_differ():
    dl = loader()
    assert len(dl) == 11 and [len(y) for _, y in dl][-1] == 3
    first = epoch_order(dl)
    assert sorted(first) == list(range(103)) and first != list(range(103))
    assert epoch_order(dl) == first  # no set_epoch: same epoch, same order
    assert dl.sampler is dl and isinstance(dl, _Stateful)  # what Lightning looks for
    _set_sampler_epoch(dl, 1)  # what Lightning's fit loop calls each epoch
    second = epoch_order(dl)
    assert dl.epoch == 1 and sorted(second) == list(range(103)) and second != first
    again = loader()
    again.set_epoch(1)
    assert epoch_order(again) == second and epoch_order(loader(seed=6)) != first
    assert epoch_order(loader(shuffle=False)) == list(range(103))
    assert len(loader(drop_last=True)) == 10 and len(epoch_order(loader(drop_last=True))) == 100


@pytest.mark.parametrize("n", [100, 103])
def test_two_ranks_get_disjoint_equal_shards(n):
    for epoch in (0, 1):
        shards = []
        for rank in (0, 1):
            dl = loader(n, rank=rank, world_size=2)
            dl.set_epoch(epoch)
            shards.append(epoch_order(dl))
        assert len(shards[0]) == len(shards[1]) == n // 2 and not set(shards[0]) & set(shards[1])
        assert len(set(shards[0] + shards[1])) == n - n % 2  # training drops the odd one out
    evals = [epoch_order(loader(n, shuffle=False, rank=r, world_size=2, pad=True)) for r in (0, 1)]
    assert len(evals[0]) == len(evals[1]) == -(-n // 2) and set(evals[0] + evals[1]) == set(range(n))


def test_resume_mid_epoch_yields_exactly_the_rest():
    full = loader()
    full.set_epoch(2)
    expected = [y.tolist() for _, y in full]
    run = loader()
    run.set_epoch(2)
    it = iter(run)
    got = [next(it)[1].tolist() for _ in range(4)]
    state = run.state_dict()
    assert state == {"epoch": 2, "batches_yielded": 4}
    resumed = loader()
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # Lightning sets the same epoch again: the resume must survive it
    it = iter(resumed)
    got += [next(it)[1].tolist() for _ in range(3)]
    assert resumed.state_dict() == {"epoch": 2, "batches_yielded": 7}  # counts on, not from 0
    again = loader()
    again.load_state_dict(resumed.state_dict())
    got += [y.tolist() for _, y in again]
    assert got == expected and again.state_dict()["batches_yielded"] == len(again)
    again.set_epoch(3)
    assert len(epoch_order(again)) == 103  # the next epoch is whole
    skipped = loader()
    skipped.skip_next(9)
    skipped.set_epoch(4)  # a different epoch cancels the skip
    assert len(list(skipped)) == 11
    with pytest.raises(ValueError):
        skipped.skip_next(12)


def unblock(items) -> list[list[int]]:
    """The mini-batches' labels, whether the loader yields (x, y) batches or Blocks of them."""
    out = []
    for item in items:
        if isinstance(item, Block):
            assert item.x.dim() == 3 and item.y.dim() == 2 and len(item.x) == len(item.y)
            assert torch.equal(item.x[..., 0].long(), item.y)  # x rows travel with their y
            out += item.y.tolist()
        else:
            out.append(item[1].tolist())
    return out


def loader_at(epoch: int, **kw) -> InMemoryLoader:
    dl = loader(**kw)
    dl.set_epoch(epoch)
    return dl


def test_blocks_hold_the_same_batches_in_the_same_order():
    expected = unblock(loader_at(2))
    blocks = loader_at(2, block=4)
    items = list(blocks)
    assert [tuple(b.y.shape) for b in items] == [(4, 10), (4, 10), (2, 10), (1, 3)]  # the partial batch alone
    assert len(blocks) == 4 and unblock(items) == expected
    assert blocks.state_dict() == {"epoch": 2, "batches_yielded": 11}  # positions count mini-batches
    dropped = loader(block=4, drop_last=True)
    assert len(dropped) == 3 and [tuple(b.y.shape) for b in dropped] == [(4, 10), (4, 10), (2, 10)]
    assert unblock(loader(block=100)) == unblock(loader()) and len(loader(block=100)) == 2
    with pytest.raises(ValueError, match="block"):
        loader(block=0)


def test_resume_mid_epoch_with_another_block_length():
    expected = unblock(loader_at(1))
    first = loader_at(1, block=3)
    it = iter(first)
    got = unblock([next(it), next(it)])  # 6 mini-batches
    for block in (None, 4):  # resume the same position with plain batches, or other blocks
        resumed = loader(block=block)
        resumed.load_state_dict(first.state_dict())
        resumed.set_epoch(1)
        assert got + unblock(resumed) == expected


def test_lightning_checkpoint_resumes_mid_epoch(tmp_path):
    """Lightning saves the loader's state in the fit loop and restores it: no batch lost or repeated."""

    class Stop(Exception):
        pass

    class Net(L.LightningModule):
        def __init__(self, stop=None):
            super().__init__()
            self.w, self.seen, self.stop = torch.nn.Parameter(torch.zeros(1)), [], stop

        def training_step(self, batch, i):
            self.seen.append((self.current_epoch, batch[1].tolist()))
            return (self.w * batch[0][:, 0]).sum()

        def on_train_batch_end(self, outputs, batch, i):
            if (self.current_epoch, i) == self.stop:  # as ModelCheckpoint(every_n_train_steps) would
                self.trainer.save_checkpoint(tmp_path / "mid.ckpt")
                raise Stop

        def validation_step(self, batch, i):  # Lightning inspects eval loaders more than train ones
            self.log("val", batch[0].sum())

        configure_optimizers = lambda self: torch.optim.SGD(self.parameters(), lr=0.0)

    kw = dict(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=tmp_path,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full, part, rest = Net(), Net(stop=(1, 1)), Net()
        L.Trainer(**kw).fit(full, loader(35), loader(7, shuffle=False))
        with pytest.raises(Stop):
            L.Trainer(**kw).fit(part, loader(35), loader(7, shuffle=False))
        L.Trainer(**kw).fit(rest, loader(35), loader(7, shuffle=False), ckpt_path=tmp_path / "mid.ckpt")
    assert full.seen[0] != full.seen[4]  # epochs are shuffled differently
    assert part.seen + rest.seen == full.seen
