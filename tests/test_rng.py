"""capture_rng / restore_rng: every global generator in use continues where it was."""

from __future__ import annotations

import pickle
import random
import subprocess
import sys

import pytest

from resumable.torch import capture_rng, restore_rng


def test_random_continues_after_restore() -> None:
    """Python's random draws the same numbers after a restore."""
    random.seed(1)
    states = capture_rng()
    expected = [random.random() for _ in range(5)]
    random.seed(99)
    restore_rng(states)
    assert [random.random() for _ in range(5)] == expected


def test_numpy_continues_after_restore() -> None:
    """NumPy's global generator, Gaussian cache included, continues after a restore."""
    np = pytest.importorskip("numpy")
    np.random.seed(3)
    np.random.normal()  # leaves a cached Gaussian behind
    states = pickle.loads(pickle.dumps(capture_rng()))
    expected = (np.random.normal(size=4), np.random.randint(0, 1000, size=4))
    np.random.seed(5)
    restore_rng(states)
    assert np.array_equal(np.random.normal(size=4), expected[0])
    assert np.array_equal(np.random.randint(0, 1000, size=4), expected[1])


def test_torch_continues_after_restore() -> None:
    """Torch's CPU generator draws the same dropout mask after a restore."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(4)
    states = pickle.loads(pickle.dumps(capture_rng()))
    expected = torch.nn.functional.dropout(torch.ones(64), 0.5)
    torch.manual_seed(8)
    restore_rng(states)
    assert torch.equal(torch.nn.functional.dropout(torch.ones(64), 0.5), expected)


def test_states_are_plain_data() -> None:
    """The states hold only builtins: they unpickle where torch and NumPy are absent."""
    pytest.importorskip("torch")
    pytest.importorskip("numpy")
    states = capture_rng()
    assert {"random", "numpy", "torch"} <= set(states)

    def plain(value: object) -> bool:
        if isinstance(value, dict):
            return all(plain(k) and plain(v) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return all(plain(v) for v in value)
        return isinstance(value, (int, float, str, bytes, type(None)))

    assert plain(states)


def test_capture_imports_nothing() -> None:
    """capture_rng imports neither torch nor NumPy; it captures only what is in use."""
    code = (
        "import sys, resumable.torch as rt\n"
        "states = rt.capture_rng()\n"
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, sorted(sys.modules)\n"
        "assert set(states) == {'version', 'random'}, states.keys()\n"
        "rt.restore_rng(states)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_restore_refuses_other_data() -> None:
    """restore_rng says what it takes when handed something else."""
    with pytest.raises(ValueError, match="capture_rng"):
        restore_rng({"random": random.getstate()})
