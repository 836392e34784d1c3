"""Task state <-> a stream of records, with array and tensor memory out of band.

A state payload is ``MAGIC`` followed by records, each a one-byte tag and an 8-byte length:

- ``P``: a piece of the pickle stream (cloudpickle, protocol 5);
- ``B``: the raw bytes of one out-of-band buffer (a NumPy array's data, a tensor's storage),
  in the order the pickle's ``NEXT_BUFFER`` opcodes take them;
- ``X``: extras stored beside the state (a small pickled dict: ``{"rng": ...}``), which a
  load that does not ask for them ignores;
- ``E``: the end (length 0).

Writing streams: pickle pieces and buffers go to a ``write`` callable as they are produced, the
buffers as views of the state's own memory (no copy, no whole-payload bytes object), so the
store hashes and writes while the pickler walks the state. Every ``B`` record comes before the
``P`` bytes that hold its opcode (the pickler calls back before it flushes its frame), so a
reader that meets a ``B`` record while looking for pickle bytes queues the buffer, and the
unpickler finds it there. Reading streams too: each buffer is read once, into the bytearray
the array or tensor then lives in.

Torch tensors (dense, on the CPU) are reduced here to their storage's bytes plus their layout,
one buffer per storage, so that tensors sharing a storage share it again after a load;
torch's own pickling would copy each storage through ``torch.save`` into an in-band bytes
object. Torch pickles the others (CUDA ones); :data:`tensor_location` places them all at a load.

:func:`capture_state` writes the same records into copies of the buffers (``_capture``: a
pool of reusable buffers, copies on the CPU pool; ``BufferPool`` is re-exported here for the
callers that pass one), so that the state may change while they are written.

The other format is one plain cloudpickle (:func:`dumps_state` / :func:`loads_state`): the
decorator keeps a task's initial state so, and payloads written before the records are so.
:func:`read_state` reads both; the errors for state that cannot be pickled or unpickled are
made here, once, for both.
"""

from __future__ import annotations

import contextvars
import io
import mmap
import pickle
import struct
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import cloudpickle

from ._capture import BufferPool, CapturedState, Copies
from ._errors import StateError, unpickle_error
from ._stream import Chunk, anonymous_memory

__all__ = [
    "MAGIC",
    "BufferPool",
    "Write",
    "capture_state",
    "dumps_state",
    "loads_state",
    "read_state",
    "write_state",
]

#: The first bytes of a state payload in this format (a pickle starts with 0x80).
MAGIC = b"\x00RSTATE1"
_HEAD = struct.Struct("<cQ")
_PICKLE, _BUFFER, _EXTRAS, _END = b"P", b"B", b"X", b"E"
#: Pickle bytes are handed on in pieces of about this size; buffers in slices of it.
_PIECE = 4 << 20

#: Where a payload's bytes go, in order. A chunk handed over is never mutated afterwards.
Write = Callable[[Chunk], None]

#: ``f(storage, saved_device)``: where loaded tensor storages go (map_location). None: where saved.
tensor_location: contextvars.ContextVar[Callable[[Any, str], Any] | None]
tensor_location = contextvars.ContextVar("tensor_location", default=None)


def _pickle_error(obj: object, exc: BaseException) -> StateError:
    return StateError(
        f"cannot pickle the task state ({type(obj).__name__}): {exc}. Yield picklable "
        "values (numbers, dicts, dataclasses, arrays), or keep files in Dir() state."
    )


#: One message for state that fails to unpickle, with the advice that fits its cause.
_unpickle_error = unpickle_error


def dumps_state(obj: object) -> bytes:
    """``obj`` as one plain cloudpickle (lambdas and local classes included).

    The decorator keeps a task's initial state this way; snapshots are written with
    :func:`write_state` or :func:`capture_state`.
    """
    try:
        data: bytes = cloudpickle.dumps(obj)
    except Exception as exc:
        raise _pickle_error(obj, exc) from exc
    return data


def loads_state(data: bytes) -> Any:
    """The object of one plain cloudpickle: :func:`dumps_state`'s, or a payload older than records.

    Unpickling runs code: only load stores you trust (or sign them).
    """
    try:
        return _Unpickler(io.BytesIO(data)).load()
    except StateError:
        raise
    except Exception as exc:
        raise _unpickle_error(exc) from exc


