"""The HTTP API over real HTTP: a real uvicorn server on 127.0.0.1 with the tiny model."""

from __future__ import annotations

import io
import subprocess
import sys
import threading

import PIL.Image
import pytest
import requests
import trimesh
from PIL import ImageDraw

from conftest import EXAMPLES
from live_server import ROOT, free_port, live_server
from test_preprocess import huge_png

TOKEN = "s3cret-token"
FAST = {"resolution": 32}


def encode(image: PIL.Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def object_on_white() -> PIL.Image.Image:
    image = PIL.Image.new("RGB", (160, 160), "white")
    ImageDraw.Draw(image).ellipse((40, 30, 120, 130), fill=(40, 160, 60))
    return image


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("server")) as url:
        yield url


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    extra = ["--max-body-bytes", "400000", "--queue-size", "0", "--max-pixels", "20000000"]
    with live_server(tmp_path_factory.mktemp("secured"), token=TOKEN, extra_args=extra) as url:
        yield url


def post(url: str, body: bytes, content_type: str = "image/png", params=None, token: str | None = None):
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.post(url + "/v1/generate", data=body, headers=headers, params=params or FAST, timeout=120)


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and len(error["message"]) > 10
    assert response.headers.get("X-Request-ID")
    return error


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (encode(object_on_white(), "PNG"), "image/png"),
        (encode(object_on_white(), "JPEG"), "image/jpeg"),
        (encode(object_on_white(), "WEBP"), "image/webp"),
        ((EXAMPLES / "robot.png").read_bytes(), "image/png"),  # RGBA: skips background removal
    ],
    ids=["png", "jpeg", "webp", "rgba"],
)
def test_valid_images_return_a_glb(server, body, content_type):
    response = post(server, body, content_type)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "model/gltf-binary"
    scene = trimesh.load(io.BytesIO(response.content), file_type="glb")
    (mesh,) = scene.geometry.values()
    assert len(mesh.vertices) == int(response.headers["X-Mesh-Vertices"]) > 0
    assert len(mesh.faces) == int(response.headers["X-Mesh-Faces"]) > 0
    stages = [entry.split(";")[0].strip() for entry in response.headers["Server-Timing"].split(",")]
    assert stages == ["decode", "preprocess", "model", "extraction", "color", "glb"]
    assert all(";dur=" in entry for entry in response.headers["Server-Timing"].split(","))


def test_options_are_applied(server):
    body = (EXAMPLES / "chair.png").read_bytes()
    coarse = post(server, body, params={"resolution": 32})
    finer = post(server, body, params={"resolution": 48})
    decimated = post(server, body, params={"resolution": 48, "target_faces": 500})
    assert int(finer.headers["X-Mesh-Faces"]) > int(coarse.headers["X-Mesh-Faces"])
    assert int(decimated.headers["X-Mesh-Faces"]) <= 600


def test_health_reports_the_model(server):
    health = requests.get(server + "/v1/health", timeout=5).json()
    assert health["status"] == "ready" and health["device"] == "cpu"
    assert health["model"].endswith("triposr_tiny") and health["version"]
    assert health["auth_required"] is False


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"definitely not an image" * 20, "image/png", 400, "invalid_image"),
        (encode(object_on_white(), "PNG")[:400], "image/png", 400, "invalid_image"),
        (b"", "image/png", 400, "invalid_image"),
        (huge_png(30000, 30000), "image/png", 413, "image_too_large"),
        (encode(object_on_white(), "PNG"), "text/plain", 415, "unsupported_media_type"),
        (encode(object_on_white(), "PNG"), "application/octet-stream", 415, "unsupported_media_type"),
        (encode(PIL.Image.new("RGBA", (40, 40), (0, 0, 0, 0)), "PNG"), "image/png", 400, "no_foreground"),
    ],
    ids=["garbage", "truncated", "empty", "bomb", "text", "octet-stream", "transparent"],
)
def test_bad_requests_get_clear_errors(server, body, content_type, status, code):
    assert_error(post(server, body, content_type), status, code)


@pytest.mark.parametrize(
    "params",
    [
        {"resolution": 16}, {"resolution": 1024}, {"resolution": "high"}, {"threshold": -1},
        {"foreground_ratio": 0.2}, {"foreground_ratio": 1.5}, {"remove_background": "maybe"},
        {"target_faces": 3},
    ],
)
def test_options_out_of_range_are_422(server, params):
    error = assert_error(post(server, (EXAMPLES / "chair.png").read_bytes(), params=params), 422, "invalid_option")
    assert next(iter(params)) in error["message"]


def test_unknown_route_is_json(server):
    assert_error(requests.get(server + "/v2/nothing", timeout=5), 404, "not_found")


