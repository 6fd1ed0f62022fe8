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
from typing import Any

import pytest

from remote.errors import ImageTo3DError, InvalidOptionError, ModelLoadError
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
    return PinnedFile(name=f"sub/{name}", url=server.url(name), algorithm=algorithm, digest=digest, size=len(content))


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


# --- the Modal definitions ------------------------------------------------------------------------
#
# Modal 1.6 keeps a definition's settings inside closures until it talks to its servers, and its
# listing properties (`App.registered_*`) are deprecated. The helpers below are the only places that
# reach into those private parts; if Modal renames them, these tests fail loudly (KeyError or
# AttributeError) rather than pass without checking.

import remote.modal_app as modal_app  # noqa: E402  (kept next to the tests that need it)


def _raw(obj: object) -> Any:
    """The implementation object behind one of Modal's synchronous wrappers."""
    from modal._utils.async_utils import synchronizer

    return synchronizer._translate_in(obj)


def _closure(function: Any) -> dict[str, Any]:
    code = function.__code__
    cells = function.__closure__ or ()
    return dict(zip(code.co_freevars, (cell.cell_contents for cell in cells)))


def _service_definition() -> dict[str, Any]:
    """The keyword values `@app.cls` gave the GPU class's service function."""
    function = _raw(modal_app.Service)._class_service_function
    return _closure(function._load)


def _front_definition() -> dict[str, Any]:
    """The keyword values `@app.function` and `@modal.concurrent` gave the CPU front."""
    return _closure(_raw(modal_app.web)._load)


def _secret_scope(secret: object) -> dict[str, Any]:
    return _closure(_raw(secret)._load)


def _image_layers(image: object) -> list[dict[str, Any]]:
    """The image's layers from the base up: Dockerfile commands of built layers, or a mount."""
    layers: list[dict[str, Any]] = []
    current: Any = _raw(image)
    while current is not None:
        scope = _closure(current._load)
        if "mount" in scope:  # add_local_* without copy: files added when a container starts
            layers.append({"mount": scope["mount"]})
            current = scope["base_image"]
        elif "split_image" in scope:  # from_registry(add_python=...): follow the current builder's form
            current = scope["split_image"]
        else:
            dockerfile = scope["dockerfile_function"]("2025.06")
            context = scope["context_mount_function"]
            copied = _mount_files(context("2025.06")) if context else []
            layers.append({"commands": dockerfile.commands, "copied": copied})
            current = next(iter(scope["base_images"].values()), None)
    return layers[::-1]


def _mount_files(mount: object) -> list[str]:
    """Container paths of a mount's local files (empty for a mount Modal provides by name)."""
    entries = getattr(_raw(mount), "_entries", None) or []
    return sorted(str(remote) for entry in entries for _, remote in entry.get_files_to_upload())


def _commands() -> list[str]:
    return [command for layer in _image_layers(modal_app.image) for command in layer.get("commands", [])]


def _documented_settings() -> dict[str, str]:
    """The `| \\`setting\\` or name | \\`value\\` | why |` rows of docs/deploy.md's Settings table."""
    text = (REPO_ROOT / "docs" / "deploy.md").read_text()
    section = text.split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[1].startswith("`"):
            rows[cells[0].strip("`")] = cells[1].strip("`")
    return rows


def test_the_gpu_class_has_the_documented_settings_and_at_most_one_container() -> None:
    documented = _documented_settings()
    definition = _service_definition()

    assert definition["gpu"] == modal_app.GPUS and modal_app.GPUS[0] == "A10G"
    assert documented["gpu"] == ", ".join(modal_app.GPUS)
    assert definition["max_containers"] == int(documented["max_containers"]) == 1
    assert definition["timeout"] == int(documented["timeout"])
    assert definition["startup_timeout"] == int(documented["startup_timeout"])
    assert definition["scaledown_window"] == int(documented["scaledown_window"])
    assert definition["cpu"] == float(documented["cpu"])
    assert definition["memory"] == int(documented["memory"])
    assert definition["max_concurrent_inputs"] in (None, 0, 1)  # one job at a time on the GPU
    assert definition["webhook_config"] is None  # nothing reaches the GPU over HTTP directly
    assert modal_app.app.name == "image-to-3d"


