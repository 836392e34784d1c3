"""Resume PyTorch training bit-identically: a run killed at any moment ends in the same bits.

Run: python examples/pytorch_resume.py [--out final.pt] [--fail-at STEP]
     (snapshots go to $RESUMABLE_STORE, else ./.resumable; needs ``pip install torch numpy``)

A tiny regression run with everything that makes resumption hard: dropout, Adam, a StepLR
scheduler, a shuffled data loader, NumPy and ``random`` noise. The task is a generator: every
few batches it yields a snapshot holding the model, optimizer and scheduler state, where the
loop is (epoch, batch) and the random generators' states. Kill it with ``kill -9`` and run it
again: it resumes from the last snapshot, and the final weights are equal, bit for bit, to
those of a run never interrupted (tests/integrations/test_torch_resume.py proves it with SIGKILLs).
``--fail-at STEP`` raises once at that step, to show an in-process retry doing the same.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Generator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from resumable import RetryPolicy, ctx, resumable
from resumable.torch import ResumableSampler, capture_rng, restore_rng

SEED = 0
EPOCHS = 6
BATCH_SIZE = 16
SAMPLES = 512
SNAPSHOT_EVERY = 4  # batches


def make_data() -> TensorDataset:
    """A fixed regression data set (its own generator: independent of the global ones)."""
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(SAMPLES, 20, generator=g)
    y = x[:, :5].sum(dim=1, keepdim=True) + 0.1 * torch.randn(SAMPLES, 1, generator=g)
    return TensorDataset(x, y)


@resumable(state=None, retry=RetryPolicy(attempts=3, wait=0))
def train(fail_at: int = -1, state: dict[str, Any] | None = None) -> Generator[Any, None, Any]:
    # 1. Build everything from the seed, as a fresh run would.
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    data = make_data()
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    epoch, batch, loss = 0, 0, torch.tensor(0.0)

    # 2. Resuming: load every state_dict, the loop's position and the random generators.
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        epoch, batch = state["epoch"], state["batch"]
        restore_rng(state["rng"])
        print(f"resumed at epoch {epoch} batch {batch}", flush=True)

    # 3. The loop, started where the snapshot left it.
    for epoch in range(epoch, EPOCHS):  # noqa: B020 (resume from the restored epoch)
        sampler = ResumableSampler(len(data), seed=SEED, epoch=epoch, start=batch * BATCH_SIZE)
        loader = DataLoader(
            data, batch_size=BATCH_SIZE, sampler=sampler, generator=sampler.generator()
        )
        model.train()
        for batch, (x, y) in enumerate(loader, start=batch):  # noqa: B020
            step = epoch * (SAMPLES // BATCH_SIZE) + batch
            if step == fail_at and ctx().attempt_number() == 0:
                raise RuntimeError(f"simulated failure at step {step}")
            noisy = x + torch.from_numpy(np.random.normal(0.0, 0.01, x.shape)).float()
            target = y * (1.0 + random.gauss(0.0, 0.01))
            loss = nn.functional.mse_loss(model(noisy), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if (batch + 1) % SNAPSHOT_EVERY == 0:
                yield {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch,
                    "batch": batch + 1,  # batches of this epoch done
                    "rng": capture_rng(),
                }
                print(f"saved step {step + 1} loss {loss.item():.6f}", flush=True)
        scheduler.step()
        batch = 0

    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "loss": loss.detach(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="torch.save the final state to this file")
    parser.add_argument("--fail-at", type=int, default=-1, help="raise once at this step")
    args = parser.parse_args()
    final = train(fail_at=args.fail_at)
    if args.out:
        torch.save(final, args.out)
    print(f"final loss {final['loss'].item():.6f}", flush=True)


if __name__ == "__main__":
    main()
