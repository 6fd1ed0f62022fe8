"""The HTTP API over real HTTP: the real server (uvicorn) on 127.0.0.1 with the tiny model.

Two servers are shared by the tests of this module: `server` with the default limits and no token,
and `secured` with a token, small limits and no queue. Tests that need to control the model loading
(or to break the pipeline) run `create_app` under an in-process uvicorn instead. The last tests
check that both servers still answer after every bad request before them.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from importlib import metadata
from pathlib import Path

import PIL.Image
import pytest
import requests
import trimesh
from PIL import ImageDraw

from conftest import EXAMPLES, TINY_MODEL
from live_server import ROOT, free_port, live_server, serve_in_process
from test_glb import _accessor_data, _chunks
from image_to_3d_dev.tiny_u2net import build_tiny_u2net

from remote.pipeline import GenerateOptions, GenerateResult, Pipeline
from remote.server.app import create_app
from remote.server.settings import ServerSettings, SettingsError

pytestmark = pytest.mark.slow  # live servers (uvicorn)

TOKEN = "s3cret-token-for-tests"
FAST = {"resolution": 32}
STAGES = ["decode", "preprocess", "model", "extraction", "color", "glb"]
SECURED_BODY_LIMIT = 3_000_000


# ---------------------------------------------------------------------------------------------
# Helpers


def encode(image: PIL.Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def object_on_white() -> PIL.Image.Image:
    image = PIL.Image.new("RGB", (160, 160), "white")
    ImageDraw.Draw(image).ellipse((40, 30, 120, 130), fill=(40, 160, 60))
    return image


@functools.cache
def sparse_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG of width x height: huge when decoded, small on disk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def chair() -> bytes:
    return (EXAMPLES / "chair.png").read_bytes()


def post(
    url: str,
    body: bytes,
    content_type: str | None = "image/png",
    params=None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    sent = dict(headers or {})
    if content_type:
        sent["Content-Type"] = content_type
    if token:
        sent["Authorization"] = f"Bearer {token}"
    return requests.post(
        url + "/v1/generate", data=body, headers=sent, params=FAST if params is None else params, timeout=120
    )


def assert_error(response: requests.Response, status: int, code: str) -> dict:
    """The response is our JSON error with this status and code, and carries a request id."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code, error
    assert len(error["message"]) > 20
    assert len(response.headers.get("X-Request-ID", "")) == 16
    return error


def health(url: str, status: int = 200) -> dict:
    response = requests.get(url + "/v1/health", timeout=5)
    assert response.status_code == status, response.text
    return response.json()


def assert_glb(response: requests.Response) -> trimesh.Trimesh:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "model/gltf-binary"
    scene = trimesh.load(io.BytesIO(response.content), file_type="glb")
    (mesh,) = scene.geometry.values()
    assert len(mesh.vertices) == int(response.headers["X-Mesh-Vertices"]) > 0
    assert len(mesh.faces) == int(response.headers["X-Mesh-Faces"]) > 0
    return mesh


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    return build_tiny_u2net(tmp_path_factory.mktemp("u2net") / "tiny_u2net.onnx")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("server")) as url:
        yield url


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    with live_server(
        tmp_path_factory.mktemp("secured"),
        token=TOKEN,
        max_body_bytes=SECURED_BODY_LIMIT,
        max_pixels=8_000_000,
        queue_size=0,
    ) as url:
        yield url


# ---------------------------------------------------------------------------------------------
# Images in, GLBs out


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (encode(object_on_white(), "PNG"), "image/png"),
        (encode(object_on_white(), "JPEG"), "image/jpeg"),
        (encode(object_on_white(), "WEBP"), "image/webp"),
        ((EXAMPLES / "robot.png").read_bytes(), "image/png; charset=binary"),  # RGBA: its own alpha
    ],
    ids=["png", "jpeg", "webp", "rgba"],
)
def test_valid_images_return_a_glb(server, body, content_type):
    response = post(server, body, content_type)
    assert_glb(response)
    entries = [entry.strip() for entry in response.headers["Server-Timing"].split(",")]
    assert [entry.split(";")[0] for entry in entries] == STAGES
    for entry in entries:
        name, duration = entry.split(";")
        assert duration.startswith("dur=") and float(duration[4:]) >= 0