def test_the_front_is_a_cpu_function_serving_the_api_with_bearer_auth() -> None:
    from modal_proto import api_pb2

    documented = _documented_settings()
    front = _front_definition()

    assert front["gpu"] is None
    assert front["max_containers"] == int(documented["front max_containers"]) == 1
    assert front["cpu"] == float(documented["front cpu"]) and front["memory"] == int(documented["front memory"])
    assert front["scaledown_window"] == int(documented["front scaledown_window"])
    assert front["enable_memory_snapshot"] is True
    webhook = front["webhook_config"]
    assert webhook.type == api_pb2.WEBHOOK_TYPE_ASGI_APP
    assert webhook.requires_proxy_auth is False  # the add-on's Bearer token, checked by the front
    assert documented["auth"] == "bearer token, checked by the CPU front"


def test_both_parts_require_the_token_secret() -> None:
    documented = _documented_settings()

    for definition in (_service_definition(), _front_definition()):
        named = [scope for scope in map(_secret_scope, definition["secrets"]) if "name" in scope]
        assert len(named) == 1
        assert named[0]["name"] == documented["secret"] == modal_app.SECRET_NAME
        assert named[0]["required_keys"] == ["IMAGE_TO_3D_TOKEN"]


def test_weights_are_in_the_image_and_the_volume_holds_only_the_kernel_cache() -> None:
    documented = _documented_settings()
    function = _raw(modal_app.Service)._class_service_function

    assert list(function._spec.volumes) == [modal_app.CACHE_DIR]
    volume = _closure(_raw(function._spec.volumes[modal_app.CACHE_DIR])._load)
    assert volume["name"] == documented["volume"] == "image-to-3d-cache"
    assert f"ENV TRITON_CACHE_DIR={modal_app.CACHE_DIR}/triton" in _commands()
    assert f"ENV TORCHINDUCTOR_CACHE_DIR={modal_app.CACHE_DIR}/inductor" in _commands()
    assert documented["weights folder"] == modal_app.WEIGHTS_DIR
    download = f"python -m remote.weights_cache {modal_app.WEIGHTS_DIR}"
    assert f"RUN PYTHONPATH={modal_app.BUILD_SRC_DIR} {download}" in _commands()


def test_the_weights_layer_comes_before_the_packages() -> None:
    commands = _commands()
    download = next(i for i, c in enumerate(commands) if "remote.weights_cache" in c)
    packages = next(i for i, c in enumerate(commands) if "uv pip install" in c)

    assert download < packages  # a dependency bump keeps the 1.7 GB layer


def test_the_container_paths_are_where_weights_cache_puts_the_files() -> None:
    from remote.weights_cache import PINNED_FILES

    written = {f"{modal_app.WEIGHTS_DIR}/{pinned.name}" for pinned in PINNED_FILES}

    model_files = {f"{modal_app.MODEL_DIR}/config.yaml", f"{modal_app.MODEL_DIR}/model.ckpt"}
    assert model_files | {modal_app.U2NET_PATH} == written
    assert f"ENV U2NET_HOME={modal_app.WEIGHTS_DIR}" in _commands()  # rembg's own lookup finds the file too
    assert "ENV HF_HUB_OFFLINE=1" in _commands()


def test_the_weights_step_sees_only_the_modules_it_needs_and_the_package_comes_last() -> None:
    layers = _image_layers(modal_app.image)
    download = next(
        i
        for i, layer in enumerate(layers)
        if any("remote.weights_cache" in command for command in layer.get("commands", []))
    )
    copied_before = [path for layer in layers[:download] for path in layer.get("copied", [])]

    assert sorted(copied_before) == [
        f"{modal_app.BUILD_SRC_DIR}/remote/{name}" for name in ("__init__.py", "errors.py", "weights_cache.py")
    ]
    assert "mount" in layers[-1] and all("mount" not in layer for layer in layers[:-1])


