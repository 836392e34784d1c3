"""Snapshots of tensors on a device this machine lacks (CUDA) resume under map_location.

There is no GPU here: a "CUDA" snapshot is written by torch's own pickling (the path a CUDA
tensor takes) with the storages' location tag set to the GPU's, which is all that tells a
CUDA tensor's saved bytes from a CPU one's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

torch = pytest.importorskip("torch")

from resumable import StateError, resumable  # noqa: E402
from resumable import _statecodec as codec  # noqa: E402
from resumable.torch import map_location  # noqa: E402

#: The advice the error without a mapping must give.
ADVICE = 'with resumable.torch.map_location("cpu"):'


@contextlib.contextmanager
def saved_on(device: str) -> Iterator[None]:
    """Tensors pickled inside the block are saved as a machine with ``device`` saves them."""
    with pytest.MonkeyPatch.context() as patch:
        # A CUDA tensor is not the codec's (dense CPU) kind: torch pickles it, tagging each
        # storage with its device.
        patch.setattr(codec, "_plain_tensor", lambda torch, t: False)
        patch.setattr(torch.serialization, "location_tag", lambda storage: device)
        yield


def sample() -> dict[str, Any]:
    """Tensors of several dtypes and layouts, an nn.Parameter, and an Adam state after a step."""
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.ones(4, 3)).sum().backward()
    optimizer.step()
    grid = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "param": torch.nn.Parameter(torch.randn(2, 2)),
        "half": torch.randn(5).half(),
        "bf16": torch.randn(3, 1).bfloat16(),
        "ints": torch.arange(7),
        "mask": torch.tensor([True, False, True]),
        "view": grid[1:, ::2],  # an offset and strides
        "scalar": torch.tensor(2.5),
        "step": 3,
    }


def tensors(obj: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every tensor in a nest of dicts and lists, with where it sits."""
    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from tensors(value, f"{path}/{key}")
    elif isinstance(obj, (list, tuple)):
        for index, value in enumerate(obj):
            yield from tensors(value, f"{path}/{index}")


def assert_same(expected: dict[str, Any], actual: dict[str, Any], device: str = "cpu") -> None:
    """The same tensors (values, dtypes, shapes, strides, parameters), all on ``device``."""
    want, got = dict(tensors(expected)), dict(tensors(actual))
    assert want.keys() == got.keys()
    assert len(want) > 10
    for key, t in want.items():
        back = got[key]
        assert back.device.type == device, key
        assert (back.dtype, back.shape, back.stride()) == (t.dtype, t.shape, t.stride()), key
        assert type(back) is type(t), key
        assert back.requires_grad == t.requires_grad, key
        if device != "meta":
            assert torch.equal(back.detach(), t.detach()), key
    assert actual["step"] == expected["step"]


def encode(state: object, writer: str = "write") -> bytes:
    """``state``'s payload as the foreground (write) or background (capture) save writes it."""
    if writer == "capture":
        captured = codec.capture_state(state)
        data = b"".join(bytes(c) for c in captured())
        captured.close()
        return data
    out: list[Any] = []
    codec.write_state(state, out.append)
    return b"".join(bytes(c) for c in out)


def decode(data: bytes) -> Any:
    """The state a payload holds, read as a store streams it."""
    return codec.read_state([data[i : i + 1000] for i in range(0, len(data), 1000)], len(data))[0]


@pytest.mark.parametrize("writer", ["write", "capture"])
def test_cuda_state_resumes_on_the_cpu_under_map_location(writer: str) -> None:
    """A snapshot of cuda:0 tensors: a clear error by default, CPU tensors under the mapping."""
    state = sample()
    with saved_on("cuda:0"):
        data = encode(state, writer)
    with pytest.raises(StateError, match="saved on 'cuda:0'") as raised:
        decode(data)
    message = str(raised.value)
    assert ADVICE in message
    assert "torch.cuda.is_available() is False" in message
    assert "do not delete it" in message
    assert "another version" not in message
    with map_location("cpu"):
        assert_same(state, decode(data))
    with map_location(torch.device("cpu")):
        assert_same(state, decode(data))
    with pytest.raises(StateError, match=r"map_location\("):  # the block is over
        decode(data)


def test_a_whole_resumable_run_saved_on_a_gpu_resumes_here(tmp_path: Path) -> None:
    """A task that failed on a "GPU" machine resumes on this one under map_location("cpu")."""
    saved, seen = sample(), []

    @resumable(state=None, store=str(tmp_path), key="train")
    def train(state: Any = None) -> Iterator[Any]:
        if state is None:
            yield saved
            raise RuntimeError("preempted")
        seen.append(state)
        return state["step"]

    with saved_on("cuda:0"), pytest.raises(RuntimeError, match="preempted"):
        train()
    with pytest.raises(StateError, match=r"saved on 'cuda:0'.*map_location\(\"cpu\"\)"):
        train()
    with map_location("cpu"):
        assert train() == 3
    assert_same(saved, seen[0])


def test_an_async_task_resumes_under_map_location_entered_in_its_coroutine(
    tmp_path: Path,
) -> None:
    """An async generator task, awaited inside the block, loads its CUDA snapshot on the CPU."""
    saved = {"w": torch.arange(4.0), "step": 2}

    @resumable(state=None, store=str(tmp_path), key="crawl")
    async def crawl(state: Any = None) -> AsyncIterator[Any]:
        if state is None:
            yield saved
            raise RuntimeError("preempted")
        yield {"w": state["w"] + 1, "step": state["step"] + 1}

    async def resume() -> Any:
        with map_location("cpu"):
            return await crawl()

    with saved_on("cuda:0"), pytest.raises(RuntimeError, match="preempted"):
        asyncio.run(crawl())
    with pytest.raises(StateError, match="saved on 'cuda:0'"):
        asyncio.run(crawl())
    final = asyncio.run(resume())
    assert final["step"] == 3
    assert torch.equal(final["w"], saved["w"] + 1)