class _Out(io.RawIOBase):
    """The pickler's file: pickle bytes become ``P`` records of about ``_PIECE`` bytes."""

    def __init__(self, emit: Write) -> None:
        super().__init__()
        self._emit = emit
        self._buf = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        n = len(memoryview(data).cast("B"))
        if n >= _PIECE:  # a large in-band object: hand it on without another copy
            self.flush_piece()
            self._emit(_HEAD.pack(_PICKLE, n))
            self._emit(bytes(data) if not isinstance(data, bytes) else data)
            return n
        self._buf += data
        if len(self._buf) >= _PIECE:
            self.flush_piece()
        return n

    def flush_piece(self) -> None:
        if self._buf:
            piece, self._buf = self._buf, bytearray()
            self._emit(_HEAD.pack(_PICKLE, len(piece)))
            self._emit(piece)


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle, with dense CPU torch tensors reduced to their storage's bytes."""

    def __init__(self, file: Any, buffer_callback: Callable[[pickle.PickleBuffer], Any]) -> None:
        super().__init__(file, protocol=5, buffer_callback=buffer_callback)
        self._storages: dict[tuple[int, int], _Storage] = {}
        self._torch = sys.modules.get("torch")

    def reducer_override(self, obj: Any) -> Any:
        torch = self._torch
        if torch is not None and type(obj) in (torch.Tensor, torch.nn.Parameter):
            reduced = self._reduce_tensor(torch, obj)
            if reduced is not None:
                return reduced
        return super().reducer_override(obj)

    def _reduce_tensor(self, torch: Any, t: Any) -> Any:
        if not _plain_tensor(torch, t):
            return None
        storage = t.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        ref = self._storages.get(key) if key[1] else None
        if ref is None:
            ref = _Storage(torch.empty(0, dtype=torch.uint8).set_(storage))
            if key[1]:
                self._storages[key] = ref  # the pickle memo then shares it
        args = (
            ref,
            t.dtype,
            t.storage_offset(),
            tuple(t.shape),
            t.stride(),
            t.requires_grad,
            type(t) is torch.nn.Parameter,
        )
        return _tensor_from, args


def _plain_tensor(torch: Any, t: Any) -> bool:
    """Whether ``t`` is a dense CPU tensor and nothing more than its storage and layout.

    Not one with autograd history, a lazy conjugate or negation, quantization or attributes
    of its own: torch's own pickling keeps those.
    """
    return not (
        t.layout != torch.strided
        or t.device.type != "cpu"
        or t.is_quantized
        or t.grad_fn is not None
        or t.is_conj()
        or t.is_neg()
        or getattr(t, "__dict__", None)
    )


class _Storage:
    """One torch storage's bytes, pickled as one (out-of-band) buffer."""

    __slots__ = ("data",)

    def __init__(self, data: Any) -> None:
        self.data = data  # a uint8 tensor over the whole storage

    def __reduce__(self) -> Any:
        return _storage_from, (pickle.PickleBuffer(self.data.numpy()),)


def _storage_from(buf: Any) -> Any:
    """A uint8 tensor over ``buf`` (no copy): the storage of the tensors that use it."""
    import torch

    if isinstance(buf, bytes):  # an in-band copy: torch wants a writable buffer
        buf = bytearray(buf)
    empty = not len(memoryview(buf))
    t = torch.empty(0, dtype=torch.uint8) if empty else torch.frombuffer(buf, dtype=torch.uint8)
    if tensor_location.get() is None:
        return t
    storage = _placed(t.untyped_storage(), "cpu")
    return torch.empty(0, dtype=torch.uint8, device=storage.device).set_(storage)


def _placed(storage: Any, saved: str) -> Any:
    """``storage``, saved on device ``saved``, where :data:`tensor_location` (or torch) puts it."""
    where = tensor_location.get() or sys.modules["torch"].serialization.default_restore_location
    try:
        return where(storage, saved)
    except RuntimeError as exc:  # no such device here: no CUDA, no such GPU
        raise StateError(
            f"cannot load the saved task state: it holds tensors saved on {saved!r}, which "
            f"cannot be placed on this machine ({str(exc).partition('. ')[0]}). Resume inside "
            '`with resumable.torch.map_location("cpu"):` to load them onto the CPU (or another '
            "device); the snapshot is fine: do not delete it. CPU tensors resume anywhere."
        ) from exc