def test_the_package_is_added_with_its_data_files() -> None:
    files = set(_mount_files(_image_layers(modal_app.image)[-1]["mount"]))

    assert "/root/remote/modal_app.py" in files
    assert "/root/remote/weights_cache.py" in files
    assert "/root/remote/triposr/full_state_dict_manifest.json" in files
    assert not any("__pycache__" in path for path in files)


def test_the_image_starts_from_a_cuda_devel_base_matching_torch() -> None:
    import torch

    first = _commands()[0]
    documented = _documented_settings()

    assert first == f"FROM {documented['base image']}"
    assert first.startswith("FROM nvidia/cuda:") and "-devel-" in first
    cuda_version = first.split(":", 1)[1].split("-", 1)[0]
    assert torch.version.cuda is not None, "the locked torch wheel is a CUDA build"
    assert cuda_version.split(".")[:2] == torch.version.cuda.split(".")[:2]
    assert "RUN ln -s /usr/local/bin/python3 /usr/local/bin/python" in _commands()  # add_python's layer


def _lock_closure(lock: dict[str, Any], roots: list[tuple[str, tuple[str, ...]]]) -> dict[str, str]:
    """name -> version of every package that `roots` (name, extras) pull in, markers ignored."""
    packages = {package["name"]: package for package in lock["package"]}
    found: dict[str, str] = {}
    pending = list(roots)
    while pending:
        name, extras = pending.pop()
        package = packages[name]
        edges = list(package.get("dependencies", []))
        for extra in extras:
            edges += package.get("optional-dependencies", {}).get(extra, [])
        if name not in found:
            found[name] = package["version"]
        for edge in edges:
            if edge["name"] not in found or edge.get("extra"):
                pending.append((edge["name"], tuple(edge.get("extra", ()))))
    return found