def test_a_dict_maps_the_devices_it_names_and_leaves_the_others() -> None:
    """{saved: device} moves the tensors of the devices it names; one it omits still fails."""
    state = sample()
    with saved_on("cuda:1"):
        data = encode(state)
    with map_location({"cuda:1": "cpu"}):
        assert_same(state, decode(data))
    with map_location({"cuda:0": "cpu"}), pytest.raises(StateError, match="'cuda:1'"):
        decode(data)


def test_a_function_places_each_storage_given_on_the_cpu() -> None:
    """A function gets each storage on the CPU with its saved device; None leaves it there."""
    gpu, cpu = torch.arange(6.0).reshape(2, 3), torch.arange(4)
    with saved_on("cuda:0"):
        cuda_part = encode({"gpu": gpu})
    calls: list[tuple[str, str]] = []

    def to_cpu(storage: Any, saved: str) -> Any:
        calls.append((storage.device.type, saved))
        return storage if saved.startswith("cuda") else None

    with map_location(to_cpu):
        back = decode(cuda_part)
        mixed = decode(encode({"cpu": cpu}))
    assert torch.equal(back["gpu"], gpu)
    assert back["gpu"].device.type == "cpu"
    assert torch.equal(mixed["cpu"], cpu)
    assert calls == [("cpu", "cuda:0"), ("cpu", "cpu")]


def test_a_device_maps_every_tensor_and_keeps_shared_storages_shared() -> None:
    """A device ("meta") takes CUDA and CPU tensors alike; views of one storage still share it."""
    base = torch.arange(12, dtype=torch.float32)
    state = sample()
    with saved_on("cuda:0"):
        data = encode(state)
    with map_location("meta"):
        assert_same(state, decode(data), device="meta")
        shared = decode(encode({"a": base[:6], "b": base[6:].view(2, 3)}))
    assert shared["a"].device.type == shared["b"].device.type == "meta"
    with map_location("cpu"):
        shared = decode(encode({"a": base[:6], "b": base[6:].view(2, 3)}))
    assert shared["a"].untyped_storage().data_ptr() == shared["b"].untyped_storage().data_ptr()
    assert torch.equal(shared["b"], base[6:].view(2, 3))


def test_meta_tensors_load_as_meta_with_or_without_a_mapping() -> None:
    """A meta tensor has no data: it comes back on meta, its dtype and shape kept."""
    data = encode({"m": torch.empty(3, 4, dtype=torch.float16, device="meta")})
    for location in (None, "cpu"):
        with map_location(location):
            back = decode(data)["m"]
        assert (back.device.type, back.dtype, back.shape) == ("meta", torch.float16, (3, 4))


@pytest.mark.parametrize("device", ["mps", "xpu:0", "cuda:3"])
def test_any_device_this_machine_lacks_is_named_in_the_error(device: str) -> None:
    """Tensors saved on a device torch cannot use here: the error names it; a dict maps it."""
    state = {"w": torch.arange(3.0), "step": 1}
    with saved_on(device):
        data = encode(state)
    with pytest.raises(StateError, match=f"saved on '{device}'"):
        decode(data)
    with map_location({device: "cpu"}):
        assert torch.equal(decode(data)["w"], state["w"])


def test_a_mapping_to_a_missing_device_says_so_too() -> None:
    """map_location("cuda:0") here: the same clear error, not advice to delete the snapshot."""
    with map_location("cuda:0"), pytest.raises(StateError, match="CUDA") as raised:
        decode(encode({"w": torch.ones(2)}))
    assert "do not delete it" in str(raised.value)


def test_payloads_of_one_plain_pickle_are_mapped_too() -> None:
    """A payload older than the records format (one cloudpickle) resumes under the mapping."""
    state = {"w": torch.arange(5.0), "step": 0}
    with saved_on("cuda:0"):
        data = cloudpickle.dumps(state)
    with pytest.raises(StateError, match="saved on 'cuda:0'"):
        decode(data)
    with map_location("cpu"):
        assert torch.equal(decode(data)["w"], state["w"])


@pytest.mark.parametrize(
    ("location", "error"),
    [(3, TypeError), ([("cuda:0", "cpu")], TypeError), ("cdua", RuntimeError)],
)
def test_a_location_torch_would_refuse_is_refused_at_once(
    location: object, error: type[Exception]
) -> None:
    """Not a device, dict or function, or a misspelt device: refused on entering the block."""
    with pytest.raises(error), map_location(location):
        pass


def test_the_mapping_holds_in_its_own_context_only() -> None:
    """Nested blocks restore the outer mapping; other threads do not see it."""
    import threading

    with saved_on("cuda:0"):
        data = encode({"w": torch.ones(2), "step": 0})
    results: list[str] = []

    def load_elsewhere() -> None:
        try:
            decode(data)
        except StateError:
            results.append("refused")

    with map_location("meta"):
        with map_location("cpu"):
            assert decode(data)["w"].device.type == "cpu"
        assert decode(data)["w"].device.type == "meta"
        thread = threading.Thread(target=load_elsewhere)
        thread.start()
        thread.join()
    assert results == ["refused"]
