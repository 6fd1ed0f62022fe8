"""The pipeline stops a job whose client has gone, and an empty surface is always no_foreground.

Runs the tiny reference model on the CPU (the real pipeline, not a stand-in)."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from conftest import EXAMPLES, TINY_MODEL
from remote.errors import JobCancelledError, NoForegroundError
from remote.pipeline import GenerateOptions, Pipeline

ROBOT = (EXAMPLES / "robot.png").read_bytes()  # already cut out: no background removal needed


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return Pipeline.load(model=TINY_MODEL, device="cpu")


def test_a_job_cancelled_before_it_starts_never_decodes(pipeline):
    with pytest.raises(JobCancelledError):
        pipeline.generate(b"not even an image", GenerateOptions(resolution=32), cancelled=lambda: True)
    assert not pipeline._lock.locked()


def test_a_job_waiting_for_the_device_leaves_when_cancelled(pipeline):
    gone = threading.Event()
    errors: list[BaseException] = []

    def queued() -> None:
        try:
            pipeline.generate(ROBOT, GenerateOptions(resolution=32), cancelled=gone.is_set)
        except BaseException as error:  # the test looks at it
            errors.append(error)

    with pipeline._lock:  # another job holds the device
        worker = threading.Thread(target=queued)
        worker.start()
        time.sleep(0.3)
        gone.set()
        worker.join(timeout=2)
        assert not worker.is_alive(), "the queued job kept waiting after its client left"
    assert len(errors) == 1 and isinstance(errors[0], JobCancelledError)


@pytest.mark.slow  # a large grid, cancelled midway
def test_a_running_job_stops_between_chunks(pipeline):
    """Cancelled after a few checks (inside the extraction): it stops there, not at the end."""
    checks = 0

    def cancelled() -> bool:
        nonlocal checks
        checks += 1
        return checks > 4

    started = time.monotonic()
    with pytest.raises(JobCancelledError):
        pipeline.generate(ROBOT, GenerateOptions(resolution=256), cancelled=cancelled)
    assert checks == 5
    assert time.monotonic() - started < 15
    assert not pipeline._lock.locked()


def _empty_model_pipeline(device: str) -> Pipeline:
    """The tiny model with its decoder's last biases at -100: density ~0 everywhere, no surface."""
    empty = Pipeline.load(model=TINY_MODEL, device=device)
    last = [layer for layer in empty.model.decoder.layers if isinstance(layer, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.bias.fill_(-100.0)
    return empty


def test_a_model_that_sees_no_surface_is_no_foreground():
    empty = _empty_model_pipeline("cpu")
    with pytest.raises(NoForegroundError, match="threshold"):
        empty.generate(ROBOT, GenerateOptions(resolution=32, remove_background="never"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="warm-up runs only on CUDA")
def test_warm_up_tolerates_a_model_that_sees_no_surface():
    _empty_model_pipeline("cuda").warm_up()  # must not raise: the server starts anyway


def test_the_glb_is_written_after_the_device_is_free(pipeline, monkeypatch):
    """The GLB file is put together on the host without the device lock, so a server's next job can use the
    device meanwhile."""
    import remote.pipeline

    seen: list[bool] = []
    write = remote.pipeline.packed_to_glb

    def writing(*args, **kwargs):
        seen.append(pipeline._lock.locked())
        return write(*args, **kwargs)

    monkeypatch.setattr(remote.pipeline, "packed_to_glb", writing)
    result = pipeline.generate(ROBOT, GenerateOptions(resolution=32))

    assert seen == [False] and result.glb[:4] == b"glTF" and "glb" in result.timings


@pytest.mark.parametrize("texture_size", [0, 512])
def test_only_the_job_holding_the_device_waits_for_it(pipeline, monkeypatch, texture_size):
    """Stage timings wait for the device's queued work (a CUDA synchronize) only inside the device
    lock: a job decoding or writing its GLB meanwhile would otherwise wait for the other job's GPU work."""
    held: list[bool] = []
    monkeypatch.setattr(pipeline, "_sync", lambda: held.append(pipeline._lock.locked()))
    result = pipeline.generate(ROBOT, GenerateOptions(resolution=32, texture_size=texture_size))

    assert result.glb[:4] == b"glTF" and len(held) >= 5 and all(held), held


def test_a_missing_rembg_leaves_the_pipeline_serving_cut_outs(monkeypatch):
    """rembg that cannot be imported is 'background removal unavailable', not a dead server."""
    import sys

    monkeypatch.setitem(sys.modules, "rembg", None)  # `import rembg` now raises ImportError
    pipeline = Pipeline.load(model=TINY_MODEL, device="cpu")  # default u2net: nothing downloads before the import

    assert not pipeline.open_background_removal() and not pipeline.background_removal
    assert pipeline.generate(ROBOT, GenerateOptions(resolution=32)).glb[:4] == b"glTF"
