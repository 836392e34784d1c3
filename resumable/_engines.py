"""Which engine runs this process, and a warning when its workers cannot share a store.

An engine (Dask, Ray) reschedules a task whose worker died onto another worker, often on
another machine or in another working folder. A store on local disk (the default
``./.resumable`` included) is then not the one the first worker wrote to: the task silently
starts over. The engines are detected without importing them: only a module the process
already imported is asked.

Example:
    >>> engine_worker() is None  # a doctest runs on no engine's worker
    True

"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

from ._backend import is_local

__all__ = ["WARNED", "engine_worker", "warn_if_unshared"]

log = logging.getLogger("resumable")

#: Set once the warning of :func:`warn_if_unshared` was logged in this process.
WARNED = threading.Event()
_LOCK = threading.Lock()


def _on_dask_worker() -> bool:
    distributed: Any = sys.modules.get("distributed")
    if distributed is None:
        return False
    try:
        distributed.get_worker()
    except Exception:  # ValueError("No worker found") outside a worker's task
        return False
    return True


def _on_ray_worker() -> bool:
    ray: Any = sys.modules.get("ray")
    if ray is None:
        return False
    try:
        if not ray.is_initialized():
            return False
        worker = getattr(ray.get_runtime_context(), "worker", None)
        return getattr(worker, "mode", None) == getattr(ray, "WORKER_MODE", 1)
    except Exception:  # a partial import, or an API that moved: not a worker we know
        return False


def engine_worker() -> str | None:
    """``"Dask"`` or ``"Ray"`` when this code runs in one of their workers' tasks, else None."""
    if _on_dask_worker():
        return "Dask"
    if _on_ray_worker():
        return "Ray"
    return None


def warn_if_unshared(store: str) -> None:
    """Log a warning, once per process, when an engine's worker uses a local-disk store."""
    if WARNED.is_set() or not is_local(store):
        return
    engine = engine_worker()
    if engine is None:
        return
    with _LOCK:
        if WARNED.is_set():
            return
        WARNED.set()
    log.warning(
        "running on a %s worker with a store on this machine's disk (%s): a task the engine "
        "moves to another worker will not find its snapshots there and starts over. Point "
        "every worker at one store: set RESUMABLE_STORE=s3://bucket/prefix (or another "
        "shared fsspec URL) in the workers' environment, or pass store= to @resumable. If "
        "this path is on a filesystem every worker mounts at the same place, ignore this.",
        engine,
        store,
    )