def test_texture_size_gives_a_textured_glb_after_decimation(server):
    """texture_size=512: TEXCOORD_0 and a 512 x 512 JPEG in the material instead of COLOR_0, baked on
    the decimated mesh; the texture's stages in Server-Timing between "color" and "glb"."""
    response = post(server, chair(), params={"resolution": 48, "target_faces": 500, "texture_size": 512})
    mesh = assert_glb(response)
    assert len(mesh.faces) <= 600
    gltf, binary = _chunks(response.content)
    ((primitive,),) = [m["primitives"] for m in gltf["meshes"]]
    assert set(primitive["attributes"]) == {"POSITION", "TEXCOORD_0"}  # no COLOR_0
    uv = _accessor_data(gltf, binary, primitive["attributes"]["TEXCOORD_0"])
    assert uv.min() >= 0 and uv.max() <= 1
    material = gltf["materials"][primitive["material"]]
    texture = gltf["textures"][material["pbrMetallicRoughness"]["baseColorTexture"]["index"]]
    (image,) = gltf["images"]
    assert texture["source"] == 0 and image["mimeType"] == "image/jpeg"
    view = gltf["bufferViews"][image["bufferView"]]
    picture = PIL.Image.open(io.BytesIO(binary[view["byteOffset"] : view["byteOffset"] + view["byteLength"]]))
    assert picture.format == "JPEG" and picture.size == (512, 512)
    stages = [entry.strip().split(";")[0] for entry in response.headers["Server-Timing"].split(",")]
    assert stages == STAGES[:-1] + ["unwrap", "rasterise", "texture_color", "dilate", "encode", "glb"]


def test_texture_size_zero_is_vertex_colours(server):
    response = post(server, chair(), params={"resolution": 32, "texture_size": 0})
    assert_glb(response)
    gltf, _ = _chunks(response.content)
    ((primitive,),) = [m["primitives"] for m in gltf["meshes"]]
    assert "COLOR_0" in primitive["attributes"] and "images" not in gltf
    assert response.content == post(server, chair(), params={"resolution": 32}).content


def test_glb_is_gzipped_for_clients_that_ask(server):
    asked = post(server, chair(), headers={"Accept-Encoding": "gzip"})
    assert asked.headers["Content-Encoding"] == "gzip"
    assert int(asked.headers["Content-Length"]) < len(asked.content) / 1.5  # requests inflated it
    assert_glb(asked)
    plain = post(server, chair(), headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers and int(plain.headers["Content-Length"]) == len(plain.content)
    assert plain.content == asked.content


def test_options_reach_the_pipeline(server):
    coarse = assert_glb(post(server, chair(), params={"resolution": 32}))
    finer = assert_glb(post(server, chair(), params={"resolution": 48}))
    decimated = assert_glb(post(server, chair(), params={"resolution": 48, "target_faces": 500}))
    assert len(finer.faces) > len(coarse.faces)
    assert len(decimated.faces) <= 600 < len(finer.faces)


def test_health_reports_model_device_and_version(server):
    status = health(server)
    assert status["status"] == "ready" and status["device"] == "cpu"
    assert Path(status["model"]) == TINY_MODEL and "revision" in status
    assert status["version"] == metadata.version("image-to-3d")
    assert status["auth_required"] is False
    assert status["queue"] == {"active": 0, "limit": 5}


def test_queued_requests_all_succeed(server):
    """Three at once fit in the default queue (one running, four waiting): none is refused."""
    results: list[requests.Response] = []
    threads = [threading.Thread(target=lambda: results.append(post(server, chair()))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.status_code for r in results] == [200, 200, 200]


# ---------------------------------------------------------------------------------------------
# Bad requests


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"definitely not an image" * 20, 400, "invalid_image"),
        (encode(object_on_white(), "PNG")[:400], 400, "invalid_image"),
        (b"", 400, "invalid_image"),
        (sparse_png(30000, 30000), 413, "image_too_large"),
        (encode(PIL.Image.new("RGBA", (40, 40), (0, 0, 0, 0)), "PNG"), 400, "no_foreground"),
    ],
    ids=["garbage", "truncated", "empty", "30000x30000", "transparent"],
)
def test_bad_images_get_clear_errors(server, body, status, code):
    assert_error(post(server, body), status, code)


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream", "image/gif", None])
def test_wrong_content_type_is_415(server, content_type):
    error = assert_error(post(server, chair(), content_type), 415, "unsupported_media_type")
    assert "image/png" in error["message"]


