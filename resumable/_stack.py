"""A checkpoint's storage, put together: the signing key, ``keep``, and the backend stack.

The one place that reads ``$RESUMABLE_SIGNING_KEY`` (:func:`resolve_signing_key`: a
``Checkpoint`` and ``resumable`` the command agree on the key), checks ``keep``
(:func:`check_keep`), and stacks the backend of a URL (:func:`open_stack`): retries and
deadlines over the network (or when asked for), pipelined transfers over the network.
"""

from __future__ import annotations

import os
from typing import Any

from ._backend import AdminBackend, open_backend
from ._errors import ConfigurationError
from ._pipe import PipelinedBackend
from ._retry import RetryingBackend, RetryPolicy

__all__ = ["SIGNING_KEY_ENV", "check_keep", "open_stack", "resolve_signing_key"]

#: The environment variable that holds the default signing key.
SIGNING_KEY_ENV = "RESUMABLE_SIGNING_KEY"


def open_stack(
    uri: str | os.PathLike[str],
    storage_options: dict[str, Any] | None,
    *,
    retry: RetryPolicy | None,
    policy: RetryPolicy,
) -> AdminBackend:
    """The backend of ``uri`` as a ``Checkpoint`` uses it.

    Per-call retries and deadlines (``policy``) cost a thread hop per call: worth it for
    networks, not for a local disk unless asked for (``retry`` given: NFS mounts can hang).
    Off the local disk, uploads and downloads overlap the work around them.
    """
    backend = open_backend(uri, storage_options)
    local = backend.local
    if retry is not None or not local:
        backend = RetryingBackend(backend, policy)
    if not local:
        backend = PipelinedBackend(backend)
    return backend


def check_keep(keep: object) -> int:
    """``keep``, checked: how many snapshots to keep is a whole number >= 1.

    Example:
        >>> try:
        ...     check_keep(0)
        ... except ConfigurationError as exc:
        ...     print(exc)
        keep must be a whole number >= 1, got 0

    """
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise ConfigurationError(f"keep must be a whole number >= 1, got {keep!r}")
    return keep


def resolve_signing_key(signing_key: bytes | str | None = None) -> bytes | None:
    """The signing key to use: ``signing_key``, else ``$RESUMABLE_SIGNING_KEY``, else None.

    The one place that reads the environment variable: a ``Checkpoint`` and ``resumable``
    (the command) agree on the key. A ``str`` is encoded as UTF-8; an empty key (passed, or
    in the variable) is a ``ConfigurationError``.

    Example:
        >>> resolve_signing_key("secret")
        b'secret'

    """
    key = signing_key if signing_key is not None else os.environ.get(SIGNING_KEY_ENV)
    if isinstance(key, str):
        key = key.encode()
    if key is not None and not key:
        raise ConfigurationError("signing_key is empty: pass a secret, or None")
    return key
