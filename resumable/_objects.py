"""The vocabulary of object storage: what a backend is, and a base for wrapping one.

A backend knows nothing of snapshots. It lists names under its root, reads and writes whole
objects, streams large ones, and creates an object exclusively where the storage can. Two
protocols: :class:`Backend`, the few calls a store of snapshots makes, and
:class:`AdminBackend`, which adds what administering a store takes (its folders, whether it
exists, removing an empty one, unfinished uploads). Wrappers (retries, pipelining) derive
from :class:`ForwardingBackend` and override only what they change. The implementations are
``_local`` (the disk) and ``_backend`` (fsspec, and :func:`~resumable._backend.open_backend`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol, TypeVar

from ._stream import CHUNK_SIZE

__all__ = [
    "AdminBackend",
    "Backend",
    "BlobWriter",
    "Entry",
    "ForwardingBackend",
    "Upload",
    "iter_read",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Entry:
    """One object directly under the backend's root."""

    name: str
    size: int
    mtime: float | None


class BlobWriter(Protocol):
    """A large object being written; invisible under its final name until ``commit``."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data``."""

    def commit(self) -> None:
        """Make the object durable under its final name."""

    def abort(self) -> None:
        """Throw away what was written."""


class Backend(Protocol):
    """Object-level I/O under one prefix: what a store of snapshots needs (``SnapshotStore``)."""

    #: Where the objects are, as the user named it (a path or an fsspec URL).
    url: str

    def entries(self) -> list[Entry]:
        """The objects directly under the root; empty when the root does not exist."""

    def read(self, name: str) -> bytes:
        """A whole (small) object."""

    def open_read(self, name: str) -> BinaryIO:
        """A stream over an object."""

    def writer(self, name: str) -> BlobWriter:
        """A writer for a new object."""

    def create_exclusive(self, name: str, data: bytes) -> None:
        """Write a small object durably; ``FileExistsError`` when it exists already."""

    def delete(self, name: str) -> None:
        """Remove an object; a missing one is not an error."""

    def delete_many(self, names: list[str]) -> None:
        """Remove objects, in one request where the store can; missing ones are not errors."""


class AdminBackend(Backend, Protocol):
    """A :class:`Backend` that also administers its folder: tasks, folders, uploads.

    What ``resumable`` (the command), a ``Checkpoint``'s clean-up and its warnings use;
    no save or load needs it.
    """

    @property
    def local(self) -> bool:
        """Whether the objects are on a local disk (see :func:`is_local`)."""

    def list_children(self) -> list[str]:
        """Names of the folders directly under the root."""

    def child(self, name: str) -> AdminBackend:
        """The backend of the folder ``name`` directly under the root."""

    def exists(self) -> bool:
        """Whether the root exists (an object store's top level always does)."""

    def remove_root_if_empty(self) -> None:
        """Remove the root folder when it holds nothing (object stores have no folders)."""

    def unfinished_uploads(self) -> list[Upload]:
        """Multipart uploads started under the root and never completed (S3 only)."""

    def abort_upload(self, upload: Upload) -> None:
        """Abort an upload found by :meth:`unfinished_uploads`, freeing its parts."""


@dataclass(frozen=True, slots=True)
class Upload:
    """An unfinished multipart upload under a backend's root (a writer died mid-upload)."""

    #: The object's path relative to the root, e.g. ``task/00000000000000000007.<token>.blob``.
    name: str
    upload_id: str
    initiated: float | None


def iter_read(stream: BinaryIO, size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Read ``stream`` in chunks of ``size`` until its end (the caller closes it)."""
    while chunk := stream.read(size):
        yield chunk


class ForwardingBackend:
    """A backend around another one: every call goes to ``self.backend`` through :meth:`call`.

    A wrapper overrides only what it changes: :meth:`call` to change every call (retries and
    deadlines), a method to change that one (``writer``, ``open_read``), and :meth:`wrap` so
    that a child folder's backend is wrapped alike.

    Example:
        >>> class Counting(ForwardingBackend):
        ...     calls = 0
        ...
        ...     def call(self, fn, what):
        ...         Counting.calls += 1
        ...         return fn()
        >>> import tempfile
        >>> from resumable._backend import open_backend
        >>> backend = Counting(open_backend(tempfile.mkdtemp(), None))
        >>> backend.create_exclusive("a.json", b"{}")
        >>> backend.read("a.json"), Counting.calls
        (b'{}', 2)

    """

    def __init__(self, backend: AdminBackend) -> None:
        self.backend = backend
        self.url = backend.url

    @property
    def local(self) -> bool:
        """Whether the objects are on a local disk."""
        return self.backend.local

    def call(self, fn: Callable[[], T], what: str) -> T:
        """Run one call to the inner backend; ``what`` names it (``"reading <url>/<name>"``)."""
        return fn()

    def wrap(self, inner: AdminBackend) -> AdminBackend:
        """The same wrapper around ``inner`` (a child folder's backend)."""
        return type(self)(inner)

    def target(self, name: str | None = None) -> str:
        """The URL of object ``name`` (of the root when None)."""
        return self.url if name is None else f"{self.url.rstrip('/')}/{name}"

    def what(self, call: str, name: str | None = None) -> str:
        """How a call is named in messages: ``"<call> <url>[/<name>]"``."""
        return f"{call} {self.target(name)}"

    def entries(self) -> list[Entry]:
        """The objects directly under the root."""
        return self.call(self.backend.entries, self.what("listing"))

    def read(self, name: str) -> bytes:
        """A whole (small) object."""
        return self.call(lambda: self.backend.read(name), self.what("reading", name))

    def open_read(self, name: str) -> BinaryIO:
        """A stream over an object."""
        return self.call(lambda: self.backend.open_read(name), self.what("opening", name))

    def writer(self, name: str) -> BlobWriter:
        """A writer for a new object."""
        return self.call(lambda: self.backend.writer(name), self.what("opening", name))

    def create_exclusive(self, name: str, data: bytes) -> None:
        """Write a small object durably; ``FileExistsError`` when it exists already."""
        self.call(lambda: self.backend.create_exclusive(name, data), self.what("creating", name))

    def delete(self, name: str) -> None:
        """Remove an object; a missing one is not an error."""
        self.call(lambda: self.backend.delete(name), self.what("deleting", name))

    def delete_many(self, names: list[str]) -> None:
        """Remove objects in one request where the store can; missing ones are not errors."""
        if names:
            self.call(lambda: self.backend.delete_many(names), self.what("deleting in"))

    def list_children(self) -> list[str]:
        """Names of the folders directly under the root."""
        return self.call(self.backend.list_children, self.what("listing folders of"))

    def child(self, name: str) -> AdminBackend:
        """The backend of the folder ``name`` under the root, wrapped alike."""
        return self.wrap(self.backend.child(name))

    def exists(self) -> bool:
        """Whether the root exists."""
        return self.call(self.backend.exists, self.what("looking for"))

    def remove_root_if_empty(self) -> None:
        """Remove the root folder when nothing is left in it."""
        self.call(self.backend.remove_root_if_empty, self.what("removing"))

    def unfinished_uploads(self) -> list[Upload]:
        """Multipart uploads under the root that were never completed."""
        return self.call(self.backend.unfinished_uploads, self.what("listing uploads of"))

    def abort_upload(self, upload: Upload) -> None:
        """Abort one of :meth:`unfinished_uploads`."""
        self.call(lambda: self.backend.abort_upload(upload), self.what("aborting", upload.name))