def test_form_upload_is_415(server):
    response = requests.post(server + "/v1/generate", files={"image": ("chair.png", chair(), "image/png")}, timeout=30)
    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "params",
    [
        {"resolution": 16},
        {"resolution": 31},
        {"resolution": 513},
        {"resolution": "high"},
        {"threshold": 0},
        {"threshold": -1},
        {"threshold": "nan"},
        {"threshold": "inf"},
        {"foreground_ratio": 0.49},
        {"foreground_ratio": 1.5},
        {"remove_background": "maybe"},
        {"target_faces": 3},
        {"target_faces": 99},
        {"texture_size": 300},
        {"texture_size": -512},
        {"texture_size": 4096},
        {"texture_size": "big"},
    ],
    ids=lambda params: "{}={}".format(*next(iter(params.items()))),
)
def test_options_out_of_range_are_422(server, params):
    error = assert_error(post(server, chair(), params=params), 422, "invalid_option")
    assert next(iter(params)) in error["message"]


def test_unknown_route_and_method_are_json(server):
    assert_error(requests.get(server + "/v2/nothing", timeout=5), 404, "not_found")
    assert_error(requests.get(server + "/v1/generate", timeout=5), 405, "method_not_allowed")


def test_an_uploading_client_reads_the_error(server):
    """An error answered before the body is read (here 415) still reaches a client that is busy
    sending 6 MB with urllib (the add-on's HTTP library), instead of a connection reset."""
    request = urllib.request.Request(
        server + "/v1/generate", data=b"\0" * 6_000_000, method="POST", headers={"Content-Type": "text/plain"}
    )
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=60)
    assert answer.value.code == 415
    assert b"unsupported_media_type" in answer.value.read()


# ---------------------------------------------------------------------------------------------
# Token, limits, busy (the secured server: token, 3 MB body, 8 MP, no queue)


def test_token_is_required_and_checked(secured):
    response = post(secured, chair())
    missing = assert_error(response, 401, "unauthorized")
    assert "Bearer" in missing["message"] and response.headers["WWW-Authenticate"] == "Bearer"
    wrong = assert_error(post(secured, chair(), token="wrong-token-xyz"), 401, "unauthorized")
    assert TOKEN not in wrong["message"]
    basic = {"Authorization": f"Basic {TOKEN}"}
    assert_error(post(secured, chair(), headers=basic), 401, "unauthorized")
    assert_glb(post(secured, chair(), token=TOKEN))
    assert health(secured)["auth_required"] is True


def test_token_is_checked_before_anything_else(secured):
    """No token: 401 even when the content type and the options are wrong too."""
    assert_error(post(secured, b"x", "text/plain", params={"resolution": 1}), 401, "unauthorized")
    assert_error(
        post(secured, b"x", "text/plain", params={"resolution": 1}, token=TOKEN), 415, "unsupported_media_type"
    )


def test_token_never_reaches_the_log(secured):
    post(secured, chair(), token=TOKEN)
    post(secured, chair(), token="wrong-token-xyz")
    log = secured.log_path.read_text()
    assert "POST /v1/generate 401" in log and "POST /v1/generate 200" in log
    assert TOKEN not in log and "wrong-token-xyz" not in log


def test_declared_body_over_the_limit_is_refused_before_upload(secured):
    """Only headers are sent, announcing 1 GB: the 413 must come without waiting for the body."""
    with socket.create_connection(("127.0.0.1", int(secured.rsplit(":", 1)[1])), timeout=10) as connection:
        connection.sendall(
            b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            + f"Authorization: Bearer {TOKEN}\r\nContent-Length: 1000000000\r\n\r\n".encode()
        )
        answer = b""
        while b"body_too_large" not in answer:  # headers and body may come in separate packets
            part = connection.recv(4096)
            if not part:
                break
            answer += part
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert b"body_too_large" in answer


def test_streamed_body_over_the_limit_is_413(secured):
    """Chunked, no Content-Length: the limit holds while counting the stream."""

    def chunks():
        for _ in range(10):
            yield b"\0" * 500_000

    response = requests.post(
        secured + "/v1/generate",
        data=chunks(),
        params=FAST,
        timeout=60,
        headers={"Content-Type": "image/png", "Authorization": f"Bearer {TOKEN}"},
    )
    error = assert_error(response, 413, "body_too_large")
    assert f"{SECURED_BODY_LIMIT:,}" in error["message"]


def test_body_over_the_limit_reaches_an_urllib_client_as_413(secured):
    request = urllib.request.Request(
        secured + "/v1/generate",
        data=b"\x89PNG" + b"\0" * 5_500_000,
        method="POST",
        headers={"Content-Type": "image/png", "Authorization": f"Bearer {TOKEN}"},
    )
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=60)
    assert answer.value.code == 413


