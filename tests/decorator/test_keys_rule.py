"""The key rule: NumPy scalars by value, torch devices and dtypes by name, the rest refused."""

from __future__ import annotations

import base64
import datetime
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resumable import StateError, ctx, resumable
from resumable._keys import call_key

np = pytest.importorskip("numpy")


def job(value: Any, state: int = 0) -> None:
    """A task signature to derive keys from."""


def key(value: Any) -> str:
    """The key of ``job(value)``."""
    return call_key(job, (value,), {}, "state")


@pytest.mark.parametrize(
    ("numpy_value", "plain"),
    [
        (np.int64(3), 3),
        (np.int32(-2), -2),
        (np.uint8(255), 255),
        (np.bool_(True), True),
        (np.float32(0.5), 0.5),
        (np.float64(0.1), 0.1),
        (np.str_("a"), "a"),
        (np.datetime64("2024-05-01"), datetime.date(2024, 5, 1)),
    ],
)
def test_numpy_scalar_is_keyed_as_its_python_value(numpy_value: Any, plain: Any) -> None:
    """A NumPy scalar gives the key of its Python value (.item()), alone or in containers."""
    assert key(numpy_value) == key(plain)
    assert key([numpy_value, {"n": numpy_value}]) == key([plain, {"n": plain}])


def test_different_numpy_scalars_give_different_keys() -> None:
    """Scalars that differ in value differ in key, as their Python values do."""
    assert key(np.int64(3)) != key(np.int64(4))
    assert key(np.int64(1)) != key(np.float64(1.0))
    assert key(np.float32(0.1)) != key(0.1)  # float32(0.1) is another number than 0.1


def test_numpy_dtype_is_keyed_by_its_name() -> None:
    """np.dtype("float32") has one key in every spelling, not that of the string "float32"."""
    assert key(np.dtype("float32")) == key(np.dtype(np.float32))
    assert key(np.dtype("float32")) != key(np.dtype("float64"))
    assert key(np.dtype("float32")) != key("float32")


def test_torch_device_and_dtype_are_keyed_by_their_names() -> None:
    """torch.device and torch.dtype are keyed by str(): stable, and not equal to the string."""
    torch = pytest.importorskip("torch")
    assert key(torch.device("cuda", 0)) == key(torch.device("cuda:0"))
    assert key(torch.device("cpu")) != key(torch.device("cuda:0"))
    assert key(torch.device("cpu")) != key("cpu")
    assert key(torch.float32) == key(torch.float)
    assert key(torch.float32) != key(torch.bfloat16)
    assert key({"device": torch.device("cpu"), "dtype": torch.int64}) == key(
        {"dtype": torch.int64, "device": torch.device("cpu")}
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.arange(3),
        lambda: np.array(3),  # a 0-d array is an array, not a scalar
        lambda: np.complex128(1j),  # its Python value, a complex, is no key either
        lambda: threading.Lock(),
    ],
)
def test_other_values_are_refused_with_the_rule_and_key(make: Callable[[], Any]) -> None:
    """Anything outside the rule raises StateError naming the type, the rule and key=."""
    value = make()
    with pytest.raises(StateError, match="key=") as info:
        key({"x": [value]})
    message = str(info.value)
    assert type(value).__qualname__ in message
    assert "NumPy scalars" in message
    assert "torch.device" in message
    assert "arguments['value']['x'][0]" in message


def test_tensor_is_refused() -> None:
    """A tensor argument is refused (its value is not hashed into a key): pass key=."""
    torch = pytest.importorskip("torch")
    with pytest.raises(StateError, match=r"torch\.Tensor.*key="):
        key(torch.zeros(2))


