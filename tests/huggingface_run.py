"""A tiny transformers Trainer run mirrored through ResumableCallback.

Usage: python tests/huggingface_run.py STORE OUTPUT_DIR MAX_STEPS
(run by tests/integrations/test_huggingface.py)

A 1-layer GPT-2 with a 32-token vocabulary built from a config (nothing is downloaded), on a
data set made in memory. Prints ``start step N`` when training starts, ``saved step N`` once
each checkpoint is committed to the store, and ``done step N`` at the end.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from resumable.huggingface import ResumableCallback


class Loud(ResumableCallback):
    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        super().on_save(args, state, control, **kwargs)
        print(f"saved step {state.global_step}", flush=True)


class Report(TrainerCallback):  # type: ignore[misc]
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        print(f"start step {state.global_step}", flush=True)


class Tokens(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 32, (64, 16), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "labels": self.ids[index]}


def main() -> None:
    store, output_dir, max_steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    config = GPT2Config(
        vocab_size=32,
        n_positions=16,
        n_embd=16,
        n_layer=1,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    args = TrainingArguments(
        output_dir=output_dir,
        max_steps=max_steps,
        save_steps=3,
        save_total_limit=2,
        per_device_train_batch_size=4,
        logging_steps=10_000,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    mirror = Loud(store)
    trainer = Trainer(
        model=GPT2LMHeadModel(config),
        args=args,
        train_dataset=Tokens(),
        callbacks=[mirror, Report()],
    )
    trainer.train(resume_from_checkpoint=mirror.restore(output_dir))
    print(f"done step {trainer.state.global_step}", flush=True)


if __name__ == "__main__":
    main()
