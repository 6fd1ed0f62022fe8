"""Modal deployment: the same HTTP API as `image-to-3d serve`, on an A10G. A thin shell.

    modal deploy remote/modal_app.py                                   # docs/deploy.md
    modal run remote/modal_app.py --input-path chair.png --output-path chair.glb

Everything with logic lives in plain modules that the local tests run: `remote.weights_cache`
(fetch the pinned files once, at image build), `remote.warm_start` (CPU half before the memory
snapshot, GPU half after it) and `remote.server.app` (the API). This file only says where they run.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import modal

if TYPE_CHECKING:
    from concurrent.futures import Future

    from fastapi import FastAPI

    from remote.pipeline import GenerateResult, Pipeline
    from remote.triposr.model import TripoSR

APP_NAME = "image-to-3d"
SECRET_NAME = "image-to-3d"  # a modal.Secret holding TOKEN_ENV; created once (docs/deploy.md)
TOKEN_ENV = "IMAGE_TO_3D_TOKEN"

GPU = "A10G"
SCALEDOWN_WINDOW_S = 600  # stay warm 10 min after the last request: an artist's generate-look-retry loop
TIMEOUT_S = 300  # one request or `modal run` call, queue wait included
STARTUP_TIMEOUT_S = 900  # the first boot after a deploy reads and checks 1.7 GB before its snapshot
MAX_CONCURRENT_REQUESTS = 16  # health polls and busy answers come from the container that holds the GPU
CPU_CORES = 4.0  # decoding, welding and GLB writing run on the CPU
MEMORY_MIB = 8192  # checkpoint + model while loading (~3.4 GB) with room for 512³ extraction

CUDA_BASE_IMAGE = "nvidia/cuda:13.2.1-devel-ubuntu22.04"  # torch 2.15's wheels use CUDA 13.2; nvcc must match
PYTHON_VERSION = "3.11"
UV_VERSION = "0.13.9"  # the uv that locked uv.lock
# pyproject pins the CPU onnxruntime 1.32.0, which has no GPU build on PyPI: the newest one, for CUDA 13.
ONNXRUNTIME_GPU = "onnxruntime-gpu==1.31.1"
TORCHMCUBES_COMMIT = "3381600ddc3d2e4d74222f8495866be5fafbace4"
TORCHMCUBES = f"torchmcubes @ git+https://github.com/tatsy/torchmcubes.git@{TORCHMCUBES_COMMIT}"
TORCHMCUBES_BUILD_TOOLS = ("scikit-build-core==1.1.2", "pybind11==3.1.0", "cmake==4.4.4", "ninja==1.13.2")
A10G_CUDA_ARCH = "8.6"  # Ampere GA102; compiling for just this keeps the build short

WEIGHTS_DIR = "/opt/image-to-3d/weights"  # baked into the image by remote.weights_cache
MODEL_DIR = f"{WEIGHTS_DIR}/triposr"
U2NET_PATH = f"{WEIGHTS_DIR}/u2net.onnx"
BUILD_SRC_DIR = "/opt/image-to-3d/build-src"  # the few modules the weights step needs, copied early

REPO_ROOT = Path(__file__).resolve().parent.parent
# Modal adds only .py files by default; the package also needs its .yaml and .json data files.
SOURCE_IGNORE = ["**/__pycache__/**", "**/*.pyc", "**/.*"]


def pinned_requirements(pyproject: Path) -> list[str]:
    """pyproject.toml's runtime dependencies as pinned there, with onnxruntime swapped for its GPU build."""
    dependencies: list[str] = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    requirements = []
    for requirement in dependencies:
        name, separator, version = requirement.partition("==")
        if not separator or not version.strip():
            raise ValueError(
                f"{pyproject}: {requirement!r} is not pinned with ==; pin it so the image is reproducible."
            )
        requirements.append(ONNXRUNTIME_GPU if name.strip() == "onnxruntime" else requirement)
    return requirements


def build_image(requirements: list[str]) -> modal.Image:
    """CUDA devel base (nvcc for torchmcubes), pinned packages, weights baked in, `remote` added last."""
    cmake_prefix = "$(python -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')"
    check_cuda_build = (
        "python -c 'import torch, torchmcubes, torchmcubes_module as m; "
        'assert hasattr(m, "mcubes_cuda"), "torchmcubes was built without CUDA"\''
    )
    weights_step_sources = ("__init__.py", "errors.py", "weights_cache.py")
    image = (
        modal.Image.from_registry(CUDA_BASE_IMAGE, add_python=PYTHON_VERSION)
        .apt_install("git")
        .uv_pip_install(*requirements, uv_version=UV_VERSION)
        .uv_pip_install(*TORCHMCUBES_BUILD_TOOLS, uv_version=UV_VERSION)
        .env({"CUDA_HOME": "/usr/local/cuda", "TORCH_CUDA_ARCH_LIST": A10G_CUDA_ARCH,
              "CUDAARCHS": A10G_CUDA_ARCH.replace(".", "")})
        .run_commands(
            f"CMAKE_PREFIX_PATH={cmake_prefix} "
            f"python -m pip install --no-build-isolation --no-deps '{TORCHMCUBES}'",
            check_cuda_build,
        )
    )
    for name in weights_step_sources:
        image = image.add_local_file(REPO_ROOT / "remote" / name, f"{BUILD_SRC_DIR}/remote/{name}", copy=True)
    return (
        image.run_commands(f"PYTHONPATH={BUILD_SRC_DIR} python -m remote.weights_cache {WEIGHTS_DIR}")
        .env({"U2NET_HOME": WEIGHTS_DIR, "HF_HUB_OFFLINE": "1",  # nothing downloads in a container
              "IMAGE_TO_3D_VERSION": PACKAGE_VERSION})  # /v1/health's version: the source is not pip-installed
        .add_local_python_source("remote", ignore=SOURCE_IGNORE)
    )