def _requirement_pins(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        if line and not line.startswith((" ", "#", "-")):
            name, version = line.split(" ", 1)[0].split("==")
            pins[name] = version
    return pins


def test_the_image_installs_exactly_uv_locks_packages_with_onnxruntimes_gpu_build() -> None:
    import tomllib

    lock = tomllib.loads((REPO_ROOT / "uv.lock").read_text())
    project = next(p for p in lock["package"] if p["name"] == "image-to-3d")
    roots = [(d["name"], tuple(d.get("extra", ()))) for d in project["dependencies"]]
    for group in ("modal-gpu", "modal-build"):
        roots += [(d["name"], tuple(d.get("extra", ()))) for d in project["dev-dependencies"][group]]
    expected = _lock_closure(lock, roots)
    del expected["onnxruntime"]  # the CPU build; onnxruntime-gpu provides the same module

    pins = _requirement_pins(modal_app.REQUIREMENTS.read_text())

    assert pins == expected
    assert {"onnxruntime-gpu", "nvidia-curand", "torch"} <= set(pins) and "onnxruntime" not in pins
    assert all(
        " \\" in line
        for line in modal_app.REQUIREMENTS.read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )  # every pin carries its hashes
    install = next(c for c in _commands() if "uv pip install" in c)
    assert "--no-deps --require-hashes" in install and "--requirements /.uv/0/modal_requirements.txt" in install
    copy_uv = next(c for c in _commands() if c.startswith("COPY --from=ghcr.io/astral-sh/uv"))
    assert f"/uv:{modal_app.UV_VERSION} " in copy_uv


@pytest.mark.slow  # a subprocess
def test_the_requirements_file_is_what_uv_exports_from_the_lock() -> None:
    import shutil
    import subprocess

    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH")
    script = (REPO_ROOT / "scripts" / "export_modal_requirements.sh").read_text()
    command = script.split("uv export", 1)[1].split(">/dev/null", 1)[0].replace("\\\n", " ")
    arguments = [part for part in command.split() if part not in ("--output-file", "remote/modal_requirements.txt")]

    exported = subprocess.run(
        [uv, "export", *arguments], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    ).stdout

    assert exported == modal_app.REQUIREMENTS.read_text(), "run scripts/export_modal_requirements.sh"


def test_onnxruntimes_cuda_provider_finds_its_libraries_or_the_build_stops() -> None:
    import subprocess

    import torch

    commands = _commands()
    install = next(i for i, c in enumerate(commands) if "uv pip install" in c)
    check = next(i for i, c in enumerate(commands) if "libonnxruntime_providers_cuda.so" in c)
    library_path = f"ENV LD_LIBRARY_PATH={modal_app.CUDA_LIBRARY_PATH}"

    assert install < commands.index(library_path) < check
    assert "! ldd $p | grep 'not found' | grep -v 'libcuda.so.1 '" in commands[check]
    # The folders are where the locked CUDA wheels put their libraries (seen in this environment).
    site_packages = Path(torch.__file__).parent.parent
    folders = [
        Path(f.replace(modal_app.SITE_PACKAGES, str(site_packages))) for f in modal_app.CUDA_LIBRARY_PATH.split(":")
    ]
    assert (folders[0] / "libcublasLt.so.13").exists() and (folders[1] / "libcudnn.so.9").exists()
    # The check itself, on ldd-like output: a missing library stops the build, the driver does not.
    line = commands[check].removeprefix("RUN ").split(" && ", 2)[2].replace("$p", "")
    missing = "\tlibcurand.so.10 => not found\n\tlibcuda.so.1 => not found\n"
    for output, passes in ((missing, False), ("\tlibcuda.so.1 => not found\n", True)):
        run = subprocess.run(
            ["bash", "-c", line.replace("ldd ", f"printf '{output}' ", 1)], capture_output=True, text=True, timeout=30
        )
        assert (run.returncode == 0) is passes, output


def test_torchmcubes_is_built_from_a_pinned_commit_patched_to_cxx20_for_every_gpu() -> None:
    import shlex

    commands = _commands()
    clone = next(c for c in commands if "git clone" in c and "torchmcubes" in c)
    commit = clone.split("checkout ", 1)[1].split()[0]
    patch = next(c for c in commands if modal_app.PATCH_SCRIPT in c and c.startswith("RUN"))
    build = next(c for c in commands if "pip install --no-build-isolation" in c)

    assert len(commit) == 40 and commit == _documented_settings()["torchmcubes"] == modal_app.TORCHMCUBES_COMMIT
    assert commands.index(clone) < commands.index(patch) < commands.index(build)
    assert "--no-deps" in build  # against the locked torch, not a new one
    archs = {modal_app.CUDA_ARCHS[gpu] for gpu in modal_app.GPUS}
    quote = shlex.quote  # how Modal writes ENV values
    assert f"ENV TORCH_CUDA_ARCH_LIST={quote(';'.join(sorted(archs)))}" in commands
    assert f"ENV CUDAARCHS={quote(';'.join(sorted(a.replace('.', '') for a in archs)))}" in commands
    assert "8.6" in archs  # the A10G
    check = commands[commands.index(build) + 1]
    assert "mcubes_cuda" in check and "assert" in check  # the build fails if the CUDA kernels are missing
    assert any(c.startswith("RUN apt-get install") and " git" in c for c in commands)


HELPER_MATH = """// lerp
inline __device__ __host__ float lerp(float a, float b, float t) {
    return a + t * (b - a);
}
inline __device__ __host__ float2 lerp(float2 a, float2 b, float t) {}
inline __device__ __host__ float3 lerp(float3 a, float3 b, float t) {}
inline __device__ __host__ float4 lerp(float4 a, float4 b, float t) {}
"""


def _torchmcubes_tree(root: Path, helper_math: str = HELPER_MATH) -> Path:
    """The two files the patch touches, laid out as at torchmcubes' commit 3381600."""
    (root / "cxx").mkdir(parents=True)
    (root / "CMakeLists.txt").write_text("set(CMAKE_CUDA_STANDARD 17)\nproject(x)\nset(CMAKE_CXX_STANDARD 17)\n")
    (root / "cxx" / "helper_math.h").write_text(helper_math)
    (root / "cxx" / "mcubes_cuda.cu").write_text('#include "helper_math.h"\nfloat x = fminf(1.0f, 2.0f);\n')
    return root


def _patch(source: Path) -> Any:
    import subprocess

    script = REPO_ROOT / "scripts" / modal_app.PATCH_SCRIPT
    return subprocess.run(["bash", str(script), str(source)], capture_output=True, text=True, timeout=30)


def test_the_patch_script_makes_the_source_cxx20_and_refuses_an_unexpected_one(tmp_path: Path) -> None:
    source = _torchmcubes_tree(tmp_path / "torchmcubes")

    patched = _patch(source)

    assert patched.returncode == 0, patched.stderr
    assert (source / "CMakeLists.txt").read_text().count("_STANDARD 20)") == 2
    helper = (source / "cxx" / "helper_math.h").read_text()
    assert helper.count(" helper_lerp(") == 4 and " lerp(" not in helper  # no clash with C++20's std::lerp
    again = _patch(source)
    assert again.returncode == 1 and "expected one 'set(CMAKE_CXX_STANDARD 17)'" in again.stderr


def test_the_patch_script_refuses_when_something_calls_helper_maths_lerp(tmp_path: Path) -> None:
    source = _torchmcubes_tree(tmp_path / "torchmcubes")
    (source / "cxx" / "grid_interp_cuda.cu").write_text("float y = lerp(0.f, 1.f, .5f);\n")

    refused = _patch(source)

    assert refused.returncode == 1 and "calls lerp" in refused.stderr


def test_the_gpu_class_has_a_method_for_the_front_and_modal_run() -> None:
    from modal._partial_function import _PartialFunctionFlags

    partials = _raw(modal_app.Service)._method_partials

    assert set(partials) == {"generate"}
    assert partials["generate"].flags & _PartialFunctionFlags.CALLABLE_INTERFACE


def test_memory_snapshot_splits_loading_into_before_and_after() -> None:
    from modal._partial_function import _PartialFunctionFlags

    documented = _documented_settings()
    definition = _service_definition()
    user_cls = _raw(modal_app.Service)._user_cls

    assert definition["enable_memory_snapshot"] is True and documented["enable_memory_snapshot"] == "True"
    assert "enable_gpu_snapshot" not in definition["experimental_options"]
    assert documented["enable_gpu_snapshot"] == "False"
    assert _raw(user_cls.__dict__["load_before_snapshot"]).flags & _PartialFunctionFlags.ENTER_PRE_SNAPSHOT
    assert _raw(user_cls.__dict__["start_after_restore"]).flags & _PartialFunctionFlags.ENTER_POST_SNAPSHOT


@pytest.mark.slow  # a subprocess
def test_the_gpu_snapshot_can_be_tried_with_one_variable() -> None:
    import os
    import subprocess
    import sys

    probe = (
        "import remote.modal_app as m\n"
        "from modal._utils.async_utils import synchronizer\n"
        "f = synchronizer._translate_in(m.Service)._class_service_function._load\n"
        "scope = dict(zip(f.__code__.co_freevars, (c.cell_contents for c in f.__closure__)))\n"
        "print(scope['experimental_options'], len(scope['secrets']), m.GPU_SNAPSHOT)\n"
    )
    env = {**os.environ, modal_app.GPU_SNAPSHOT_ENV: "1"}

    run = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180
    )

    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "{'enable_gpu_snapshot': 'True'} 2 True"