class _Unpickler(pickle.Unpickler):
    """pickle's, with the storages torch pickled itself (``torch.save`` bytes) put by _placed."""

    def find_class(self, module: str, name: str) -> Any:
        found = super().find_class(module, name)  # imports torch if need be
        if module != "torch.storage" or name != "_load_from_bytes":
            return found
        torch = sys.modules["torch"]
        return lambda data: torch.load(io.BytesIO(data), weights_only=False, map_location=_placed)


def _tensor_from(
    storage: Any,
    dtype: Any,
    offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool,
    parameter: bool,
) -> Any:
    """Rebuild a tensor that :class:`_Pickler` reduced."""
    import torch

    t = storage.new_empty(0, dtype=dtype).set_(storage.untyped_storage(), offset, size, stride)
    if parameter:
        return torch.nn.Parameter(t, requires_grad=requires_grad)
    return t.requires_grad_() if requires_grad else t


#: Buffers at least this large are anonymous memory maps rather than bytearrays.
_MAP_MIN = 1 << 20


def new_buffer(size: int) -> bytearray | mmap.mmap:
    """Writable memory of ``size`` bytes for a buffer about to be filled.

    A large buffer is anonymous memory whose pages are faulted in ahead, in bulk, without
    holding the GIL (``_stream.anonymous_memory``); a small one a ``bytearray``.

    Example:
        >>> len(new_buffer(3)), len(new_buffer(2 << 20))
        (3, 2097152)

    """
    if size < _MAP_MIN:
        return bytearray(size)
    return anonymous_memory(size)


class _Sink:
    """``write``, remembering what it raised: a storage fault, which is no pickling error."""

    def __init__(self, write: Write) -> None:
        self._write = write
        self.failure: BaseException | None = None

    def __call__(self, chunk: Chunk) -> None:
        try:
            self._write(chunk)
        except BaseException as exc:
            self.failure = exc
            raise


def _emit_buffer(write: Write, view: memoryview) -> None:
    write(_HEAD.pack(_BUFFER, view.nbytes))
    for start in range(0, view.nbytes, _PIECE):
        write(view[start : start + _PIECE])


def write_state(obj: object, write: Write, *, extras: dict[str, Any] | None = None) -> None:
    """Stream ``obj`` (and ``extras``) as a state payload to ``write``, buffers uncopied.

    The buffers handed to ``write`` are views of ``obj``'s memory: ``obj`` must not change
    until the bytes are written (``@resumable`` holds the task at its ``yield`` meanwhile).
    """
    sink = _Sink(write)
    sink(MAGIC)
    out = _Out(sink)

    def on_buffer(buf: pickle.PickleBuffer) -> bool:
        _emit_buffer(sink, buf.raw())
        return False  # out of band

    _dump(obj, out, on_buffer, sink)
    _finish(sink, out, extras)


def capture_state(
    obj: object, *, extras: dict[str, Any] | None = None, pool: BufferPool | None = None
) -> CapturedState:
    """``obj``'s state payload as chunks that hold copies: later changes to ``obj`` cannot reach it.

    Buffers are copied with one ``memcpy`` each (into buffers of ``pool`` when they fit), far
    cheaper than hashing or writing them; calling the result gives the chunks, which can be
    written later, from another thread, as often as needed; ``close()`` hands the buffers
    back to ``pool``.
    """
    captured = CapturedState(pool)
    chunks = captured.chunks
    chunks.append(MAGIC)
    out = _Out(chunks.append)

    def on_buffer(buf: pickle.PickleBuffer) -> bool:
        raw = buf.raw()
        chunks.append(_HEAD.pack(_BUFFER, raw.nbytes))
        copy = captured.take(raw.nbytes)
        copies.copy(copy, raw)  # finished before capture_state returns
        chunks.append(copy)
        return False

    copies = Copies()
    try:
        try:
            _dump(obj, out, on_buffer)
            _finish(chunks.append, out, extras)
        finally:
            copies.wait()
    except BaseException:
        captured.close()
        raise
    return captured


