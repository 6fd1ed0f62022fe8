"""The Modal front, run here: the real app under uvicorn on 127.0.0.1, a real pipeline behind it.

On Modal the front starts the GPU class's job with `Service().generate.spawn` and waits on the
FunctionCall. Here `spawn` starts a real Pipeline (tiny model, tiny u2net, CPU) in a thread and
returns a call with the same `get(timeout)` and `cancel()`; arguments, the result and any exception
go through pickle, as with Modal. It counts its calls: a stranger's request, or a malformed one,
must leave the count where it was; a client that hangs up cancels its job. The add-on's own client
(blender_addon/client.py, loaded without bpy) talks to it with its Bearer token.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import pickle
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import PIL.Image
import pytest
import requests

from conftest import EXAMPLES, TINY_MODEL
from live_server import ROOT, serve_in_process
from image_to_3d_dev.tiny_u2net import build_tiny_u2net

from remote.errors import ImageTo3DError, JobCancelledError
from remote.modal_front import create_front_app
from remote.pipeline import GenerateOptions, GenerateResult, Pipeline
from remote.server.settings import ServerSettings

TOKEN = "front-token-0123456789"
CHAIR = (EXAMPLES / "chair.png").read_bytes()
MAX_PIXELS = 1_000_000
MAX_BODY = 2_000_000

_spec = importlib.util.spec_from_file_location("addon_client_front", ROOT / "blender_addon" / "client.py")
client_module = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules["addon_client_front"] = client_module
_spec.loader.exec_module(client_module)  # type: ignore[union-attr]


class LocalCall:
    """A job started by LocalGpu: Modal's FunctionCall as far as the front uses it."""

    def __init__(self, run: Any) -> None:
        self.cancelled = threading.Event()
        self.finished = threading.Event()
        self.outcome: tuple[str, Any] = ("none", None)
        threading.Thread(target=self._run, args=(run,), daemon=True).start()

    def _run(self, run: Any) -> None:
        try:
            self.outcome = ("result", run(self.cancelled.is_set))
        except BaseException as error:  # handed to get(), as Modal re-raises the function's exception
            self.outcome = ("error", error)
        self.finished.set()

    def get(self, timeout: float | None = None) -> GenerateResult:
        if not self.finished.wait(timeout):
            raise TimeoutError
        kind, value = self.outcome
        if kind == "error":
            raise value
        return value

    def cancel(self) -> None:
        self.cancelled.set()