def test_a_container_whose_model_fails_to_load_stops_instead_of_serving() -> None:
    from remote import warm_start

    user_cls = _raw(modal_app.Service)._user_cls
    start = _raw(user_cls.__dict__["start_after_restore"]).raw_f
    container = user_cls.__new__(user_cls)
    container.pipeline, container.cpu_model, container.times = None, None, warm_start.StartupTimes()

    with pytest.raises(RuntimeError, match="the snapshot holds no model"):
        start(container)


@pytest.mark.slow  # the Modal CLI / uv in a subprocess
def test_modal_run_takes_input_and_output_paths() -> None:
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, "-m", "modal", "run", "remote/modal_app.py", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert completed.returncode == 0, completed.stderr
    options = (
        "--input-path",
        "--output-path",
        "--resolution",
        "--remove-background [auto|always|never]",
        "--texture-size",
    )
    for option in options:
        assert option in completed.stdout


def test_modal_run_refuses_a_missing_image_before_waking_a_gpu(tmp_path: Path) -> None:
    entrypoint: Any = _raw(modal_app.main).info.raw_f

    with pytest.raises(SystemExit, match="no such image file"):
        entrypoint(str(tmp_path / "missing.png"), str(tmp_path / "out.glb"))
    with pytest.raises(SystemExit, match=r"must end in \.glb"):
        entrypoint(str(REPO_ROOT / "tests/fixtures/examples/chair.png"), str(tmp_path / "out.obj"))
    with pytest.raises(SystemExit, match="resolution must be between 32 and 512"):
        entrypoint(str(REPO_ROOT / "tests/fixtures/examples/chair.png"), str(tmp_path / "out.glb"), resolution=8)
    with pytest.raises(SystemExit, match="texture_size must be one of 0, 512, 1024, 2048"):
        entrypoint(str(REPO_ROOT / "tests/fixtures/examples/chair.png"), str(tmp_path / "out.glb"), texture_size=300)
    assert not (tmp_path / "out.glb").exists()


