"""Modal deployment: the HTTP API of `image-to-3d serve` on Modal, the GPU woken only for real work.

    modal deploy remote/modal_app.py                                   # docs/deploy.md
    modal run remote/modal_app.py --input-path chair.png --output-path chair.glb

Two parts. `web`, a small CPU function, serves the FastAPI app (`remote.modal_front`): health,
the token check and every input check happen there. `Service`, the GPU class (A10G, or the
fallbacks in GPUS), holds the loaded pipeline and is called only with authenticated, valid work.
Everything with logic lives in plain modules that the local tests run: `remote.weights_cache`
(fetch the pinned files once, at image build), `remote.warm_start` (the halves of loading around
the memory snapshot) and `remote.modal_front` / `remote.server.app` (the API). This file only says
where they run.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import modal

from remote import environment
from remote.options import GenerateOptions, entrypoint_signature

if TYPE_CHECKING:
    from fastapi import FastAPI

    from remote.pipeline import GenerateResult, Pipeline
    from remote.triposr.model import TripoSR

APP_NAME = "image-to-3d"
SECRET_NAME = "image-to-3d"  # a modal.Secret holding TOKEN_ENV; created once (docs/deploy.md)
TOKEN_ENV = "IMAGE_TO_3D_TOKEN"

# The GPU class. Modal tries the types in this order when the first is not available.
GPUS = ["A10G", "L4", "L40S"]
CUDA_ARCHS = {"A10G": "8.6", "L4": "8.9", "L40S": "8.9"}  # torchmcubes is compiled for exactly these
GPU_MAX_CONTAINERS = 1  # one GPU at most, whatever arrives; the front's queue answers 503 beyond it
SCALEDOWN_WINDOW_S = 600  # stay warm 10 min after the last job: an artist's generate-look-retry loop
TIMEOUT_S = 300  # one request or `modal run` call, queue wait included
STARTUP_TIMEOUT_S = 900  # the first boot after a deploy reads and checks 1.7 GB before its snapshot
CPU_CORES = 4.0  # decoding, welding and GLB writing run on the CPU
MEMORY_MIB = 8192  # checkpoint + model while loading (~3.4 GB) with room for 512³ extraction
GPU_SNAPSHOT_ENV = environment.GPU_SNAPSHOT  # "1" at deploy time: try Modal's (alpha) GPU snapshot
GPU_SNAPSHOT = environment.is_on(GPU_SNAPSHOT_ENV)

# The CPU front: cheap enough to answer strangers.
FRONT_CPU_CORES = 1.0
FRONT_MEMORY_MIB = 2048  # torch is imported (the app's modules) and a 16-40 MP image is decoded once
FRONT_MAX_CONTAINERS = 1  # the API's job queue lives in this one container
FRONT_MAX_INPUTS = 32  # concurrent HTTP requests into it: polls, uploads, waiting jobs
FRONT_SCALEDOWN_WINDOW_S = 120

CUDA_BASE_IMAGE = "nvidia/cuda:13.2.1-devel-ubuntu22.04"  # torch 2.15's wheels use CUDA 13.2; nvcc must match
PYTHON_VERSION = "3.11"
UV_VERSION = "0.13.9"  # the uv that locked uv.lock
TORCHMCUBES_REPO = "https://github.com/tatsy/torchmcubes.git"
TORCHMCUBES_COMMIT = "3381600ddc3d2e4d74222f8495866be5fafbace4"

WEIGHTS_DIR = "/opt/image-to-3d/weights"  # baked into the image by remote.weights_cache
MODEL_DIR = f"{WEIGHTS_DIR}/triposr"
U2NET_PATH = f"{WEIGHTS_DIR}/u2net.onnx"
BUILD_SRC_DIR = "/opt/image-to-3d/build-src"  # the few files the build steps need, copied early
SITE_PACKAGES = f"/usr/local/lib/python{PYTHON_VERSION}/site-packages"
# ONNX Runtime's CUDA provider finds cuRAND, cuBLAS, cuFFT and cuDNN here (the pip CUDA libraries).
CUDA_LIBRARY_PATH = f"{SITE_PACKAGES}/nvidia/cu13/lib:{SITE_PACKAGES}/nvidia/cudnn/lib"
CACHE_VOLUME_NAME = "image-to-3d-cache"
CACHE_DIR = "/cache"
TRITON_CACHE_DIR = f"{CACHE_DIR}/triton"  # the fused field kernel, compiled once per GPU type
INDUCTOR_CACHE_DIR = f"{CACHE_DIR}/inductor"  # the compiled model pass (torch.compile), likewise

REPO_ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO_ROOT / "remote" / "modal_requirements.txt"  # scripts/export_modal_requirements.sh
PATCH_SCRIPT = "patch_torchmcubes_cxx20.sh"
# Modal adds only .py files by default; the package also needs its .yaml and .json data files.
SOURCE_IGNORE = ["**/__pycache__/**", "**/*.pyc", "**/.*"]
WEIGHTS_STEP_SOURCES = ("__init__.py", "errors.py", "weights_cache.py")


def torch_cuda_arch_list(gpus: list[str]) -> str:
    """TORCH_CUDA_ARCH_LIST for the GPU types, e.g. "8.6;8.9"."""
    return ";".join(sorted({CUDA_ARCHS[gpu] for gpu in gpus}))


def build_image(requirements: Path) -> modal.Image:
    """CUDA devel base, weights, uv.lock's packages, torchmcubes for GPUS, `remote` added last.

    The weights come before the packages, so a dependency bump does not download 1.7 GB again.
    """
    archs = torch_cuda_arch_list(GPUS)
    image = modal.Image.from_registry(CUDA_BASE_IMAGE, add_python=PYTHON_VERSION).apt_install("git")
    for name in WEIGHTS_STEP_SOURCES:
        image = image.add_local_file(REPO_ROOT / "remote" / name, f"{BUILD_SRC_DIR}/remote/{name}", copy=True)
    image = image.run_commands(f"PYTHONPATH={BUILD_SRC_DIR} python -m remote.weights_cache {WEIGHTS_DIR}")
    image = image.uv_pip_install(
        requirements=[str(requirements)], uv_version=UV_VERSION, extra_options="--no-deps --require-hashes"
    ).env({"LD_LIBRARY_PATH": CUDA_LIBRARY_PATH})
    # Every library ONNX Runtime's CUDA provider links against must resolve; else it would fall
    # back to the CPU at run time without raising. Only the driver (libcuda.so.1) is missing at
    # build time: the GPU host provides it to a running container.
    check_onnxruntime = (
        'p=$(python -c "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))")'
        "/capi/libonnxruntime_providers_cuda.so && ldd $p"
        " && ! ldd $p | grep 'not found' | grep -v 'libcuda.so.1 '"
    )
    torchmcubes_src = "/tmp/torchmcubes"
    cmake_prefix = "$(python -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')"
    check_cuda_build = (
        "python -c 'import torch, torchmcubes, torchmcubes_module as m; "
        'assert hasattr(m, "mcubes_cuda"), "torchmcubes was built without CUDA"\''
    )
    return (
        image.run_commands(check_onnxruntime)
        .add_local_file(REPO_ROOT / "scripts" / PATCH_SCRIPT, f"{BUILD_SRC_DIR}/{PATCH_SCRIPT}", copy=True)
        .env({"CUDA_HOME": "/usr/local/cuda", "TORCH_CUDA_ARCH_LIST": archs, "CUDAARCHS": archs.replace(".", "")})
        .run_commands(
            f"git clone {TORCHMCUBES_REPO} {torchmcubes_src} && git -C {torchmcubes_src} checkout {TORCHMCUBES_COMMIT}",
            f"bash {BUILD_SRC_DIR}/{PATCH_SCRIPT} {torchmcubes_src}",  # C++17 -> 20: torch 2.15 needs it
            f"CMAKE_PREFIX_PATH={cmake_prefix} python -m pip install --no-build-isolation --no-deps {torchmcubes_src}",
            check_cuda_build,
            f"rm -rf {torchmcubes_src}",
        )
        .env(
            {
                "U2NET_HOME": WEIGHTS_DIR,
                "HF_HUB_OFFLINE": "1",  # nothing downloads in a container
                "TRITON_CACHE_DIR": TRITON_CACHE_DIR,
                "TORCHINDUCTOR_CACHE_DIR": INDUCTOR_CACHE_DIR,
                environment.VERSION: PACKAGE_VERSION,
            }
        )  # /v1/health's version: the source is not pip-installed
        .add_local_python_source("remote", ignore=SOURCE_IGNORE)
    )


def configure_logging() -> None:
    """INFO lines to stderr, which Modal keeps: one per request, the start-up phases, "model ready"."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)