def test_pixel_limit_is_configurable(secured, server):
    image = sparse_png(3500, 3500)  # 12 MP: over the secured server's 8 MP, under the default 16 MP
    error = assert_error(post(secured, image, token=TOKEN), 413, "image_too_large")
    assert "8.0 MP" in error["message"]
    assert post(server, image, params={"resolution": 32, "remove_background": "never"}).status_code != 413


def test_busy_server_answers_503_with_retry_after(secured):
    """With no queue, a request that arrives while one runs is turned away at once."""
    results: list[requests.Response] = []
    running = threading.Thread(
        target=lambda: results.append(post(secured, chair(), params={"resolution": 128}, token=TOKEN))
    )
    running.start()
    deadline = time.monotonic() + 30
    while health(secured)["queue"]["active"] == 0:
        assert running.is_alive() and time.monotonic() < deadline, "the first request never started"
        time.sleep(0.01)
    busy = post(secured, chair(), token=TOKEN)
    running.join()
    assert_error(busy, 503, "busy")
    assert busy.headers["Retry-After"] == "5"
    assert_glb(results[0])
    assert health(secured)["queue"]["active"] == 0


# ---------------------------------------------------------------------------------------------
# Loading, load failures, our own bugs (create_app under an in-process uvicorn)


def test_health_says_loading_until_the_model_is_ready_and_loads_once(tiny_onnx):
    release, calls = threading.Event(), []

    def loader() -> Pipeline:
        calls.append(time.monotonic())
        assert release.wait(60), "the test never released the loader"
        return Pipeline.load(model=TINY_MODEL, device="cpu", rembg_model_path=tiny_onnx)

    with serve_in_process(create_app(ServerSettings(token=None), pipeline_loader=loader)) as url:
        started = time.monotonic()
        response = requests.get(url + "/v1/health", timeout=5)
        assert response.status_code == 503 and response.json()["status"] == "loading"
        assert int(response.headers["Retry-After"]) > 0
        assert time.monotonic() - started < 2  # answered while the model is still loading
        waiting = assert_error(post(url, chair()), 503, "loading")
        assert "loading" in waiting["message"]
        assert int(post(url, chair()).headers["Retry-After"]) > 0
        release.set()
        deadline = time.monotonic() + 60
        while requests.get(url + "/v1/health", timeout=5).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert health(url)["status"] == "ready" and health(url)["model"] == str(TINY_MODEL)
        assert_glb(post(url, chair()))
    assert len(calls) == 1


def test_model_that_fails_to_load_is_reported(tmp_path, caplog):
    """503 from health with a short public reason; the path and the cause only in the log."""
    missing = tmp_path / "no-such-model"
    app = create_app(ServerSettings(token=None), pipeline_loader=lambda: Pipeline.load(model=missing, device="cpu"))
    with caplog.at_level(logging.INFO, logger="image_to_3d.server"):
        with serve_in_process(app) as url:
            deadline = time.monotonic() + 30
            while (status := health(url, 503))["status"] == "loading":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert status["status"] == "error" and "log" in status["error"]
            assert str(missing) not in str(status) and str(tmp_path) not in str(status)
            response = post(url, chair())
            error = assert_error(response, 500, "model_load_failed")
            assert error["request_id"] == response.headers["X-Request-ID"]
            assert str(tmp_path) not in response.text
    assert any(str(missing) in record.getMessage() or str(missing) in str(record.exc_info) for record in caplog.records)


class BrokenPipeline(Pipeline):
    """A real pipeline with a bug of ours in it."""

    def generate(self, image, options: GenerateOptions | None = None, cancelled=None) -> GenerateResult:
        return {}["no such key"]


def test_our_own_bug_is_a_500_with_a_request_id(tiny_onnx, caplog):
    pipeline = BrokenPipeline.load(model=TINY_MODEL, device="cpu", rembg_model_path=tiny_onnx)
    with caplog.at_level(logging.INFO, logger="image_to_3d.server"):
        with serve_in_process(create_app(ServerSettings(token=None), pipeline=pipeline)) as url:
            response = post(url, chair())
            error = assert_error(response, 500, "internal_error")
            request_id = response.headers["X-Request-ID"]
            assert error["request_id"] == request_id and request_id in error["message"]
            assert "KeyError" not in response.text  # no internals to the client
            assert health(url)["status"] == "ready"
    failures = [r for r in caplog.records if request_id in r.getMessage() and r.exc_info]
    assert failures and failures[0].exc_info[0] is KeyError


