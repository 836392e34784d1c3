"""The local disk backend: ``os`` calls, so that we control fsync, rename and ``O_EXCL``.

A write goes to a temp name in the destination folder, then fsync, rename (``link`` for an
exclusive create, which never replaces a name) and fsync of the folder.

It keeps a store private and safe to read whoever else can write to it:

- objects are created 0600 and the folders it makes 0700 (like ``tempfile``): a task's state
  often holds secrets. Folders that exist already keep their mode.
- its folder must be one: a store whose path names a file (flyte's ``_flytecheckpoints`` is
  one object) is refused with a ``ConfigurationError`` (:func:`not_a_folder`) by the first
  listing, which a load and a store's first save both make.
- it reads regular files only. An object's name that is a FIFO, a device, a socket, a folder or
  a symbolic link is refused at once with :class:`NotAnObjectError` (a ``FileNotFoundError``:
  to the store it is no object of ours, so that snapshot is corrupt and the previous one
  loads). A FIFO would otherwise block the reader forever, and a link could point anywhere.
  The store's own folder may be a link: only the last part of an object's path is checked.
- a temp file carries its maker's stamp (see ``_names.temp_name``), so the temp files of saves
  killed mid-way can be removed once their maker is provably gone
  (:meth:`LocalBackend.remove_dead_temps`): by the first write of a backend to its folder, and
  before :meth:`LocalBackend.remove_root_if_empty`.

Example:
    >>> import tempfile
    >>> backend = LocalBackend(Path(tempfile.mkdtemp()) / "store")
    >>> backend.create_exclusive("a.json", b"{}")
    >>> backend.read("a.json"), oct(os.stat(backend.root / "a.json").st_mode & 0o777)
    (b'{}', '0o600')
    >>> os.mkfifo(backend.root / "b.json")
    >>> try:
    ...     backend.read("b.json")  # at once: a FIFO is no object
    ... except FileNotFoundError as exc:
    ...     print(exc.strerror)
    not a regular file (a FIFO): no object

"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import stat
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ._errors import ConfigurationError
from ._names import is_temp, temp_maker, temp_name
from ._objects import AdminBackend, BlobWriter, Entry, Upload
from ._owner import gone, machine
from ._threads import run_on_io

__all__ = [
    "FOLDER_MODE",
    "OBJECT_MODE",
    "LocalBackend",
    "NotAnObjectError",
    "TempSweep",
    "not_a_folder",
]

log = logging.getLogger("resumable")

#: Mode of every object of a local store, and of every folder the local backend makes.
OBJECT_MODE = 0o600
FOLDER_MODE = 0o700


class NotAnObjectError(FileNotFoundError):
    """A name in a local store that is not a regular file (a FIFO, a link, a device, a folder).

    A ``FileNotFoundError``: no object of ours has that name, so a snapshot that needs it is
    corrupt, exactly as when the object is missing.
    """


def not_a_folder(url: str, found: str) -> ConfigurationError:
    """The error for a store ``url`` that is, or is inside, the file or object ``found``.

    A checkpoint is a folder of snapshots (a manifest and a payload each). A URL naming one
    object, such as the ``_flytecheckpoints`` file flyte's checkpoint writes, cannot hold
    them; on disk a save there fails, and a load would find nothing and start afresh.

    Example:
        >>> print(not_a_folder("/runs/a/_flytecheckpoints", "/runs/a/_flytecheckpoints"))
        /runs/a/_flytecheckpoints names a file, not a folder of snapshots: ...

    """
    parent = found.rstrip("/").rsplit("/", 1)[0] or "/"
    where = (
        f"{url} names a file"
        if found.rstrip("/") == url.rstrip("/")
        else f"{url} is inside {found}, which is a file"
    )
    return ConfigurationError(
        f"{where}, not a folder of snapshots: a Checkpoint keeps its snapshots in a folder "
        f"of its own. Pass a folder instead (a new one beside it: {parent}/<name>); to read "
        "the file itself (a checkpoint another tool wrote, such as flyte's), open it with "
        f"fsspec: fsspec.open({found!r}, 'rb')"
    )


@dataclass(frozen=True, slots=True)
class TempSweep:
    """What :meth:`LocalBackend.remove_dead_temps` did with the temp files of its folder."""

    #: Temp files whose maker was provably gone, now removed.
    removed: list[str]
    #: Temp files left alone: a live save's, or of a maker that cannot be judged (named
    #: before temp names carried a stamp, or made on another host, boot or container).
    kept: list[str]
    #: Of ``kept``, those whose maker cannot be judged here: only ``resumable gc`` (after its
    #: grace period) or their own machine removes them.
    unknown: list[str]


def _make_folders(path: Path) -> None:
    """Make ``path`` and its missing parents, each new one 0700; existing ones keep their mode.

    ``Path.mkdir(parents=True)`` would make the parents with the umask's mode (often 0755).
    """
    missing = []
    folder = path
    while not folder.is_dir():  # follows links: a store reached through a link is fine
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, FOLDER_MODE)
        except FileExistsError:
            if not folder.is_dir():
                raise
            continue  # another writer made it just now
        _fsync_dir(folder.parent)  # the new folder's name must survive a crash too


_FILE_TYPES = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFDIR: "a folder",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def _open_object(path: Path) -> int:
    """A descriptor of the regular file ``path``, opened for reading without ever blocking.

    ``O_NONBLOCK`` makes opening a FIFO return at once (instead of waiting for a writer),
    ``O_NOFOLLOW`` refuses a link at the object's own name; ``fstat`` then refuses anything
    but a regular file. The descriptor is made blocking again for the reads.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and path.is_symlink():
            raise NotAnObjectError(
                errno.ENOENT, "not a regular file (a symbolic link): no object", str(path)
            ) from None
        if exc.errno == errno.ENXIO:  # a socket, or a device with nothing behind it
            raise NotAnObjectError(
                errno.ENOENT, "not a regular file: no object", str(path)
            ) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode):
            os.set_blocking(fd, True)
            return fd
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    what = _FILE_TYPES.get(stat.S_IFMT(mode), "a special file")
    raise NotAnObjectError(errno.ENOENT, f"not a regular file ({what}): no object", str(path))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _LocalWriter:
    """Writes to a temp name in the destination folder; commit = fsync, rename, fsync folder.

    While a large object is written, ``fdatasync`` runs on a worker every few MiB, so the
    disk's writeback overlaps the copying and hashing instead of all landing on the final
    fsync.
    """

    _SYNC_EVERY = 16 << 20

    def __init__(self, root: Path, name: str, open_new: Callable[[Path], int]) -> None:
        self._root = root
        self._final = root / name
        self._tmp = root / temp_name(name)
        self._fd: int | None = open_new(self._tmp)
        self._unsynced = 0
        self._syncing: Future[None] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert self._fd is not None, "write after commit or abort"
        _write_all(self._fd, data)
        self._unsynced += len(data)
        if self._unsynced >= self._SYNC_EVERY and (self._syncing is None or self._syncing.done()):
            self._unsynced = 0
            self._syncing = run_on_io(functools.partial(os.fdatasync, self._fd))

    def _settle(self) -> None:
        if self._syncing is not None:
            self._syncing.result()
            self._syncing = None

    def commit(self) -> None:
        assert self._fd is not None, "commit after commit or abort"
        fd, self._fd = self._fd, None
        try:
            self._settle()
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(self._tmp, self._final)
        _fsync_dir(self._root)

    def abort(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                self._settle()
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()


class LocalBackend:
    """Local disk: temp names in the destination folder, fsync, rename, fsync the folder."""

    local = True

    def __init__(self, root: Path, *, inner: bool = False) -> None:
        self.root = root
        self.url = str(root)
        self._swept = False
        # A folder of the library's own inside a task's (``~pieces``): never followed as a
        # link, so nothing the library writes or deletes there lands outside the task.
        self._inner = inner

    def _open_new(self, path: Path) -> int:
        """``O_EXCL``-create ``path`` (0600) in the root; the root is made on first use only.

        No existence check before: a save in an existing folder costs no extra system call.
        The first write of this backend removes the temp files of killed saves first (one
        listing per backend), so that they never pile up in a folder that is saved to again.
        """
        if not self._swept:
            self._swept = True
            with contextlib.suppress(OSError):  # housekeeping must not fail a save
                self.remove_dead_temps()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            return os.open(path, flags, OBJECT_MODE)
        except FileNotFoundError:
            _make_folders(self.root)
            return os.open(path, flags, OBJECT_MODE)

    def entries(self) -> list[Entry]:
        self._not_a_link()
        try:
            with os.scandir(self.root) as it:
                found = list(it)
        except FileNotFoundError:
            return []
        except NotADirectoryError:
            self._refuse_a_file()
            return []
        out = []
        for e in found:
            try:
                if not e.is_file(follow_symlinks=False):
                    continue
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:  # deleted by another writer while we listed
                continue
            out.append(Entry(e.name, st.st_size, st.st_mtime))
        return out

    def list_children(self) -> list[str]:
        try:
            with os.scandir(self.root) as it:
                return sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return []
        except NotADirectoryError:
            self._refuse_a_file()
            return []

    def _refuse_a_file(self) -> None:
        """The root, or a folder on its way, is a file: say so (see :func:`not_a_folder`)."""
        for folder in (self.root, *self.root.parents):
            try:
                if not stat.S_ISDIR(os.stat(folder).st_mode):  # a link to a file is one too
                    raise not_a_folder(self.url, str(folder))
            except (FileNotFoundError, NotADirectoryError):
                continue
            return  # the nearest folder that exists: what is below it is missing

    def read(self, name: str) -> bytes:
        self._not_a_link()
        with open(_open_object(self.root / name), "rb", buffering=0) as f:
            return f.read()

    def open_read(self, name: str) -> BinaryIO:
        self._not_a_link()
        return open(_open_object(self.root / name), "rb", buffering=0)

    def writer(self, name: str) -> BlobWriter:
        self._not_a_link()
        return _LocalWriter(self.root, name, self._open_new)

    def create_exclusive(self, name: str, data: bytes) -> None:
        self._not_a_link()
        tmp = self.root / temp_name(name)
        fd = self._open_new(tmp)
        try:
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            # link() never replaces an existing name: the atomic "create if absent" that
            # rename() lacks. Filesystems without hard links fall back to exists + rename.
            try:
                os.link(tmp, self.root / name)
            except FileExistsError:
                raise
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                    raise
                if (self.root / name).exists():
                    raise FileExistsError(errno.EEXIST, "exists", str(self.root / name)) from exc
                os.rename(tmp, self.root / name)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        _fsync_dir(self.root)

    def delete(self, name: str) -> None:
        self._not_a_link()
        with contextlib.suppress(FileNotFoundError):
            (self.root / name).unlink()

    def delete_many(self, names: list[str]) -> None:
        self._not_a_link()
        for name in names:
            self.delete(name)

    def child(self, name: str) -> AdminBackend:
        return LocalBackend(self.root / name, inner=True)

    def _not_a_link(self) -> None:
        if self._inner and self.root.is_symlink():
            raise ConfigurationError(
                f"{self.url} is a symbolic link: the library never follows one inside a "
                "store (it could write or delete elsewhere). Remove the link."
            )

    def exists(self) -> bool:
        return self.root.is_dir()

    def remove_dead_temps(self) -> TempSweep:
        """Remove the temp files in the root whose maker provably no longer runs.

        A save killed mid-way leaves its temp file, which nothing will ever rename. Only a
        temp file whose stamp names a process of this machine (host, boot, PID namespace)
        that is gone is removed; a live save's, another machine's and an unstamped one stay.
        """
        removed: list[str] = []
        kept: list[str] = []
        unknown: list[str] = []
        here = machine()
        for e in self.entries():
            if not is_temp(e.name):
                continue
            maker = temp_maker(e.name)
            if maker is not None and gone(maker):
                with contextlib.suppress(FileNotFoundError):
                    (self.root / e.name).unlink()
                removed.append(e.name)
                continue
            kept.append(e.name)
            if maker is None or maker.machine != here:
                unknown.append(e.name)
        return TempSweep(removed, kept, unknown)

    def remove_root_if_empty(self) -> None:
        """Remove the root folder once it holds nothing but temp files of gone makers."""
        self._not_a_link()
        with contextlib.suppress(OSError):
            sweep = self.remove_dead_temps()
            if sweep.unknown:
                log.warning(
                    "%s keeps %d temp file(s) whose writer cannot be proven gone (written "
                    "before temp names named their writer, or by another machine): %s. "
                    "`resumable gc` removes them after its grace period.",
                    self.url,
                    len(sweep.unknown),
                    ", ".join(sweep.unknown),
                )
        # It may still hold nested keys' folders, a live save's temp file, or a new save may
        # have reused it: then the rmdir fails and the folder stays, as it should.
        with contextlib.suppress(OSError):
            self.root.rmdir()

    def unfinished_uploads(self) -> list[Upload]:
        return []  # a local write is one file: a killed writer leaves only a temp file

    def abort_upload(self, upload: Upload) -> None:
        raise FileNotFoundError(f"no upload {upload.name} on a local disk")
