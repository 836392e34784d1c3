"""Lightning checkpoints as atomic, verified snapshots in any store: ``ResumableCheckpointIO``.

Lightning writes checkpoints through a ``CheckpointIO`` plugin, its public extension point for
where checkpoints go. :class:`ResumableCheckpointIO` writes each one to the local file Lightning
asks for (as Lightning's own ``TorchCheckpointIO`` does) **and** commits it to a store (a folder
or any fsspec URL: ``s3://``, ``gs://``, ``az://``, ...) through :class:`resumable.Checkpoint`:
atomic, checksummed, verified on load. Loads read the store's newest valid copy; removals (the
``save_top_k`` rotation) remove it from the store too.

On a fresh machine the local checkpoint folder is empty, so Lightning's ``ckpt_path="last"``
would find nothing. Give the plugin the ``ModelCheckpoint``'s ``dirpath``: it then restores the
store's ``last*.ckpt`` files into that folder when it is created, before ``fit`` looks for
them, and ``ckpt_path="last"`` resumes from the store. Only public hooks are used.

Each checkpoint is stored under a key: its path inside ``dirpath`` (``epoch=3/last.ckpt``),
the same on every machine wherever ``dirpath`` is; without ``dirpath``, or outside it, its file
name. Two checkpoints that would share a key are refused (``ConfigurationError``), never
stored in one place.

Install with ``pip install "resumable-tasks[lightning]"`` (the ``lightning`` package; the older
``pytorch_lightning`` package is not supported).

Example::

    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint
    from resumable.lightning import ResumableCheckpointIO

    trainer = Trainer(
        max_epochs=10,
        callbacks=[ModelCheckpoint(dirpath="ckpts", save_last=True, every_n_train_steps=100)],
        plugins=[ResumableCheckpointIO("s3://bucket/runs/exp1", dirpath="ckpts")],
    )
    trainer.fit(model, ckpt_path="last")  # resumes from the store, wherever this runs
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._backend import is_local, local_path, open_backend
from ._checkpoint import Checkpoint
from ._errors import ConfigurationError
from ._inspect import find_task_folders
from ._names import PIECES
from ._options import Storage, storage_from_deprecated

__all__ = ["ResumableCheckpointIO"]

_EXTRA = 'resumable.lightning needs Lightning: pip install "resumable-tasks[lightning]"'

try:
    _io: Any = importlib.import_module("lightning.pytorch.plugins.io")
    _CheckpointIO: Any = _io.CheckpointIO
    _MISSING: ImportError | None = None
except ImportError as _exc:  # the module imports; the plugin says what to install when made
    _CheckpointIO, _io, _MISSING = object, None, _exc


class ResumableCheckpointIO(_CheckpointIO):  # type: ignore[misc]
    """A Lightning ``CheckpointIO`` that also commits every checkpoint to a resumable store.

    Each checkpoint file Lightning saves (``<dirpath>/<name>.ckpt``) is written locally and
    then committed as a snapshot at ``<uri>/<key>``; ``save_checkpoint`` returns only once it
    is durable in the store. ``load_checkpoint`` loads the store's newest valid copy (the
    local file only when the store has none under its key).

    The key is the checkpoint's path inside ``dirpath`` (``epoch=0/step=9.ckpt`` for a
    ``ModelCheckpoint(filename="{epoch}/{step}")``), which is the same on another machine
    whatever folder ``dirpath`` is there; a checkpoint outside ``dirpath``, or any without it,
    is keyed by its file name. A save whose key another checkpoint of this plugin already
    holds (two folders with a ``last.ckpt``, without ``dirpath``) raises ``ConfigurationError``
    instead of replacing that checkpoint's snapshots.

    Args:
        uri: the store: a folder or an fsspec URL. One run's checkpoints per URI.
        dirpath: the local folder the ``ModelCheckpoint`` writes to (its ``dirpath``). When
            given, checkpoints are keyed by their path inside it, and the store's
            ``last*.ckpt`` checkpoints are restored into it now, with their commit times as
            modification times, so that ``ckpt_path="last"`` finds them. Give it whenever the
            ``filename`` has folders (``"{epoch}/{step}"``): else two epochs' ``step=...``
            names may meet.
        storage: how the checkpoints are stored (:class:`resumable.Storage`: ``keep``, the
            snapshots kept per checkpoint name, as ``last.ckpt`` is saved again and again;
            ``storage_options``, ``signing_key``, ...). Default ``Storage(keep=1)``.
        **deprecated: ``keep=``, ``storage_options=`` and ``signing_key=`` given directly,
            as they were spelled before: accepted with a ``DeprecationWarning`` for one release.

    Raises:
        ImportError: Lightning is not installed.

    Example:
        >>> import pytest; _ = pytest.importorskip("lightning")
        >>> import tempfile
        >>> io = ResumableCheckpointIO(tempfile.mkdtemp())
        >>> path = f"{tempfile.mkdtemp()}/last.ckpt"
        >>> io.save_checkpoint({"global_step": 7}, path)
        >>> io.load_checkpoint(path)["global_step"]
        7

    """

    def __init__(
        self,
        uri: str | os.PathLike[str],
        *,
        dirpath: str | os.PathLike[str] | None = None,
        storage: Storage | None = None,
        **deprecated: Any,
    ) -> None:
        if _MISSING is not None:
            raise ImportError(_EXTRA) from _MISSING
        super().__init__()
        self.uri = os.fspath(uri).rstrip("/") or "/"
        if storage is None and not deprecated:
            storage = Storage(keep=1)
        elif storage is None:
            deprecated.setdefault("keep", 1)
        #: How the checkpoints are stored.
        self.storage = storage_from_deprecated(storage, deprecated, "ResumableCheckpointIO")
        self._local: Any = _io.TorchCheckpointIO()
        self._checkpoints: dict[str, Checkpoint] = {}
        self._dirpath = None if dirpath is None else Path(dirpath).absolute()
        #: ``dirpath`` as the paths Lightning passes spell it (links resolved), for keys.
        self._keys_root = None if dirpath is None else _spelled(dirpath, folder=True)
        #: The path saved under each key by this plugin, until it is removed.
        self._holders: dict[str, str] = {}
        #: The local folders each checkpoint's save created, deepest first, by its path.
        self._made: dict[str, list[Path]] = {}
        if dirpath is not None:
            self.restore_last(dirpath)

    # -- the CheckpointIO interface ------------------------------------------------------

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike[str], storage_options: Any = None
    ) -> None:
        """Write ``checkpoint`` to ``path`` (a local file), then commit it to the store.

        Example:
            >>> import pytest; _ = pytest.importorskip("lightning")
            >>> import tempfile
            >>> ResumableCheckpointIO(tempfile.mkdtemp()).save_checkpoint(
            ...     {"epoch": 0}, f"{tempfile.mkdtemp()}/epoch=0.ckpt"
            ... )

        """
        key = self._claim(path)
        made = _missing_folders(path)
        self._local.save_checkpoint(checkpoint, path, storage_options=storage_options)
        if made:
            self._made[os.fspath(path)] = made
        self._checkpoint(key).save_sync(os.fspath(path))

    def load_checkpoint(
        self,
        path: str | os.PathLike[str],
        map_location: Callable[..., Any] | Any = None,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """The newest valid copy of ``path``'s checkpoint in the store, loaded.

        Falls back to the local file when the store holds nothing under its name (a
        checkpoint from elsewhere). ``map_location`` and ``weights_only`` are passed to
        Lightning's loader (``torch.load``).

        Example:
            >>> import pytest; _ = pytest.importorskip("lightning")
            >>> import tempfile
            >>> io = ResumableCheckpointIO(tempfile.mkdtemp())
            >>> path = f"{tempfile.mkdtemp()}/a.ckpt"
            >>> io.save_checkpoint({"epoch": 3}, path)
            >>> io.load_checkpoint(path)["epoch"]
            3

        """
        if map_location is None:
            map_location = _keep_on_saved_device
        root = self._checkpoint(self.key_of(path)).load_sync()
        source = path if root is None else root / "payload"
        result: dict[str, Any] = self._local.load_checkpoint(
            source, map_location=map_location, weights_only=weights_only
        )
        return result

    def remove_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Remove ``path``'s checkpoint locally and from the store, with the folders made for it.

        The store's snapshots under its key stay when another path of this plugin saved
        them. A ``ModelCheckpoint`` whose ``filename`` has folders (``"{epoch}/{step}"``) gets a
        local folder per checkpoint: once the checkpoint is gone, those folders go too when
        they are empty, if its save created them, or if they are inside ``dirpath``. Other
        folders (``dirpath`` itself, one that held files before) stay.

        Example:
            >>> import pytest; _ = pytest.importorskip("lightning")
            >>> import os, tempfile
            >>> io = ResumableCheckpointIO(tempfile.mkdtemp())
            >>> path = f"{tempfile.mkdtemp()}/a.ckpt"
            >>> io.save_checkpoint({"epoch": 3}, path)
            >>> io.remove_checkpoint(path)
            >>> os.path.exists(path), io.stored_names()
            (False, [])

        """
        self._local.remove_checkpoint(path)
        key, spelled = self.key_of(path), _spelled(path)
        if self._holders.get(key, spelled) == spelled:  # not another path's snapshots
            self._holders.pop(key, None)
            self._checkpoint(key).clear_sync()  # its folder in the store goes with them
            # Lightning never writes a removed name again: one Checkpoint per name would
            # pile up.
            self._checkpoints.pop(key).close()
            self._remove_empty_key_folders(key)
        made = self._made.pop(os.fspath(path), [])
        _remove_empty_folders([*made, *_folders_inside(path, self._dirpath)])

    def teardown(self) -> None:
        """Close the store's connections and workspaces (Lightning calls this at the end)."""
        for checkpoint in self._checkpoints.values():
            checkpoint.close()
        self._checkpoints.clear()

    # -- resuming on a fresh machine -----------------------------------------------------

    def stored_names(self) -> list[str]:
        """The keys the store holds a snapshot of, sorted (see the class for what a key is).

        Example:
            >>> import pytest; _ = pytest.importorskip("lightning")
            >>> import tempfile
            >>> io = ResumableCheckpointIO(tempfile.mkdtemp())
            >>> io.save_checkpoint({}, f"{tempfile.mkdtemp()}/last.ckpt")
            >>> io.stored_names()
            ['last.ckpt']

        """
        store = open_backend(self.uri, self.storage.storage_options)
        # A signed store keeps a "cleared" record where a removed checkpoint was: not one.
        keys = [folder.key for folder in find_task_folders(store) if folder.seqs]
        return [key for key in keys if self._checkpoint(key).info_sync() is not None]

    def restore_last(
        self, dirpath: str | os.PathLike[str], pattern: str = r"last.*\.ckpt"
    ) -> list[Path]:
        """Restore the store's ``last*.ckpt`` checkpoints into ``dirpath``; the paths written.

        Each goes to ``<dirpath>/<key>`` (in a sub-folder for a key with folders) with its
        snapshot's commit time as modification time, so that Lightning's ``ckpt_path="last"``
        picks the newest. A file already there is replaced.

        Args:
            dirpath: the ``ModelCheckpoint``'s folder.
            pattern: a regular expression the file names must match in full.

        Example:
            >>> import pytest; _ = pytest.importorskip("lightning")
            >>> import tempfile
            >>> store = tempfile.mkdtemp()
            >>> ResumableCheckpointIO(store).save_checkpoint({}, f"{tempfile.mkdtemp()}/last.ckpt")
            >>> [p.name for p in ResumableCheckpointIO(store).restore_last(tempfile.mkdtemp())]
            ['last.ckpt']

        """
        restored = []
        for key in self.stored_names():
            if not re.fullmatch(pattern, key.rsplit("/", 1)[-1]):
                continue
            target = Path(dirpath, *_key_parts(key))
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent, prefix=".restore-") as scratch:
                manifest = self._checkpoint(key).restore_into(Path(scratch))
                if manifest is None:
                    continue
                payload = Path(scratch) / "payload"
                os.utime(payload, (manifest.created, manifest.created))
                shutil.move(payload, target)
            restored.append(target)
        return restored

    def key_of(self, path: str | os.PathLike[str]) -> str:
        """The key the checkpoint file ``path`` is stored under: its path inside ``dirpath``.

        Without ``dirpath``, or for a path outside it, the file's name. Paths are compared as
        Lightning spells them (absolute, links resolved), so ``ckpts/x.ckpt`` and its
        absolute path have one key.

        Example:
            >>> import pytest; _ = pytest.importorskip("lightning")
            >>> import tempfile
            >>> io = ResumableCheckpointIO(tempfile.mkdtemp(), dirpath="ckpts")
            >>> io.key_of("ckpts/epoch=2/last.ckpt"), io.key_of("/elsewhere/final.ckpt")
            ('epoch=2/last.ckpt', 'final.ckpt')

        """
        spelled = _spelled(path)
        root = self._keys_root
        if root is not None and spelled.startswith(root.rstrip("/") + "/"):
            key = spelled[len(root.rstrip("/")) + 1 :]
        else:
            key = spelled.rstrip("/").rsplit("/", 1)[-1]
        _key_parts(key)  # refuses a key that is no clean path inside the store
        return key

    def _claim(self, path: str | os.PathLike[str]) -> str:
        """``path``'s key, now held by it; ``ConfigurationError`` if another path holds it."""
        key, spelled = self.key_of(path), _spelled(path)
        holder = self._holders.setdefault(key, spelled)
        if holder != spelled:
            how = (
                "give ResumableCheckpointIO the ModelCheckpoint's dirpath= (checkpoints are "
                "then keyed by their path inside it)"
                if self._keys_root is None
                else f"save checkpoints inside dirpath ({self._keys_root}), where each path "
                "is its own key, or give the other one another file name"
            )
            raise ConfigurationError(
                f"checkpoint {spelled} would be stored under the key {key!r}, which holds "
                f"{holder}: saving it would replace that checkpoint's snapshots (and "
                f"removing either would remove both). To keep both, {how}"
            )
        return key

    def _checkpoint(self, key: str) -> Checkpoint:
        """The store's ``Checkpoint`` for the key ``key`` (signed under that key, if signed)."""
        if key not in self._checkpoints:
            self._checkpoints[key] = Checkpoint(f"{self.uri}/{key}", storage=self.storage, name=key)
        return self._checkpoints[key]

    def _remove_empty_key_folders(self, key: str) -> None:
        """The store's folders of a removed key's folders (``epoch=0`` of ``epoch=0/x.ckpt``).

        Only on disk: an object store's folder is a prefix, gone with its last object.
        """
        if not is_local(self.uri):
            return
        root = Path(local_path(self.uri))
        parts = _key_parts(key)[:-1]
        _remove_empty_folders([root.joinpath(*parts[:n]) for n in range(len(parts), 0, -1)])


