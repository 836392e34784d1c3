"""ResumableCheckpointIO removes what it made for a rotated-out checkpoint, and nothing else."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lightning")

from resumable.lightning import ResumableCheckpointIO


def folders(root: Path) -> list[str]:
    """Every folder under ``root``, relative to it, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir())


def test_rotation_leaves_no_folder_locally_or_in_the_store(tmp_path: Path) -> None:
    """A removed checkpoint takes its store folder and the local folders its save made."""
    store, ckpts = tmp_path / "store", tmp_path / "ckpts"
    io = ResumableCheckpointIO(store)
    for epoch in range(3):
        io.save_checkpoint({"epoch": epoch}, ckpts / f"epoch={epoch}" / f"step={epoch}.ckpt")
        if epoch:
            io.remove_checkpoint(ckpts / f"epoch={epoch - 1}" / f"step={epoch - 1}.ckpt")
    assert folders(ckpts) == ["epoch=2"]
    assert folders(store) == ["step=2.ckpt"]
    assert io.stored_names() == ["step=2.ckpt"]
    io.teardown()


def test_folders_it_did_not_make_stay(tmp_path: Path) -> None:
    """dirpath, and a folder that existed before the save, stay when the checkpoint goes."""
    ckpts = tmp_path / "ckpts"
    (ckpts / "mine").mkdir(parents=True)
    io = ResumableCheckpointIO(tmp_path / "store")
    io.save_checkpoint({}, ckpts / "mine" / "a.ckpt")
    io.save_checkpoint({}, ckpts / "b.ckpt")
    io.save_checkpoint({}, ckpts / "new" / "deeper" / "c.ckpt")
    (ckpts / "new" / "notes.txt").write_text("the user's")
    for name in ("mine/a.ckpt", "b.ckpt", "new/deeper/c.ckpt"):
        io.remove_checkpoint(ckpts / name)
    assert folders(tmp_path / "ckpts") == ["mine", "new"]  # "new" holds another file
    assert sorted(os.listdir(ckpts / "new")) == ["notes.txt"]
    io.teardown()


def test_folders_inside_dirpath_go_after_a_restart(tmp_path: Path) -> None:
    """A plugin given dirpath removes a folder an earlier process's save made inside it."""
    store, ckpts = tmp_path / "store", tmp_path / "ckpts"
    first = ResumableCheckpointIO(store, dirpath=ckpts)  # a restarted run: the same options
    first.save_checkpoint({}, ckpts / "epoch=0" / "step=3.ckpt")
    first.teardown()
    again = ResumableCheckpointIO(store, dirpath=ckpts)
    again.remove_checkpoint(ckpts / "epoch=0" / "step=3.ckpt")
    assert ckpts.is_dir()
    assert folders(ckpts) == []
    assert again.stored_names() == []
    again.teardown()


# Lightning's own: a hint about data loader workers, and its use of a deprecated torch API.
@pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings.PossibleUserWarning")
@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")
def test_trainer_top_k_rotation_leaves_only_the_kept_checkpoint(tmp_path: Path) -> None:
    """A real Trainer keeping its best checkpoint leaves one file, one folder, one stored name."""
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader, TensorDataset

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x), y)
            self.log("step_count", float(self.global_step))
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    store, ckpts = tmp_path / "store", tmp_path / "ckpts"
    checkpoints = ModelCheckpoint(
        dirpath=ckpts,
        filename="{epoch}/{step}",
        monitor="step_count",
        mode="max",
        save_top_k=1,
        every_n_train_steps=2,
    )
    trainer = pl.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[checkpoints],
        plugins=[ResumableCheckpointIO(store, dirpath=ckpts)],
    )
    data = TensorDataset(torch.randn(16, 4), torch.randn(16, 1))
    trainer.fit(Tiny(), DataLoader(data, batch_size=4))
    kept = Path(checkpoints.best_model_path).relative_to(ckpts)
    assert kept.parts[0] == "epoch=2"
    assert [str(p.relative_to(ckpts)) for p in ckpts.rglob("*.ckpt")] == [str(kept)]
    assert folders(ckpts) == [kept.parts[0]]
    assert folders(store) == [kept.parts[0], str(kept)]  # the store mirrors epoch=2/step=N
