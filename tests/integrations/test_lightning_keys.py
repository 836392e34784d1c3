"""ResumableCheckpointIO keys: two checkpoint paths never share one entry of the store."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lightning")

from resumable import ConfigurationError, CorruptCheckpointError, Storage
from resumable.lightning import ResumableCheckpointIO


def store_folders(root: Path) -> list[str]:
    """Every folder under ``root``, relative to it, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir())


def test_same_name_in_different_folders_keeps_each(tmp_path: Path) -> None:
    """The reported loss: epoch=N/x.ckpt rotated out one by one leaves epoch=2's in the store."""
    store, ck = tmp_path / "store", tmp_path / "ck"
    io = ResumableCheckpointIO(store, dirpath=ck)
    for epoch in range(3):
        io.save_checkpoint({"epoch": epoch}, ck / f"epoch={epoch}" / "x.ckpt")
        if epoch:
            io.remove_checkpoint(ck / f"epoch={epoch - 1}" / "x.ckpt")
    assert io.stored_names() == ["epoch=2/x.ckpt"]
    assert io.load_checkpoint(ck / "epoch=2" / "x.ckpt")["epoch"] == 2
    assert store_folders(store) == ["epoch=2", "epoch=2/x.ckpt"]  # no empty epoch folders
    io.teardown()


def test_keys_are_paths_inside_dirpath(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative, an absolute and a linked spelling of one checkpoint have one key."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    monkeypatch.chdir(tmp_path)
    io = ResumableCheckpointIO(tmp_path / "store", dirpath="link")  # Lightning resolves links
    assert io.key_of(real / "epoch=1" / "last.ckpt") == "epoch=1/last.ckpt"
    assert io.key_of("link/epoch=1/last.ckpt") == "epoch=1/last.ckpt"
    assert io.key_of(real / "last.ckpt") == "last.ckpt"
    assert io.key_of(tmp_path / "elsewhere" / "final.ckpt") == "final.ckpt"
    io.teardown()


def test_without_dirpath_a_second_folder_is_refused(tmp_path: Path) -> None:
    """Without dirpath, a name saved from a second folder is refused; the first one stays."""
    io = ResumableCheckpointIO(tmp_path / "store")
    io.save_checkpoint({"epoch": 0}, tmp_path / "ck" / "epoch=0" / "x.ckpt")
    with pytest.raises(ConfigurationError, match=r"key 'x\.ckpt'.*dirpath=") as exc:
        io.save_checkpoint({"epoch": 1}, tmp_path / "ck" / "epoch=1" / "x.ckpt")
    assert isinstance(exc.value, ValueError)
    assert "epoch=0" in str(exc.value)  # names the checkpoint it would have replaced
    assert io.load_checkpoint(tmp_path / "ck" / "epoch=0" / "x.ckpt")["epoch"] == 0
    io.save_checkpoint({"epoch": 0, "again": True}, tmp_path / "ck" / "epoch=0" / "x.ckpt")
    io.teardown()


def test_a_removed_checkpoint_frees_its_key(tmp_path: Path) -> None:
    """Once a checkpoint is removed, another path may use its key."""
    io = ResumableCheckpointIO(tmp_path / "store")
    io.save_checkpoint({"epoch": 0}, tmp_path / "a" / "last.ckpt")
    io.remove_checkpoint(tmp_path / "a" / "last.ckpt")
    io.save_checkpoint({"epoch": 1}, tmp_path / "b" / "last.ckpt")
    assert io.stored_names() == ["last.ckpt"]
    assert io.load_checkpoint(tmp_path / "b" / "last.ckpt")["epoch"] == 1
    io.teardown()


def test_removing_a_path_never_saved_keeps_the_holder(tmp_path: Path) -> None:
    """Removing a same-named file of another folder leaves the saved checkpoint's snapshots."""
    io = ResumableCheckpointIO(tmp_path / "store")
    io.save_checkpoint({"epoch": 0}, tmp_path / "a" / "last.ckpt")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "last.ckpt").write_bytes(b"not saved through the plugin")
    io.remove_checkpoint(tmp_path / "b" / "last.ckpt")
    assert not (tmp_path / "b" / "last.ckpt").exists()
    assert io.stored_names() == ["last.ckpt"]
    assert io.load_checkpoint(tmp_path / "a" / "last.ckpt")["epoch"] == 0
    io.teardown()


def test_outside_dirpath_meets_inside_is_refused(tmp_path: Path) -> None:
    """A checkpoint outside dirpath, keyed by its name, may not take the key of one inside."""
    io = ResumableCheckpointIO(tmp_path / "store", dirpath=tmp_path / "ck")
    io.save_checkpoint({"epoch": 0}, tmp_path / "ck" / "last.ckpt")
    with pytest.raises(ConfigurationError, match="save checkpoints inside dirpath"):
        io.save_checkpoint({"epoch": 1}, tmp_path / "export" / "last.ckpt")
    io.save_checkpoint({"epoch": 1}, tmp_path / "export" / "final.ckpt")
    assert io.stored_names() == ["final.ckpt", "last.ckpt"]
    io.teardown()