PACKAGE_VERSION = (
    tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"] if modal.is_local() else ""
)
image = build_image(REQUIREMENTS)
app = modal.App(APP_NAME)
token_secret = modal.Secret.from_name(SECRET_NAME, required_keys=[TOKEN_ENV])
cache_volume = modal.Volume.from_name(CACHE_VOLUME_NAME, create_if_missing=True)
# With GPU snapshots the whole load, CUDA included, happens before the snapshot; the container
# learns which way it was deployed from this variable.
gpu_snapshot_secrets = [modal.Secret.from_dict({GPU_SNAPSHOT_ENV: "1"})] if GPU_SNAPSHOT else []

with image.imports():  # in the front's memory snapshot: restores skip these imports
    import fastapi  # noqa: F401
    import remote.modal_front  # noqa: F401


@app.cls(
    image=image,
    gpu=GPUS,
    secrets=[token_secret, *gpu_snapshot_secrets],
    volumes={CACHE_DIR: cache_volume},
    max_containers=GPU_MAX_CONTAINERS,
    scaledown_window=SCALEDOWN_WINDOW_S,
    timeout=TIMEOUT_S,
    startup_timeout=STARTUP_TIMEOUT_S,
    cpu=CPU_CORES,
    memory=MEMORY_MIB,
    enable_memory_snapshot=True,
    experimental_options={"enable_gpu_snapshot": True} if GPU_SNAPSHOT else None,
)
class Service:
    """The GPU container: the pipeline, loaded around the memory snapshot, one job at a time."""

    @modal.enter(snap=True)
    def load_before_snapshot(self) -> None:
        """Before the snapshot: imports, weights into memory (and with GPU snapshots, all of it)."""
        configure_logging()
        from remote import warm_start

        self.times = warm_start.StartupTimes()
        warm_start.import_heavy_modules(self.times)
        self.cpu_model: TripoSR | None = warm_start.load_on_cpu(MODEL_DIR, self.times)
        self.pipeline: Pipeline | None = self._finish_on_gpu() if GPU_SNAPSHOT else None

    @modal.enter(snap=False)
    def start_after_restore(self) -> None:
        """After every restore: the GPU half. If it fails the container stops, and Modal starts a
        new one for the waiting job, instead of a container that answers errors until scale-down."""
        configure_logging()
        log = logging.getLogger("image_to_3d.modal")
        try:
            if self.pipeline is None:
                self.pipeline = self._finish_on_gpu()
        except Exception:
            log.exception("the model failed to load; this container leaves service")
            raise
        log.info(
            "model ready: %s; start-up %s",
            self.pipeline.info,
            ", ".join(f"{phase} {seconds:.2f} s" for phase, seconds in self.times.phases.items()),
        )

    def _finish_on_gpu(self) -> Pipeline:
        from remote import warm_start
        from remote.server.settings import ServerSettings
        from remote.weights_cache import TRIPOSR_REPO, TRIPOSR_REVISION

        settings = ServerSettings()  # IMAGE_TO_3D_* variables, e.g. extra keys of the secret
        model, self.cpu_model = self.cpu_model, None
        if model is None:
            raise RuntimeError("the snapshot holds no model: load_before_snapshot did not run")
        pipeline = warm_start.finish_on_device(
            model,
            device="cuda",
            rembg_model_path=U2NET_PATH,
            model_source=TRIPOSR_REPO,
            revision=TRIPOSR_REVISION,
            max_pixels=settings.max_pixels,
            precision=settings.precision,
            times=self.times,
            compile_model=GPU_SNAPSHOT,  # compiled once before the snapshot, or not at all (docs/deploy.md)
        )
        try:  # the kernels compiled by the warm-up, for the next container; only a speed-up
            cache_volume.commit()
        except Exception:
            logging.getLogger("image_to_3d.modal").warning("could not commit the kernel cache", exc_info=True)
        return pipeline

    @modal.method()
    def generate(self, image_bytes: bytes, options: dict[str, Any]) -> GenerateResult:
        """One image -> GLB. Called by the front (`web`) and by `modal run`."""
        from remote.pipeline import GenerateOptions

        assert self.pipeline is not None  # start_after_restore raised otherwise
        return self.pipeline.generate(image_bytes, GenerateOptions(**options))


