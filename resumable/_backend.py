"""Opening a store's backend: the only module that talks to fsspec.

:func:`open_backend` gives the disk backend (``_local``) for a local path (one rule,
:func:`is_local`) and :class:`FsspecBackend` for any other fsspec URL: one PUT per object,
an exclusive create where the storage has one. The protocols and the base of wrappers are
``_objects``, re-exported here.

Three traps are caught at this boundary: a URL with one slash (``s3:/bucket``, what a
``pathlib.Path`` makes of ``s3://bucket``), which would be a local folder named ``s3:``, is
refused (:func:`check_store_url`); a cloud store reached without credentials raises a
``StorageError`` that says how to give them, instead of the client library's own error; and a
URL that names one object, not a folder (flyte's ``.../_flytecheckpoints``), is refused with a
``ConfigurationError`` by its first listing (:func:`not_a_folder`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Concatenate, ParamSpec, Protocol, TypeVar

import fsspec
from fsspec.implementations.memory import MemoryFileSystem

from ._errors import ConfigurationError, StorageError
from ._local import (
    FOLDER_MODE,
    OBJECT_MODE,
    LocalBackend,
    NotAnObjectError,
    TempSweep,
    not_a_folder,
)
from ._objects import (
    AdminBackend,
    Backend,
    BlobWriter,
    Entry,
    ForwardingBackend,
    Upload,
    iter_read,
)
from ._stream import CHUNK_SIZE

__all__ = [
    "FOLDER_MODE",
    "OBJECT_MODE",
    "AdminBackend",
    "Backend",
    "BlobWriter",
    "Entry",
    "ForwardingBackend",
    "FsspecBackend",
    "LocalBackend",
    "NotAnObjectError",
    "TempSweep",
    "Upload",
    "check_store_url",
    "credentials_error",
    "is_local",
    "iter_read",
    "local_path",
    "missing_credentials",
    "not_a_folder",
    "open_backend",
]

P = ParamSpec("P")
T = TypeVar("T")

#: A scheme and a colon: what starts a URL (one letter is a Windows drive: ``C:/data``).
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):(?!//)(.*)$", re.DOTALL)


def check_store_url(url: str | os.PathLike[str]) -> None:
    """Refuse a store that looks like a URL but would be a local folder.

    ``s3:/bucket/x`` (one slash; also what ``pathlib.Path("s3://bucket/x")`` becomes) has no
    ``://``, so fsspec takes it for a relative path and a save would create the folder
    ``./s3:/bucket/x``. So does ``s3:bucket/x`` for a protocol fsspec knows.

    Example:
        >>> check_store_url("s3://bucket/x"), check_store_url("runs/store")
        (None, None)
        >>> check_store_url("s3:/bucket/x")
        Traceback (most recent call last):
        ...
        resumable.ConfigurationError: store 's3:/bucket/x' ... Write 's3://bucket/x' ...

    """
    text = os.fspath(url)
    found = _SCHEME.match(text)
    if found is None or "::" in text or found.group(1).lower() == "data":
        return  # not a URL, a chained one, or fsspec's data: URL (which has no '//')
    scheme, rest = found.groups()
    if not rest.startswith("/") and scheme.lower() not in fsspec.available_protocols():
        return  # "run:2" is a folder name; only known protocols are taken for URLs
    local = scheme.lower() in ("file", "local")
    fixed = f"{scheme}://{rest if local else rest.lstrip('/')}"
    raise ConfigurationError(
        f"store {text!r} looks like a URL without its '//': as it is, it would be a local "
        f"folder named {scheme + ':'!r}. Write {fixed!r} (a pathlib.Path turns '//' into "
        "'/': pass a URL as a str)"
    )


#: Errors that mean the store was reached without valid credentials, by class: botocore's
#: (s3fs), google-auth's (gcsfs), azure-core's and azure-identity's (adlfs). Named, not
#: imported: each package is installed only with its backend.
_CREDENTIAL_ERRORS = frozenset(
    {
        "botocore.exceptions.NoCredentialsError",
        "botocore.exceptions.PartialCredentialsError",
        "botocore.exceptions.CredentialRetrievalError",
        "google.auth.exceptions.DefaultCredentialsError",
        "google.auth.exceptions.RefreshError",
        "azure.core.exceptions.ClientAuthenticationError",
        "azure.identity._exceptions.CredentialUnavailableError",
    }
)


def missing_credentials(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) says the credentials are missing or bad.

    Example:
        >>> missing_credentials(ConnectionResetError()), missing_credentials(OSError("x"))
        (False, False)

    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        names = {f"{c.__module__}.{c.__qualname__}" for c in type(current).__mro__}
        if names & _CREDENTIAL_ERRORS:
            return True
        # gcsfs answers a request without credentials (401) with its HttpError.
        if "gcsfs.retry.HttpError" in names and getattr(current, "code", None) == 401:
            return True
        current = current.__cause__ or current.__context__
    return False


#: How to give credentials, per protocol family: the environment, or ``storage_options``.
_CREDENTIAL_HINTS = {
    "s3": (
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment, "
        "or pass storage_options={'key': ..., 'secret': ...} ({'anon': True} for a public "
        "bucket)"
    ),
    "gs": (
        "run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS to "
        "a service account's key file, or pass storage_options={'token': ...}"
    ),
    "az": (
        "set AZURE_STORAGE_CONNECTION_STRING (or AZURE_STORAGE_ACCOUNT_NAME and "
        "AZURE_STORAGE_ACCOUNT_KEY) in the environment, or pass storage_options="
        "{'account_name': ..., 'account_key': ...}"
    ),
}
_FAMILIES = {"s3a": "s3", "gcs": "gs", "abfs": "az", "abfss": "az", "adl": "az"}


def credentials_error(url: str, exc: BaseException) -> StorageError:
    """The ``StorageError`` for store ``url`` reached without valid credentials (``exc``).

    Example:
        >>> print(credentials_error("s3://bucket/runs", PermissionError("no credentials")))
        no valid credentials for s3://bucket/runs (PermissionError: no credentials): set ...

    """
    protocol = str(fsspec.core.split_protocol(url)[0] or "")
    hint = _CREDENTIAL_HINTS.get(_FAMILIES.get(protocol, protocol))
    how = hint or "give them in the environment or in storage_options, as its fsspec backend says"
    return StorageError(
        f"no valid credentials for {url} ({type(exc).__name__}: {exc}): {how}. In code, "
        "storage_options go in Storage(storage_options=...), for Checkpoint(storage=...) "
        "and @resumable(storage=...); the command takes them from the environment only"
    )


class _HasUrl(Protocol):
    url: str


H = TypeVar("H", bound=_HasUrl)


def _authenticated(method: Callable[Concatenate[H, P], T]) -> Callable[Concatenate[H, P], T]:
    """``method``, whose missing-credentials errors become a ``StorageError`` with the fix.

    Such an error is no transient fault: as a ``StorageError`` it is never retried.
    """

    @functools.wraps(method)
    def call(self: H, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            if not missing_credentials(exc):
                raise
            raise credentials_error(self.url, exc) from exc

    return call


def is_local(url: str | os.PathLike[str]) -> bool:
    """Whether ``url`` names a folder on this machine's disk: the one rule for "a local store".

    A path, ``file://`` or ``local://`` (fsspec's protocols of its local filesystem); a
    chained URL (``simplecache::...``) is not.

    Example:
        >>> is_local("/data/store"), is_local("file:///data"), is_local("s3://bucket/runs")
        (True, True, False)

    """
    text = os.fspath(url)
    protocol, _ = fsspec.core.split_protocol(text)
    return "::" not in text and protocol in (None, "file", "local")


def local_path(url: str | os.PathLike[str]) -> str:
    """The folder a local ``url`` (see :func:`is_local`) names on this machine's disk.

    Example:
        >>> local_path("file:///data/store"), local_path("/data/store")
        ('/data/store', '/data/store')

    """
    return str(fsspec.core.strip_protocol(os.fspath(url)))


def open_backend(
    uri: str | os.PathLike[str], storage_options: dict[str, Any] | None
) -> AdminBackend:
    """The backend for ``uri``: local paths (see :func:`is_local`) get the disk backend."""
    text = os.fspath(uri)
    if not text:
        raise ConfigurationError("checkpoint URI is empty: pass a folder path or an fsspec URL")
    check_store_url(text)
    try:
        fs, path = fsspec.url_to_fs(text, **(storage_options or {}))
    except (ImportError, ValueError) as exc:
        raise ConfigurationError(
            f"cannot open store {text!r}: {exc}. Check the URL's protocol and install the "
            "fsspec backend for it (s3fs for s3://, gcsfs for gs://, adlfs for az://)."
        ) from exc
    except Exception as exc:  # gcsfs looks for its credentials when it is made
        if missing_credentials(exc):
            raise credentials_error(text, exc) from exc
        raise
    if is_local(text):
        return LocalBackend(Path(path))
    return FsspecBackend(fs, path.rstrip("/"), text)


class _FsspecWriter:
    """One fsspec file opened for writing; object stores publish it on close."""

    def __init__(self, fs: Any, path: str, url: str) -> None:
        self._fs = fs
        self._path = path
        self.url = url
        self._file: Any = fs.open(path, "wb")

    @_authenticated  # an upload in parts starts only when the first part is full
    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._file.write(data)

    @_authenticated
    def commit(self) -> None:
        self._file.close()

    def abort(self) -> None:
        file = self._file
        discard = getattr(file, "discard", None)
        with contextlib.suppress(Exception):
            if discard is None:
                file.close()
            else:
                discard()  # aborts an unfinished multipart upload instead of publishing it
        if discard is not None and not getattr(file, "closed", True):
            # discard() leaves the file open, and closing it later (explicitly or when it is
            # garbage collected) would try to publish what was buffered: mark it closed.
            with contextlib.suppress(AttributeError):
                file.closed = True
        with contextlib.suppress(FileNotFoundError, OSError):
            self._fs.rm_file(self._path)


#: fsspec protocols whose ``pipe_file(mode="create")`` is one atomic create-if-absent. (fsspec's
#: default ``pipe_file`` checks, then writes: not atomic, and two requests.)
_ATOMIC_CREATE = frozenset({"memory", "s3", "s3a", "gs", "gcs"})


#: Protocols whose filesystems delete a list of names in batches, past missing ones.
_BATCH_DELETES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


class FsspecBackend:
    """Any fsspec filesystem: one PUT per object, exclusive create where supported."""

    local = False

    def __init__(self, fs: Any, root: str, url: str) -> None:
        self.fs = fs
        self.root = root
        self.url = url

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def _ls(self) -> list[dict[str, Any]]:
        # Listings are cached per filesystem instance; another writer may have committed since.
        self.fs.invalidate_cache(self.root)
        try:
            entries: list[dict[str, Any]] = self.fs.ls(self.root, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        if len(entries) == 1 and self._is_root(entries[0]):
            # fsspec lists an object as itself: the root names an object, not a prefix.
            raise not_a_folder(self.url, self.url)
        return entries

    def _is_root(self, info: dict[str, Any]) -> bool:
        """Whether a listed ``info`` is the root itself as an object.

        A folder marker (a key ending in "/", which a store may keep for an emptied prefix)
        is no object.
        """
        name = str(info["name"])
        if info.get("type") != "file" or name.endswith("/"):
            return False
        return bool(name.strip("/")) and name.strip("/") == self.root.strip("/")

    @_authenticated
    def entries(self) -> list[Entry]:
        out = []
        for info in self._ls():
            # Object stores may list a "folder" marker (a key ending in "/") for a prefix
            # whose objects are gone: it is not one of our objects.
            if info.get("type") != "file" or str(info["name"]).endswith("/"):
                continue
            mtime = info.get("mtime") or info.get("LastModified") or info.get("created")
            stamp: float | None
            if mtime is not None and hasattr(mtime, "timestamp"):
                stamp = float(mtime.timestamp())
            elif isinstance(mtime, int | float):
                stamp = float(mtime)
            else:
                stamp = None
            out.append(Entry(info["name"].rstrip("/").rsplit("/", 1)[-1], int(info["size"]), stamp))
        return out

    @_authenticated
    def list_children(self) -> list[str]:
        return sorted(
            info["name"].rstrip("/").rsplit("/", 1)[-1]
            for info in self._ls()
            if info.get("type") == "directory"
        )

    @_authenticated
    def read(self, name: str) -> bytes:
        data: bytes = self.fs.cat_file(self._path(name))
        return data

    @_authenticated
    def open_read(self, name: str) -> BinaryIO:
        stream: BinaryIO = self.fs.open(self._path(name), "rb", block_size=CHUNK_SIZE * 8)
        return stream

    @_authenticated
    def writer(self, name: str) -> BlobWriter:
        return _FsspecWriter(self.fs, self._path(name), f"{self.url.rstrip('/')}/{name}")

    @contextlib.contextmanager
    def _refused_means_exists(self, path: str) -> Iterator[None]:
        """Map a refused conditional write to ``FileExistsError``.

        S3 and GCS answer a refused precondition (If-None-Match: *, ifGenerationMatch=0) with
        412; clients report it as FileExistsError only when the answer names the condition,
        which not every server does (SeaweedFS: an EINVAL OSError).
        """
        try:
            yield
        except FileExistsError:
            raise
        except OSError as exc:
            if self._precondition_failed(exc):
                raise FileExistsError(errno.EEXIST, "exists", path) from exc
            raise

    def _creates_atomically(self) -> bool:
        return not _ATOMIC_CREATE.isdisjoint(_protocols(self.fs))

    @_authenticated
    def create_exclusive(self, name: str, data: bytes) -> None:
        path = self._path(name)
        if isinstance(self.fs, MemoryFileSystem):
            # Its "create" asks exists(), which for a missing name scans every object held
            # in memory: a save would cost more the more snapshots exist. Its objects are a
            # dict: ask that. (In-process, as atomic as its own "xb": check, then store.)
            if path in self.fs.store:
                raise FileExistsError(errno.EEXIST, "exists", path)
            self.fs.pipe_file(path, data)
            return
        if self._creates_atomically():
            # One request, no existence check first: S3 PutObject with If-None-Match: *,
            # GCS one upload with ifGenerationMatch=0 (its "xb" mode puts the precondition on
            # a resumable upload's first request instead, which not every GCS server
            # enforces: fake-gcs-server, for one, overwrites), memory: an in-process "xb".
            # Both object stores refuse an existing name with 412.
            with self._refused_means_exists(path):
                self.fs.pipe_file(path, data, mode="create")
            return
        try:
            with self._refused_means_exists(path), self.fs.open(path, "xb") as f:
                f.write(data)
        except (ValueError, NotImplementedError, TypeError):
            # No exclusive mode on this backend: check, then write. Documented as racy.
            if self.fs.exists(path):
                raise FileExistsError(errno.EEXIST, "exists", path) from None
            self.fs.pipe_file(path, data)

    @_authenticated
    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(name))

    @_authenticated
    def delete_many(self, names: list[str]) -> None:
        if len(names) > 1 and _BATCH_DELETES.intersection(_protocols(self.fs)):
            # One request on S3 (DeleteObjects), GCS and Azure (batches), which skip missing
            # objects and go on past them.
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm([self._path(n) for n in names])
            return
        # Elsewhere ``rm`` of a list is a loop that stops at the first missing name (and
        # goes newest first): one call per name, in order, each missing one skipped.
        for name in names:
            self.delete(name)

    def child(self, name: str) -> AdminBackend:
        root = f"{self.root}/{name}" if self.root else name
        return FsspecBackend(self.fs, root, f"{self.url.rstrip('/')}/{name}")

    @_authenticated
    def exists(self) -> bool:
        if not self.root:
            return True  # the filesystem's top, e.g. "memory://"
        self.fs.invalidate_cache(self.root)
        # A prefix holding only an unfinished upload has no object yet, but gc has work there.
        return bool(self.fs.isdir(self.root)) or bool(self.unfinished_uploads())

    def remove_root_if_empty(self) -> None:
        pass  # an object store's "folder" is only a prefix: it goes with its last object

    @_authenticated
    def unfinished_uploads(self) -> list[Upload]:
        if not hasattr(self.fs, "list_multipart_uploads"):
            return []
        bucket, prefix = self._bucket_and_key("")
        found = []
        for upload in self.fs.list_multipart_uploads(bucket):
            key = str(upload.get("Key", ""))
            if not key.startswith(prefix):
                continue
            when = upload.get("Initiated")
            found.append(
                Upload(
                    name=key[len(prefix) :],
                    upload_id=str(upload["UploadId"]),
                    initiated=float(when.timestamp()) if hasattr(when, "timestamp") else None,
                )
            )
        return found

    @_authenticated
    def abort_upload(self, upload: Upload) -> None:
        bucket, key = self._bucket_and_key(upload.name)
        self.fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload.upload_id)

    def _bucket_and_key(self, name: str) -> tuple[str, str]:
        """The bucket of the root, and the key of ``name`` under it ("" for the root/)."""
        bucket, _, prefix = self.root.partition("/")
        return bucket, f"{prefix}/{name}" if prefix else name

    @staticmethod
    def _precondition_failed(exc: BaseException) -> bool:
        """Whether ``exc`` (or what it was raised from) is an HTTP 412 "precondition failed" answer.

        s3fs wraps botocore's ``ClientError``, whose ``response`` holds the error code and the
        HTTP status; gcsfs's ``HttpError`` carries the status as ``code``.
        """
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            response = getattr(current, "response", None)
            if isinstance(response, dict):
                error = response.get("Error") or {}
                meta = response.get("ResponseMetadata") or {}
                if error.get("Code") == "PreconditionFailed" or meta.get("HTTPStatusCode") == 412:
                    return True
            if getattr(current, "code", None) == 412:
                return True
            current = current.__cause__ or current.__context__
        return False