class LocalGpu:
    """Stands in for `Service().generate.spawn`: pickles across the boundary, counts calls, keeps the last."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.calls = 0
        self.fail_with: Exception | None = None
        self.last: LocalCall | None = None

    def __call__(self, image_bytes: bytes, options: dict[str, Any]) -> LocalCall:
        self.calls += 1
        image_bytes, options = pickle.loads(pickle.dumps((image_bytes, options)))
        if self.fail_with is not None:
            raise self.fail_with

        def run(cancelled: Any) -> GenerateResult:
            try:
                result = self.pipeline.generate(image_bytes, GenerateOptions(**options), cancelled)
            except ImageTo3DError as error:
                raise pickle.loads(pickle.dumps(error)) from None
            return pickle.loads(pickle.dumps(result))

        self.last = LocalCall(run)
        return self.last


@pytest.fixture(scope="module")
def gpu(tmp_path_factory: pytest.TempPathFactory) -> LocalGpu:
    onnx = build_tiny_u2net(tmp_path_factory.mktemp("front") / "u2net.onnx")
    return LocalGpu(Pipeline.load(TINY_MODEL, device="cpu", rembg_model_path=onnx, max_pixels=MAX_PIXELS))


@pytest.fixture(scope="module")
def front(gpu: LocalGpu) -> Iterator[str]:
    settings = ServerSettings(token=TOKEN, max_pixels=MAX_PIXELS, max_body_bytes=MAX_BODY, queue_size=1)
    with serve_in_process(create_front_app(gpu, settings, gpu_name="cuda (A10G on Modal)")) as url:
        yield url


@pytest.fixture(autouse=True)
def no_failure(gpu: LocalGpu) -> Iterator[None]:
    gpu.fail_with = None
    yield
    gpu.fail_with = None


def _post(
    url: str,
    body: bytes,
    content_type: str = "image/png",
    token: str | None = TOKEN,
    params: dict[str, Any] | None = None,
) -> requests.Response:
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.post(url + "/v1/generate", data=body, headers=headers, params=params, timeout=120)


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def test_health_is_answered_without_the_gpu(front: str, gpu: LocalGpu) -> None:
    before = gpu.calls

    response = requests.get(front + "/v1/health", timeout=5)

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready" and body["auth_required"] is True
    assert body["device"] == "cuda (A10G on Modal)" and body["model"] == "stabilityai/TripoSR"
    assert gpu.calls == before


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("no token", 401, "unauthorized"),
        ("wrong token", 401, "unauthorized"),
        ("not an image type", 415, "unsupported_media_type"),
        ("body over the limit", 413, "body_too_large"),
        ("option out of range", 422, None),
        ("garbage bytes", 400, "invalid_image"),
        ("empty body", 400, "invalid_image"),
        ("too many pixels", 413, "image_too_large"),
    ],
)
def test_strangers_and_malformed_requests_never_reach_the_gpu(
    front: str, gpu: LocalGpu, case: str, status: int, code: str | None
) -> None:
    before = gpu.calls
    request = {
        "no token": lambda: _post(front, CHAIR, token=None),
        "wrong token": lambda: _post(front, CHAIR, token="front-token-wrong-one"),
        "not an image type": lambda: _post(front, b"hello", "text/plain"),
        "body over the limit": lambda: _post(front, b"\0" * (MAX_BODY + 1)),
        "option out of range": lambda: _post(front, CHAIR, params={"resolution": 4}),
        "garbage bytes": lambda: _post(front, b"\x89PNG not really"),
        "empty body": lambda: _post(front, b""),
        "too many pixels": lambda: _post(front, _png(1100, 1000)),
    }[case]

    response = request()

    assert response.status_code == status, response.text
    if code is not None:
        assert response.json()["error"]["code"] == code
    assert gpu.calls == before


def test_api_docs_are_not_served(front: str) -> None:
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert requests.get(front + path, timeout=5).status_code == 404


def test_valid_work_runs_once_on_the_gpu_and_is_logged_in_one_line(
    front: str, gpu: LocalGpu, caplog: pytest.LogCaptureFixture
) -> None:
    before = gpu.calls
    with caplog.at_level(logging.INFO, logger="image_to_3d.server"):
        response = _post(front, CHAIR, params={"resolution": 64})

    assert response.status_code == 200, response.text
    assert response.content[:4] == b"glTF" and int(response.headers["X-Mesh-Faces"]) > 0
    assert gpu.calls == before + 1
    stages = response.headers["Server-Timing"]
    assert stages.startswith("check;dur=") and "decode;dur=" in stages
    request_id = response.headers["X-Request-ID"]
    lines = [r.getMessage() for r in caplog.records if request_id in r.getMessage()]
    assert len(lines) == 1
    assert "POST /v1/generate 200" in lines[0] and "decode;dur=" in lines[0]
    assert all(TOKEN not in record.getMessage() for record in caplog.records)


def test_an_error_of_the_gpu_side_keeps_its_code(front: str, gpu: LocalGpu) -> None:
    blank = io.BytesIO()
    PIL.Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(blank, "PNG")  # all transparent: nothing there

    response = _post(front, blank.getvalue(), params={"resolution": 32})

    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "no_foreground"


def test_a_failed_gpu_call_is_a_clear_503(front: str, gpu: LocalGpu) -> None:
    gpu.fail_with = RuntimeError("the container failed to start")

    response = _post(front, CHAIR, params={"resolution": 32})

    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "gpu_unavailable" and "retry" in error["message"]
    assert "the container failed to start" not in response.text  # no internals to the client


def test_the_addon_client_works_against_the_front_with_its_bearer_token(front: str, gpu: LocalGpu) -> None:
    client = client_module.Client(front, token=TOKEN, timeout=120)
    before = gpu.calls

    report = client.test_connection()
    result = client.generate(CHAIR, {"resolution": 64})

    assert report.ok and report.status == "ready" and "token accepted" in report.message
    assert result.glb[:4] == b"glTF" and result.faces and result.faces > 0
    assert gpu.calls == before + 1  # the connection test itself never reached the GPU
    refused = client_module.Client(front, token="front-token-wrong-one").test_connection
    with pytest.raises(client_module.ClientError):
        refused()


@pytest.mark.slow  # waits for a cancelled job
def test_a_client_that_hangs_up_cancels_its_gpu_job(front: str, gpu: LocalGpu) -> None:
    """The add-on's Cancel closes its connection: the front cancels the GPU call, the job stops
    between stages or field chunks, and the next request is served (on Modal: FunctionCall.cancel)."""
    port = int(front.rsplit(":", 1)[1])
    head = (
        f"POST /v1/generate?resolution=320 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(CHAIR)}\r\n\r\n"
    ).encode()
    before = gpu.calls
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(head + CHAIR)
        deadline = time.monotonic() + 30
        while gpu.calls == before:
            assert time.monotonic() < deadline, "the job never reached the GPU"
            time.sleep(0.05)
        time.sleep(0.5)  # the job is under way (a whole one at 320 takes many seconds here)
    call = gpu.last
    assert call is not None
    assert call.cancelled.wait(5), "the front did not cancel the GPU call"
    assert call.finished.wait(15), "the cancelled job kept running"
    assert call.outcome[0] == "error" and isinstance(call.outcome[1], JobCancelledError)

    response = _post(front, CHAIR, params={"resolution": 32})
    assert response.status_code == 200, response.text
