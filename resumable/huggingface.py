"""Hugging Face ``Trainer`` checkpoints mirrored to a resumable store: ``ResumableCallback``.

The ``transformers`` ``Trainer`` saves each checkpoint as a folder,
``<output_dir>/checkpoint-<step>`` (weights, optimizer, scheduler, RNG states, trainer state),
and resumes from one with ``trainer.train(resume_from_checkpoint=path)``. The callback commits
every such folder, once the ``Trainer`` has finished writing it, as an atomic, verified
snapshot in a store (a folder or any fsspec URL); :meth:`ResumableCallback.restore` brings the
newest one back — on this machine or a fresh one — and returns the path to resume from:

.. code-block:: python

    from transformers import Trainer, TrainingArguments
    from resumable.huggingface import ResumableCallback

    args = TrainingArguments(output_dir="out", save_steps=500)
    mirror = ResumableCallback("s3://bucket/runs/exp1")
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[mirror])
    trainer.train(resume_from_checkpoint=mirror.restore(args.output_dir))  # None: a fresh run

Install with ``pip install "resumable-tasks[huggingface]"``.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ._checkpoint import Checkpoint
from ._options import Storage, storage_from_deprecated

__all__ = ["ResumableCallback"]

_EXTRA = 'resumable.huggingface needs transformers: pip install "resumable-tasks[huggingface]"'

try:
    _TrainerCallback: Any = importlib.import_module("transformers").TrainerCallback
    _MISSING: ImportError | None = None
except ImportError as _exc:  # the module imports; the callback says what to install when made
    _TrainerCallback, _MISSING = object, _exc


class ResumableCallback(_TrainerCallback):  # type: ignore[misc]
    """A ``TrainerCallback`` that commits each checkpoint folder to a resumable store.

    After the ``Trainer`` saves ``checkpoint-<step>`` (``on_save``), the main process commits
    the folder as a snapshot at ``uri`` (the call returns once it is durable); the store keeps
    the newest ``keep``. :meth:`restore` puts the newest valid one back into ``output_dir``.

    Args:
        uri: the store: a folder or an fsspec URL, one training run per URI.
        storage: how the checkpoints are stored (:class:`resumable.Storage`: ``keep``, the
            checkpoints kept in the store; ``storage_options``, ``signing_key``, ...).
        **deprecated: ``keep=``, ``storage_options=`` and ``signing_key=`` given directly,
            as they were spelled before: accepted with a ``DeprecationWarning`` for one release.

    Raises:
        ImportError: transformers is not installed.

    Example:
        >>> import pytest; _ = pytest.importorskip("transformers")
        >>> import tempfile
        >>> mirror = ResumableCallback(tempfile.mkdtemp())
        >>> mirror.restore(tempfile.mkdtemp()) is None  # nothing saved yet: a fresh run
        True

    """

    def __init__(
        self,
        uri: str | os.PathLike[str],
        *,
        storage: Storage | None = None,
        **deprecated: Any,
    ) -> None:
        if _MISSING is not None:
            raise ImportError(_EXTRA) from _MISSING
        super().__init__()
        self.uri = os.fspath(uri)
        storage = storage_from_deprecated(storage, deprecated, "ResumableCallback")
        self.checkpoint = Checkpoint(uri, storage=storage)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Commit the checkpoint folder the ``Trainer`` has just written (main process only)."""
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            self.checkpoint.save_sync(folder)

    def restore(self, output_dir: str | os.PathLike[str]) -> str | None:
        """Restore the newest valid checkpoint into ``output_dir``; its path, or ``None``.

        The folder comes back as ``<output_dir>/checkpoint-<step>`` (``step`` read from its
        ``trainer_state.json``), replacing a folder of that name. Pass the result to
        ``trainer.train(resume_from_checkpoint=...)``: ``None`` starts a fresh run.

        Example:
            >>> import pytest; _ = pytest.importorskip("transformers")
            >>> import json, tempfile
            >>> from pathlib import Path
            >>> run = Path(tempfile.mkdtemp()) / "checkpoint-4"
            >>> run.mkdir()
            >>> _ = (run / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
            >>> mirror = ResumableCallback(tempfile.mkdtemp())
            >>> mirror.checkpoint.save_sync(run)
            >>> Path(mirror.restore(tempfile.mkdtemp())).name
            'checkpoint-4'

        """
        target = Path(output_dir)
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target, prefix=".restore-") as scratch:
            restored = Path(scratch) / "checkpoint"
            if self.checkpoint.restore_into(restored) is None:
                return None
            step = json.loads((restored / "trainer_state.json").read_text())["global_step"]
            folder = target / f"checkpoint-{int(step)}"
            if folder.exists():
                shutil.rmtree(folder)
            restored.rename(folder)
        return str(folder)

    def close(self) -> None:
        """Wait for pending saves and remove the local workspace of the store."""
        self.checkpoint.close()