PACKAGE_VERSION = (
    tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"] if modal.is_local() else ""
)
# pyproject.toml is only on the deploying machine; inside a container the image is already built.
image = build_image(pinned_requirements(REPO_ROOT / "pyproject.toml") if modal.is_local() else [])
app = modal.App(APP_NAME)


@app.cls(
    image=image,
    gpu=GPU,
    secrets=[modal.Secret.from_name(SECRET_NAME, required_keys=[TOKEN_ENV])],
    scaledown_window=SCALEDOWN_WINDOW_S,
    timeout=TIMEOUT_S,
    startup_timeout=STARTUP_TIMEOUT_S,
    cpu=CPU_CORES,
    memory=MEMORY_MIB,
    enable_memory_snapshot=True,
)
@modal.concurrent(max_inputs=MAX_CONCURRENT_REQUESTS)
class Service:
    """One container: the model loaded once, the HTTP API, and a method for `modal run`."""

    @modal.enter(snap=True)
    def load_on_cpu(self) -> None:
        """Before the snapshot (no GPU attached): the slow, device-free half of loading."""
        from remote import warm_start

        self.cpu_model: TripoSR | None = warm_start.load_on_cpu(MODEL_DIR)

    @modal.enter(snap=False)
    def start_on_gpu(self) -> None:
        """After every restore: finish loading in the background so `/v1/health` answers at once."""
        from concurrent.futures import ThreadPoolExecutor

        from remote import warm_start
        from remote.server.settings import ServerSettings
        from remote.weights_cache import TRIPOSR_REPO, TRIPOSR_REVISION

        model, self.cpu_model = self.cpu_model, None
        if model is None:
            raise RuntimeError("the snapshot holds no model: load_on_cpu did not run before start_on_gpu")
        settings = ServerSettings()  # IMAGE_TO_3D_* variables, e.g. extra keys of the secret
        self.loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="load-pipeline")
        self.pipeline: Future[Pipeline] = self.loader.submit(
            warm_start.finish_on_device, model, device="cuda", rembg_model_path=U2NET_PATH,
            model_source=TRIPOSR_REPO, revision=TRIPOSR_REVISION,
            max_pixels=settings.max_pixels, precision=settings.precision,
        )

    @modal.asgi_app()
    def web(self) -> FastAPI:
        """The FastAPI app; it reports "loading" until the pipeline is on the GPU."""
        from remote.server.app import create_app
        from remote.server.settings import ServerSettings

        return create_app(ServerSettings(), pipeline_loader=self.pipeline.result)

    @modal.method()
    def generate(self, image_bytes: bytes, options: dict[str, Any]) -> GenerateResult:
        """One image -> GLB, for `modal run`; waits for the pipeline if the container is new."""
        from remote.pipeline import GenerateOptions

        return self.pipeline.result().generate(image_bytes, GenerateOptions(**options))


@app.local_entrypoint()
def main(
    input_path: str,
    output_path: str,
    resolution: int = 256,
    threshold: float = 25.0,
    foreground_ratio: float = 0.85,
    remove_background: Literal["auto", "always", "never"] = "auto",
    target_faces: int | None = None,
) -> None:
    """`modal run remote/modal_app.py --input-path IMG --output-path OUT.glb`: one image on the A10G."""
    source, target = Path(input_path), Path(output_path)
    if not source.is_file():
        raise SystemExit(f"error: no such image file: {source}")
    if target.suffix.lower() != ".glb":
        raise SystemExit(f"error: the output file must end in .glb (got {target})")

    from remote.errors import ImageTo3DError
    from remote.pipeline import GenerateOptions

    try:
        options = GenerateOptions(
            resolution=resolution, threshold=threshold, foreground_ratio=foreground_ratio,
            remove_background=remove_background, target_faces=target_faces,
        ).validate()
        result = Service().generate.remote(source.read_bytes(), dataclasses.asdict(options))
    except ImageTo3DError as error:
        raise SystemExit(f"error: {error.message}") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(result.glb)
    timings = ", ".join(f"{stage} {seconds:.2f}s" for stage, seconds in result.timings.items())
    print(f"wrote {target}: {result.vertex_count} vertices, {result.face_count} faces ({timings})")