def test_task_called_with_a_numpy_int_resumes_the_plain_int_call(tmp_path: Path) -> None:
    """job(np.int64(3)) and job(3) are one call: the second resumes the first's snapshot."""
    seen: list[tuple[str, int]] = []

    @resumable(state=0, store=str(tmp_path), on_success="keep")
    def count(n: int, state: int = 0) -> Iterator[int]:
        seen.append((ctx().key, state))
        yield from range(state + 1, n + 1)

    count(np.int64(3))
    count(3)
    assert seen[0][0] == seen[1][0]
    assert [state for _, state in seen] == [0, 3]


def test_task_takes_torch_device_and_dtype(tmp_path: Path) -> None:
    """A task whose arguments are a torch.device and a torch.dtype runs with a derived key."""
    torch = pytest.importorskip("torch")
    keys: list[str] = []

    @resumable(store=str(tmp_path))
    def place(device: Any, dtype: Any) -> None:
        keys.append(ctx().key)

    place(torch.device("cpu"), torch.float32)
    place(torch.device("cpu"), torch.float64)
    assert keys[0] != keys[1]


# -- equal values, equal keys, in any process ------------------------------------------

_WORKER = """
import base64, pickle, sys
from tests.decorator.test_keys_rule import key
for line in sys.stdin:
    print(key(pickle.loads(base64.b64decode(line))), flush=True)
"""


@pytest.fixture(scope="module")
def key_in_another_process() -> Iterator[Callable[[Any], str]]:
    """``key`` computed by another interpreter (another hash seed: sets iterate differently)."""
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    assert worker.stdin is not None
    assert worker.stdout is not None
    stdin, stdout = worker.stdin, worker.stdout

    def key_there(value: Any) -> str:
        stdin.write(base64.b64encode(pickle.dumps(value)).decode() + "\n")
        stdin.flush()
        return stdout.readline().strip()

    yield key_there
    stdin.close()
    assert worker.wait() == 0
    stdout.close()


def _leaves() -> st.SearchStrategy[tuple[Any, Any]]:
    """Pairs (NumPy or plain value, the equal plain value)."""
    int64 = st.integers(-(2**63), 2**63 - 1)
    float32 = st.floats(width=32, allow_nan=False)
    return st.one_of(
        int64.map(lambda i: (np.int64(i), i)),
        st.integers().map(lambda i: (i, i)),
        float32.map(lambda f: (np.float32(f), float(np.float32(f)))),
        st.floats(allow_nan=False).map(lambda f: (np.float64(f), f)),
        st.booleans().map(lambda b: (np.bool_(b), b)),
        st.text(max_size=5).map(lambda s: (s, s)),
        st.binary(max_size=5).map(lambda b: (b, b)),
        st.none().map(lambda n: (n, n)),
    )


def _containers(
    children: st.SearchStrategy[tuple[Any, Any]],
) -> st.SearchStrategy[tuple[Any, Any]]:
    """Lists, tuples, sets and dicts of pairs, as pairs of containers."""
    pairs = st.lists(children, max_size=4)
    texts = st.text(max_size=3)
    sets = st.lists(st.one_of(st.integers(-1000, 1000), texts), max_size=4)
    return st.one_of(
        pairs.map(lambda ps: ([a for a, _ in ps], [b for _, b in ps])),
        pairs.map(lambda ps: (tuple(a for a, _ in ps), tuple(b for _, b in ps))),
        sets.map(lambda xs: ({np.int64(x) if isinstance(x, int) else x for x in xs}, set(xs))),
        st.dictionaries(texts, children, max_size=4).map(
            lambda d: ({k: a for k, (a, _) in d.items()}, {k: b for k, (_, b) in d.items()})
        ),
    )


@settings(max_examples=60, deadline=None)
@given(st.recursive(_leaves(), _containers, max_leaves=12))
def test_equal_values_give_equal_keys_in_any_process(
    key_in_another_process: Callable[[Any], str], pair: tuple[Any, Any]
) -> None:
    """Equal values (NumPy or plain) give one key here, and the same key in another process."""
    value, plain = pair
    assert key(value) == key(plain)
    assert key_in_another_process(value) == key(value)