def _is_local(path: str | os.PathLike[str]) -> bool:
    """Whether Lightning writes ``path`` to local disk (not to an fsspec URL of its own)."""
    return "://" not in os.fspath(path)


def _spelled(path: str | os.PathLike[str], *, folder: bool = False) -> str:
    """``path`` as Lightning spells a checkpoint's path: absolute, its folders' links resolved.

    ``ModelCheckpoint`` resolves its ``dirpath`` (``os.path.realpath``); a file's own name is
    kept (a link there is the checkpoint's, not a folder's). An fsspec URL stays as it is.
    """
    text = os.fspath(path)
    if not _is_local(text):
        return text.rstrip("/")
    if folder:
        return os.path.realpath(text).replace(os.sep, "/")
    head, name = os.path.split(os.path.abspath(text))
    return os.path.join(os.path.realpath(head), name).replace(os.sep, "/")


def _key_parts(key: str) -> list[str]:
    """The folders and name of ``key``; ``ConfigurationError`` for one no store can hold."""
    parts = key.split("/")
    if any(part in ("", ".", "..", PIECES) for part in parts):
        raise ConfigurationError(
            f"cannot store a checkpoint under the key {key!r}: its parts must be names, not "
            f"'', '.', '..' or {PIECES!r}"
        )
    return parts


def _missing_folders(path: str | os.PathLike[str]) -> list[Path]:
    """The folders a save to the local ``path`` will create, deepest first."""
    if not _is_local(path):
        return []
    missing = []
    folder = Path(path).absolute().parent
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    return missing


def _folders_inside(path: str | os.PathLike[str], dirpath: Path | None) -> list[Path]:
    """The folders between ``dirpath`` and the file ``path`` in it, deepest first."""
    if dirpath is None or not _is_local(path):
        return []
    folder = Path(path).absolute().parent
    if not folder.is_relative_to(dirpath):
        return []
    return [folder, *folder.parents][: len(folder.relative_to(dirpath).parts)]


def _remove_empty_folders(folders: list[Path]) -> None:
    """Remove each of ``folders`` (deepest first) that is empty; stop at one that is not."""
    for folder in sorted(set(folders), key=lambda f: len(f.parts), reverse=True):
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue
        except OSError:  # not empty (another checkpoint is in it), or not ours to remove
            return


def _keep_on_saved_device(storage: Any, location: Any) -> Any:
    """Lightning's default ``map_location``: tensors stay where they were saved."""
    return storage
