"""A tiny Lightning run checkpointing through ResumableCheckpointIO.

Usage: python tests/lightning_run.py STORE DIRPATH MAX_STEPS
(run by tests/integrations/test_lightning.py)

Prints ``start step N`` when training starts (N > 0 after a resume), ``saved NAME step N`` once
each checkpoint is committed to the store, and ``done step N`` at the end.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from resumable.lightning import ResumableCheckpointIO


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class Loud(ResumableCheckpointIO):
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        super().save_checkpoint(checkpoint, path, storage_options)
        print(f"saved {os.path.basename(path)} step {checkpoint['global_step']}", flush=True)


class Report(Callback):
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        print(f"start step {trainer.global_step}", flush=True)


def main() -> None:
    store, dirpath, max_steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(64, 8), torch.randn(64, 1))
    trainer = pl.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            ModelCheckpoint(dirpath=dirpath, save_last=True, every_n_train_steps=3),
            Report(),
        ],
        plugins=[Loud(store, dirpath=dirpath)],
    )
    trainer.fit(Tiny(), DataLoader(data, batch_size=4), ckpt_path="last")
    print(f"done step {trainer.global_step}", flush=True)


if __name__ == "__main__":
    main()