def test_another_machine_restores_nested_keys_where_they_were(tmp_path: Path) -> None:
    """A fresh machine with another dirpath restores last files in their folders and loads them."""
    store = tmp_path / "store"
    first = ResumableCheckpointIO(store, dirpath=tmp_path / "machine-a" / "ck")
    first.save_checkpoint({"step": 3}, tmp_path / "machine-a" / "ck" / "last.ckpt")
    first.save_checkpoint({"step": 4}, tmp_path / "machine-a" / "ck" / "run=2" / "last.ckpt")
    first.save_checkpoint({"step": 5}, tmp_path / "machine-a" / "ck" / "run=2" / "x.ckpt")
    first.teardown()
    there = tmp_path / "machine-b" / "ck"
    second = ResumableCheckpointIO(store, dirpath=there)
    assert sorted(str(p.relative_to(there)) for p in there.rglob("*.ckpt")) == [
        "last.ckpt",
        "run=2/last.ckpt",
    ]
    assert second.load_checkpoint(there / "run=2" / "last.ckpt")["step"] == 4
    assert second.load_checkpoint(there / "run=2" / "x.ckpt")["step"] == 5  # from the store
    assert not (there / "run=2" / "x.ckpt").exists()
    assert not list(there.rglob(".restore-*"))  # no scratch folder left behind
    second.teardown()


def test_nested_keys_are_signed_under_their_key(tmp_path: Path) -> None:
    """A signed snapshot copied from epoch=0/x.ckpt into epoch=1/x.ckpt's folder does not load."""
    store, ck = tmp_path / "store", tmp_path / "ck"
    signed = Storage(keep=1, signing_key=b"k" * 32)
    io = ResumableCheckpointIO(store, dirpath=ck, storage=signed)
    io.save_checkpoint({"epoch": 0}, ck / "epoch=0" / "x.ckpt")
    io.save_checkpoint({"epoch": 1}, ck / "epoch=1" / "x.ckpt")
    io.teardown()
    shutil.rmtree(store / "epoch=1" / "x.ckpt")
    shutil.copytree(store / "epoch=0" / "x.ckpt", store / "epoch=1" / "x.ckpt")
    reader = ResumableCheckpointIO(store, dirpath=ck, storage=signed)
    with pytest.raises(CorruptCheckpointError):
        reader.load_checkpoint(ck / "epoch=1" / "x.ckpt")
    assert reader.load_checkpoint(ck / "epoch=0" / "x.ckpt")["epoch"] == 0
    reader.teardown()


def test_a_removed_checkpoint_of_a_signed_store_is_not_listed(tmp_path: Path) -> None:
    """The signed "cleared" record a removal leaves is no stored checkpoint."""
    signed = Storage(keep=1, signing_key=b"k" * 32)
    io = ResumableCheckpointIO(tmp_path / "store", dirpath=tmp_path / "ck", storage=signed)
    io.save_checkpoint({"epoch": 0}, tmp_path / "ck" / "epoch=0" / "x.ckpt")
    io.save_checkpoint({"epoch": 0}, tmp_path / "ck" / "last.ckpt")
    io.remove_checkpoint(tmp_path / "ck" / "epoch=0" / "x.ckpt")
    assert io.stored_names() == ["last.ckpt"]
    io.teardown()


def test_a_key_that_leaves_the_store_is_refused(tmp_path: Path) -> None:
    """A URL dirpath with '..' in a checkpoint path cannot make a key outside the store."""
    io = ResumableCheckpointIO(tmp_path / "store", dirpath="memory://ck")
    with pytest.raises(ConfigurationError, match=r"'\.\.'"):
        io.key_of("memory://ck/../x.ckpt")
    io.teardown()


def tiny_trainer(tmp_path: Path, plugin: ResumableCheckpointIO, ckpts: Path) -> Any:
    """A Trainer of a tiny model keeping its best checkpoint, named ``epoch=N/x.ckpt``."""
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            self.log("epoch_count", float(self.current_epoch))
            return torch.nn.functional.mse_loss(self.layer(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    checkpoints = ModelCheckpoint(
        dirpath=ckpts, filename="{epoch}/x", monitor="epoch_count", mode="max", save_top_k=1
    )
    trainer = pl.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[checkpoints],
        plugins=[plugin],
    )
    return trainer, Tiny()


def loader() -> Any:
    """Sixteen random samples in batches of four."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    return DataLoader(TensorDataset(torch.randn(16, 4), torch.randn(16, 1)), batch_size=4)


@pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning")
@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")
def test_trainer_rotation_of_one_name_keeps_the_newest(tmp_path: Path) -> None:
    """A real Trainer saving epoch=N/x.ckpt with save_top_k=1 keeps epoch 2's, which loads."""
    store, ckpts = tmp_path / "store", tmp_path / "ckpts"
    plugin = ResumableCheckpointIO(store, dirpath=ckpts)
    trainer, model = tiny_trainer(tmp_path, plugin, ckpts)
    trainer.fit(model, loader())
    again = ResumableCheckpointIO(store)
    assert again.stored_names() == ["epoch=2/x.ckpt"]
    assert (
        ResumableCheckpointIO(store, dirpath=ckpts).load_checkpoint(ckpts / "epoch=2" / "x.ckpt")[
            "epoch"
        ]
        == 2
    )
    again.teardown()


@pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning")
@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")
def test_trainer_without_dirpath_stops_before_losing_a_checkpoint(tmp_path: Path) -> None:
    """Without dirpath the same Trainer fails at epoch 1's save, epoch 0's still stored."""
    store, ckpts = tmp_path / "store", tmp_path / "ckpts"
    plugin = ResumableCheckpointIO(store)
    trainer, model = tiny_trainer(tmp_path, plugin, ckpts)
    with pytest.raises(ConfigurationError, match="dirpath="):
        trainer.fit(model, loader())
    reader = ResumableCheckpointIO(store)
    assert reader.stored_names() == ["x.ckpt"]
    assert reader.load_checkpoint(ckpts / "epoch=0" / "x.ckpt")["epoch"] == 0
    reader.teardown()