# --- the GPU half honours the server's precision setting (run here on the CPU) --------------------


@pytest.mark.parametrize(
    ("precision", "dtype", "extraction"),
    [("auto", "float32", "band"), ("fast", "float16", "band"), ("float32", "float32", "dense")],
)
@pytest.mark.slow  # loads the tiny model three times
def test_finish_on_device_applies_the_precision_setting(
    tmp_path: Path, precision: str, dtype: str, extraction: str
) -> None:
    from conftest import TINY_MODEL
    from image_to_3d_dev.tiny_u2net import build_tiny_u2net

    from remote import warm_start

    pipeline = warm_start.finish_on_device(
        warm_start.load_on_cpu(TINY_MODEL),
        device="cpu",
        rembg_model_path=build_tiny_u2net(tmp_path / "u2net.onnx"),
        model_source="stabilityai/TripoSR",
        revision="abc123",
        max_pixels=1234,
        precision=precision,
    )

    assert pipeline.info["precision"] == dtype and pipeline.info["extraction"] == extraction
    assert pipeline.max_pixels == 1234


def test_finish_on_device_refuses_an_unknown_precision(tmp_path: Path) -> None:
    from conftest import TINY_MODEL

    from remote import warm_start

    with pytest.raises(InvalidOptionError, match="precision must be one of auto, fast, float32"):
        warm_start.finish_on_device(
            warm_start.load_on_cpu(TINY_MODEL),
            device="cpu",
            rembg_model_path=None,
            model_source="stabilityai/TripoSR",
            revision=None,
            precision="half",
        )


def test_the_weights_step_runs_with_only_its_three_copied_modules(tmp_path: Path) -> None:
    """What the image build does: those files alone, the standard library, no site-packages."""
    import shutil
    import subprocess
    import sys

    for name in ("__init__.py", "errors.py", "weights_cache.py"):
        (tmp_path / "remote").mkdir(exist_ok=True)
        shutil.copy(REPO_ROOT / "remote" / name, tmp_path / "remote" / name)

    completed = subprocess.run(
        [sys.executable, "-S", "-m", "remote.weights_cache", "--help"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert completed.returncode == 0, completed.stderr
    assert "FOLDER" in completed.stdout