@app.function(
    image=image,
    secrets=[token_secret],
    cpu=FRONT_CPU_CORES,
    memory=FRONT_MEMORY_MIB,
    max_containers=FRONT_MAX_CONTAINERS,
    scaledown_window=FRONT_SCALEDOWN_WINDOW_S,
    timeout=TIMEOUT_S,
    enable_memory_snapshot=True,
)
@modal.concurrent(max_inputs=FRONT_MAX_INPUTS)
@modal.asgi_app()
def web() -> FastAPI:
    """The URL the add-on talks to: the API on a CPU, the GPU class called for valid work only.
    Refuses to start without a token of at least 16 characters (remote.server.settings)."""
    configure_logging()
    from remote.modal_front import create_front_app

    return create_front_app(Service().generate.spawn, gpu_name=f"cuda ({' or '.join(GPUS)} on Modal)")


def main(input_path: str, output_path: str, **values: Any) -> None:
    """`modal run remote/modal_app.py --input-path IMG --output-path OUT.glb`: one image on the GPU."""
    source, target = Path(input_path), Path(output_path)
    if not source.is_file():
        raise SystemExit(f"error: no such image file: {source}")
    if target.suffix.lower() != ".glb":
        raise SystemExit(f"error: the output file must end in .glb (got {target})")

    from remote.errors import ImageTo3DError

    try:
        options = GenerateOptions(**values).validate()
        result = Service().generate.remote(source.read_bytes(), dataclasses.asdict(options))
    except ImageTo3DError as error:
        raise SystemExit(f"error: {error.message}") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(result.glb)
    timings = ", ".join(f"{stage} {seconds:.2f}s" for stage, seconds in result.timings.items())
    print(f"wrote {target}: {result.vertex_count} vertices, {result.face_count} faces ({timings})")


# Modal makes its flags from the signature: one per declared option (remote/options.py).
_signature = entrypoint_signature(
    inspect.Parameter("input_path", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str),
    inspect.Parameter("output_path", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str),
)
# inspect.signature reads a function's __signature__ (documented), which typeshed does not declare.
main.__signature__ = _signature  # type: ignore[attr-defined]
main.__annotations__ = {name: parameter.annotation for name, parameter in _signature.parameters.items()}
main = app.local_entrypoint()(main)