# ---------------------------------------------------------------------------------------------
# `serve` and its settings


def test_serve_refuses_a_public_address_without_token():
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "remote.cli",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            str(free_port()),
            "--model",
            str(TINY_MODEL),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "IMAGE_TO_3D_TOKEN"},
    )
    assert run.returncode == 2
    assert "IMAGE_TO_3D_TOKEN" in run.stderr and "127.0.0.1" in run.stderr


def test_serve_says_it_listens_on_loopback_only(server, secured):
    assert "listening on loopback only" in server.log_path.read_text()
    assert "token required" in secured.log_path.read_text()


def test_settings_come_from_the_environment_and_flags_override_them(monkeypatch):
    from remote.cli import build_parser
    from remote.server.cli import settings_from_args

    for name, value in {
        "IMAGE_TO_3D_MODEL": "/models/a",
        "IMAGE_TO_3D_DEVICE": "cpu",
        "IMAGE_TO_3D_QUEUE_SIZE": "2",
        "IMAGE_TO_3D_MAX_BODY_BYTES": "1_000_000",
        "IMAGE_TO_3D_PRECISION": "fast",
        "IMAGE_TO_3D_TOKEN": "env-token-123",
    }.items():
        monkeypatch.setenv(name, value)
    from_env = settings_from_args(build_parser().parse_args(["serve"]))
    assert (
        from_env.model,
        from_env.device,
        from_env.queue_size,
        from_env.max_body_bytes,
        from_env.precision,
        from_env.token,
    ) == ("/models/a", "cpu", 2, 1_000_000, "fast", "env-token-123")
    flags = ["serve", "--model", "/models/b", "--queue-size", "0", "--max-body-bytes", "500", "--exact"]
    overridden = settings_from_args(build_parser().parse_args(flags))
    assert (overridden.model, overridden.queue_size, overridden.max_body_bytes, overridden.precision) == (
        "/models/b",
        0,
        500,
        "float32",
    )
    assert overridden.token == "env-token-123" and "env-token-123" not in repr(overridden)


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("IMAGE_TO_3D_QUEUE_SIZE", "many", "whole number"),
        ("IMAGE_TO_3D_QUEUE_SIZE", "-1", "at least 0"),
        ("IMAGE_TO_3D_MAX_PIXELS", "0", "at least 1"),
        ("IMAGE_TO_3D_PRECISION", "half", "precision"),
    ],
)
def test_bad_settings_are_refused_with_their_name(monkeypatch, variable, value, words):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as refused:
        ServerSettings()
    assert words in refused.value.message


# ---------------------------------------------------------------------------------------------
# The schema, and the servers after all of the above


def test_openapi_documents_the_binary_body_and_is_off_with_a_token(server, secured):
    schema = requests.get(server + "/openapi.json", timeout=5).json()
    generate = schema["paths"]["/v1/generate"]["post"]
    assert set(generate["requestBody"]["content"]) == {"image/png", "image/jpeg", "image/webp"}
    assert generate["responses"]["200"]["content"] == {
        "model/gltf-binary": {"schema": {"type": "string", "format": "binary"}}
    }
    assert {"Server-Timing", "X-Mesh-Vertices", "X-Mesh-Faces"} <= set(generate["responses"]["200"]["headers"])
    assert {"400", "401", "413", "415", "422", "500", "503"} <= set(generate["responses"])
    assert {p["name"] for p in generate["parameters"]} == {
        "resolution",
        "threshold",
        "foreground_ratio",
        "remove_background",
        "target_faces",
        "texture_size",
    }
    assert "security" not in generate
    for path in ("/openapi.json", "/docs", "/redoc"):  # a server with a token gives strangers no map
        assert requests.get(secured + path, timeout=5).status_code == 404


def test_servers_still_work_after_all_the_bad_requests(server, secured):
    for url, token in ((server, None), (secured, TOKEN)):
        assert health(url)["status"] == "ready"
        assert_glb(post(url, chair(), token=token))
        assert health(url)["queue"]["active"] == 0


def test_version_falls_back_to_the_environment_when_not_installed(monkeypatch):
    from importlib import metadata

    from remote.server import app as app_module

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(app_module.metadata, "version", not_installed)
    monkeypatch.setenv("IMAGE_TO_3D_VERSION", "9.9.9")
    assert app_module.service_version() == "9.9.9"
    monkeypatch.delenv("IMAGE_TO_3D_VERSION")
    assert app_module.service_version() == "unknown"
