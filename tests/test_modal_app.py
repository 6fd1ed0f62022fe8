"""The Modal deployment, checked offline.

Modal's servers are out of reach here, so these tests check what can be checked without them: the
weight-preparation code runs for real against a local HTTP server, and the Modal definitions
(class, GPU, timeouts, secret, image steps) are read back from the objects `remote/modal_app.py`
builds and compared with pyproject.toml and docs/deploy.md.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from remote.errors import ImageTo3DError, ModelLoadError
from remote.weights_cache import PinnedFile, fetch_pinned, is_verified, prepare_weights

REPO_ROOT = Path(__file__).resolve().parent.parent


# --- weight preparation, against a real HTTP server on 127.0.0.1 ---------------------------------


@dataclass
class FileServer:
    """A static file server on a free local port that counts the GET requests it answers."""

    root: Path
    port: int = 0
    requests: list[str] = field(default_factory=list)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[FileServer]:
    served = tmp_path / "served"
    served.mkdir()
    server_state = FileServer(root=served)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(served), **kwargs)  # type: ignore[arg-type]

        def do_GET(self) -> None:
            server_state.requests.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _publish(server: FileServer, name: str, content: bytes, algorithm: str = "sha256") -> PinnedFile:
    (server.root / name).write_bytes(content)
    digest = hashlib.new(algorithm, content).hexdigest()
    return PinnedFile(name=f"sub/{name}", url=server.url(name), algorithm=algorithm, digest=digest,
                      size=len(content))


def test_prepare_weights_downloads_and_verifies_sha256_and_md5(file_server: FileServer, tmp_path: Path) -> None:
    checkpoint = _publish(file_server, "model.ckpt", b"weights" * 50_000, "sha256")
    onnx = _publish(file_server, "u2net.onnx", b"onnx-bytes" * 1000, "md5")
    folder = tmp_path / "weights"

    paths = prepare_weights(folder, [checkpoint, onnx])

    assert paths == [folder / "sub/model.ckpt", folder / "sub/u2net.onnx"]
    assert paths[0].read_bytes() == b"weights" * 50_000
    assert paths[1].read_bytes() == b"onnx-bytes" * 1000
    assert all(is_verified(path, pinned) for path, pinned in zip(paths, [checkpoint, onnx]))
    assert not list(folder.rglob("*.part"))


def test_verified_files_are_not_downloaded_again(file_server: FileServer, tmp_path: Path) -> None:
    pinned = _publish(file_server, "model.ckpt", b"abc" * 1000)
    folder = tmp_path / "weights"
    prepare_weights(folder, [pinned])
    assert len(file_server.requests) == 1

    prepare_weights(folder, [pinned])

    assert len(file_server.requests) == 1


def test_a_corrupt_local_copy_is_replaced(file_server: FileServer, tmp_path: Path) -> None:
    pinned = _publish(file_server, "model.ckpt", b"good" * 1000)
    folder = tmp_path / "weights"
    target = folder / pinned.name
    target.parent.mkdir(parents=True)
    target.write_bytes(b"bad!" * 1000)  # right size, wrong content

    fetch_pinned(pinned, folder)

    assert target.read_bytes() == b"good" * 1000
    assert len(file_server.requests) == 1


def test_a_digest_mismatch_is_refused_and_leaves_nothing_behind(file_server: FileServer, tmp_path: Path) -> None:
    published = _publish(file_server, "model.ckpt", b"tampered" * 100)
    pinned = PinnedFile(published.name, published.url, "sha256", "0" * 64)
    folder = tmp_path / "weights"

    with pytest.raises(ModelLoadError, match="expected 0000") as raised:
        fetch_pinned(pinned, folder)

    assert isinstance(raised.value, ImageTo3DError)
    assert "again" in raised.value.message  # says what to do
    assert not (folder / pinned.name).exists()
    assert not list(folder.rglob("*.part"))


def test_a_short_download_is_refused(file_server: FileServer, tmp_path: Path) -> None:
    published = _publish(file_server, "model.ckpt", b"x" * 100)
    pinned = PinnedFile(published.name, published.url, "sha256", published.digest, size=1000)

    with pytest.raises(ModelLoadError, match="gave 100 bytes, expected 1000"):
        fetch_pinned(pinned, tmp_path / "weights")

    assert not (tmp_path / "weights" / pinned.name).exists()


def test_missing_upstream_file_is_a_clear_error(file_server: FileServer, tmp_path: Path) -> None:
    pinned = PinnedFile("model.ckpt", file_server.url("not-there.ckpt"), "sha256", "0" * 64)

    with pytest.raises(ModelLoadError, match="Could not download .*not-there.ckpt"):
        fetch_pinned(pinned, tmp_path / "weights")

    assert not list((tmp_path / "weights").rglob("*"))