def _dump(
    obj: object,
    out: _Out,
    on_buffer: Callable[[pickle.PickleBuffer], bool],
    sink: _Sink | None = None,
) -> None:
    try:
        _Pickler(out, on_buffer).dump(obj)
    except StateError:
        raise
    except Exception as exc:
        if sink is not None and sink.failure is not None:
            # The pickler was fine; the store failed under it (an I/O error, spent tries),
            # which the store retries or reports as a StorageError: pass it on unchanged.
            raise
        raise _pickle_error(obj, exc) from exc


def _finish(write: Write, out: _Out, extras: dict[str, Any] | None) -> None:
    out.flush_piece()
    if extras:
        try:
            data = cloudpickle.dumps(extras, protocol=5)
        except Exception as exc:
            raise _pickle_error(extras, exc) from exc
        write(_HEAD.pack(_EXTRAS, len(data)))
        write(data)
    write(_HEAD.pack(_END, 0))


#: Without the payload's size, a buffer claiming more than this is not allocated at once but
#: grows as its bytes arrive: a corrupt length must not cost gigabytes before it is found out.
_GROW_ABOVE = 16 << 20


class _Reader(io.RawIOBase):
    """The unpickler's file: the bytes of ``P`` records; buffers met on the way are queued.

    With ``size`` (the whole payload's, from its manifest), a record that claims more bytes
    than are left is refused before anything is allocated for it.
    """

    def __init__(self, chunks: Iterator[Chunk], size: int | None = None) -> None:
        super().__init__()
        self._chunks = chunks
        self._size = size
        self._buf = memoryview(b"")
        self._received = 0  # bytes taken from ``chunks`` so far
        self._left = 0  # bytes left in the current P record
        self.buffers: deque[bytearray | mmap.mmap] = deque()
        self.extras: dict[str, Any] = {}
        self.ended = False
        #: What the chunk source raised (a digest mismatch, a storage error), if it did.
        self.source_failure: BaseException | None = None

    def readable(self) -> bool:
        return True

    def _more(self) -> bool:
        while True:
            try:
                chunk = next(self._chunks, None)
            except BaseException as exc:
                self.source_failure = exc
                raise
            if chunk is None:
                return False
            if len(chunk):
                self._buf = memoryview(chunk).cast("B")
                self._received += len(self._buf)
                return True

    def _claim(self, n: int, what: str) -> None:
        """Refuse a record of ``n`` bytes that the rest of the payload cannot hold."""
        if self._size is None:
            return
        # Every record is followed at least by the end record's head.
        left = self._size - (self._received - len(self._buf)) - _HEAD.size
        if n > left:
            raise StateError(
                f"the state payload is corrupt: a {what} record claims {n} bytes, more than "
                f"the {max(left, 0)} its payload has left for it"
            )

    def raw(self, n: int) -> bytes:
        """Exactly ``n`` bytes of the payload (fewer only at its end)."""
        if len(self._buf) >= n:
            out, self._buf = self._buf[:n], self._buf[n:]
            return bytes(out)
        parts = bytearray()
        while len(parts) < n and (self._buf or self._more()):
            take = min(n - len(parts), len(self._buf))
            parts += self._buf[:take]
            self._buf = self._buf[take:]
        return bytes(parts)

    def _raw_into(self, view: memoryview) -> None:
        done = 0
        while done < len(view):
            if not self._buf and not self._more():
                raise StateError("the state payload ends inside a buffer")
            take = min(len(view) - done, len(self._buf))
            view[done : done + take] = self._buf[:take]
            self._buf = self._buf[take:]
            done += take

    def _grown(self, n: int) -> bytearray:
        """A buffer of ``n`` bytes grown as they arrive: a length not known to be possible."""
        buf = bytearray()
        while len(buf) < n:
            if not self._buf and not self._more():
                raise StateError("the state payload ends inside a buffer")
            take = min(n - len(buf), len(self._buf))
            buf += self._buf[:take]
            self._buf = self._buf[take:]
        return buf

    def _buffer(self, n: int) -> bytearray | mmap.mmap:
        """The next ``n`` bytes as a buffer of their own (allocated at once when plausible)."""
        if self._size is None and n > _GROW_ABOVE:
            return self._grown(n)
        buf = new_buffer(n)
        self._raw_into(memoryview(buf))
        return buf

    def _extras(self, n: int) -> dict[str, Any]:
        data = self.raw(n)
        if len(data) < n:
            raise StateError("the state payload ends inside its extras")
        extras: dict[str, Any] = pickle.loads(data)
        return extras

    def next_record(self) -> bool:
        """Move to the next ``P`` record, taking in the others; False at the end."""
        while not self.ended:
            head = self.raw(_HEAD.size)
            if len(head) < _HEAD.size:
                raise StateError("the state payload ends without its end record")
            tag, n = _HEAD.unpack(head)
            if tag == _PICKLE:
                self._claim(n, "pickle")
                self._left = n
                return True
            if tag == _BUFFER:
                self._claim(n, "buffer")
                self.buffers.append(self._buffer(n))
            elif tag == _EXTRAS:
                self._claim(n, "extras")
                self.extras = self._extras(n)
            elif tag == _END:
                if n:
                    raise StateError(f"the state payload's end record has a length ({n})")
                self.ended = True
            else:
                raise StateError(f"the state payload has an unknown record {tag!r}")
        return False

    def readinto(self, b: Any) -> int:
        # Whole, across chunks and P records: the unpickler reads a large bytes object with
        # one call and takes a short count for the end of the pickle (a truncated payload).
        view = memoryview(b).cast("B")
        done = 0
        while done < len(view):
            if self._left == 0 and not self.next_record():
                break
            if not self._buf and not self._more():
                raise StateError("the state payload ends inside its pickle")
            take = min(len(view) - done, self._left, len(self._buf))
            view[done : done + take] = self._buf[:take]
            self._buf = self._buf[take:]
            self._left -= take
            done += take
        return done

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        out = bytearray(size)
        return bytes(out[: self.readinto(out)])  # readinto is short only at the end

    def readline(self, size: int | None = -1) -> bytes:
        line = bytearray()
        while not line.endswith(b"\n"):
            c = self.read(1)
            if not c:
                break
            line += c
        return bytes(line)

    def pop_buffer(self) -> bytearray | mmap.mmap:
        if not self.buffers:
            raise StateError("the state payload's pickle asks for a buffer it does not hold")
        return self.buffers.popleft()

    def rest(self) -> Iterator[Chunk]:
        """What is left of the payload (its end must be all that is)."""
        if self._buf:
            yield self._buf
            self._buf = memoryview(b"")
        yield from self._chunks