def test_server_still_works_after_bad_requests(server):
    test_bad_requests_get_clear_errors(server, b"junk" * 10, "image/png", 400, "invalid_image")
    assert requests.get(server + "/v1/health", timeout=5).json()["status"] == "ready"
    assert post(server, (EXAMPLES / "chair.png").read_bytes()).status_code == 200


def test_token_is_required_and_checked(secured):
    body = (EXAMPLES / "chair.png").read_bytes()
    assert_error(post(secured, body), 401, "unauthorized")
    error = assert_error(post(secured, body, token="wrong"), 401, "unauthorized")
    assert TOKEN not in error["message"]
    assert post(secured, body, token=TOKEN).status_code == 200
    assert requests.get(secured + "/v1/health", timeout=5).json()["auth_required"] is True


def test_body_over_the_limit_is_413(secured):
    big = b"\x89PNG" + b"\x00" * 500_000
    assert_error(post(secured, big, token=TOKEN), 413, "body_too_large")

    def chunks():  # no Content-Length: the limit must hold while streaming too
        for _ in range(10):
            yield b"\x00" * 100_000

    response = requests.post(
        secured + "/v1/generate", data=chunks(), params=FAST, timeout=60,
        headers={"Content-Type": "image/png", "Authorization": f"Bearer {TOKEN}"},
    )
    assert_error(response, 413, "body_too_large")


def test_pixel_limit_is_configurable(secured):
    assert_error(post(secured, huge_png(5000, 5000), token=TOKEN), 413, "image_too_large")


def test_busy_server_answers_503_with_retry_after(secured):
    body = (EXAMPLES / "chair.png").read_bytes()
    results: list[requests.Response] = []

    def send():
        results.append(post(secured, body, params={"resolution": 160}, token=TOKEN))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(200) >= 1 and 503 in statuses, statuses
    busy = next(r for r in results if r.status_code == 503)
    assert_error(busy, 503, "busy")
    assert int(busy.headers["Retry-After"]) > 0
    assert post(secured, body, token=TOKEN).status_code == 200


def test_health_says_loading_before_ready(tmp_path):
    with live_server(tmp_path, wait_ready=False) as url:
        first = requests.get(url + "/v1/health", timeout=5).json()["status"]
        assert first in ("loading", "ready")
        if first == "loading":
            assert_error(post(url, (EXAMPLES / "chair.png").read_bytes()), 503, "loading")


def test_serve_refuses_public_address_without_token():
    run = subprocess.run(
        [sys.executable, "-m", "remote.cli", "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={k: v for k, v in __import__("os").environ.items() if k != "IMAGE_TO_3D_TOKEN"},
    )
    assert run.returncode == 2 and "IMAGE_TO_3D_TOKEN" in run.stderr


def test_openapi_documents_the_binary_body(server):
    schema = requests.get(server + "/openapi.json", timeout=5).json()
    generate = schema["paths"]["/v1/generate"]["post"]
    assert set(generate["requestBody"]["content"]) == {"image/png", "image/jpeg", "image/webp"}
    assert "model/gltf-binary" in generate["responses"]["200"]["content"]
    names = {p["name"] for p in generate["parameters"]}
    assert names == {"resolution", "threshold", "foreground_ratio", "remove_background", "target_faces"}


def test_our_own_bug_is_a_500_with_a_request_id(caplog):
    """A pipeline that fails in an unexpected way (standing in for a bug of ours) behind the real app
    and a real uvicorn: the client gets a 500 with the request id, the log has the traceback."""
    import time as _time

    import uvicorn

    from remote.pipeline import Pipeline
    from remote.server.app import create_app
    from remote.server.settings import ServerSettings
    from remote.triposr.weights import load_model
    from conftest import TINY_MODEL
    from remote.preprocess import BackgroundRemover
    import torch

    class BrokenPipeline(Pipeline):
        def generate(self, image, options=None):
            raise ZeroDivisionError("a bug")

    pipeline = BrokenPipeline(load_model(TINY_MODEL, device="cpu"), torch.device("cpu"), BackgroundRemover())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(ServerSettings(token=None), pipeline=pipeline),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                requests.get(url + "/v1/health", timeout=1)
                break
            except requests.ConnectionError:
                _time.sleep(0.05)
        response = post(url, (EXAMPLES / "chair.png").read_bytes())
        error = assert_error(response, 500, "internal_error")
        assert error["request_id"] == response.headers["X-Request-ID"]
        assert error["request_id"] in error["message"]
        assert requests.get(url + "/v1/health", timeout=5).json()["status"] == "ready"
        assert any("failed with an internal error" in r.getMessage() for r in caplog.records)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