def read_state(chunks: Iterable[Chunk], size: int | None = None) -> tuple[Any, dict[str, Any]]:
    """The state and extras of a payload, read as it streams; old plain pickles too.

    Reads ``chunks`` to their end (a store checks its digest there). ``size``, the payload's
    length as its manifest records it, bounds what a record may claim; without it, a large
    buffer grows as its bytes arrive. What ``chunks`` raises (a digest mismatch, a storage
    error) passes through as it is, so that a store can tell a corrupt payload from one
    that cannot be unpickled. Unpickling runs code: only read payloads you trust (a signed
    store verifies before this is called).
    """
    reader = _Reader(iter(chunks), size)
    head = reader.raw(len(MAGIC))
    if head != MAGIC:  # written before this format: one cloudpickle of the state
        return loads_state(head + b"".join(bytes(c) for c in reader.rest())), {}
    try:

        def buffers() -> Iterator[bytearray | mmap.mmap]:
            while True:
                yield reader.pop_buffer()

        obj = _Unpickler(reader, buffers=buffers()).load()
    except StateError:
        raise
    except Exception as exc:
        if reader.source_failure is not None:
            raise  # the payload's source failed, not its unpickling
        raise _unpickle_error(exc) from exc
    if reader.next_record():
        raise StateError("the state payload holds pickle bytes after its end")
    if any(len(c) for c in reader.rest()):
        raise StateError("the state payload holds bytes after its end record")
    return obj, reader.extras
