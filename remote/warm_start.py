"""Load the pipeline in two halves, so that a memory snapshot can keep the slow half.

Modal takes its (CPU) memory snapshots with no GPU attached, and CUDA must not be touched before
the snapshot: a CUDA initialisation that fails once stays failed for the life of the process. So
the slow, device-free half runs before the snapshot, on the CPU: import everything a request needs
(torch, rembg with pymatting and scikit-image, FastAPI), read and check 1.7 GB of weights, build the
model, and copy its tensors out of the memory-mapped checkpoint into the process's own memory (a
snapshot holds process memory; pages still backed by the file would be read from the image again
after every restore). The quick half runs in every container after a restore: move the model to
the GPU, open the background-removal session, check that ONNX Runtime really runs it on the GPU,
run one mask and one small generate so that the first artist pays none of the first-run costs.
Anywhere else the two halves simply run back to back.

Each phase is timed (`StartupTimes`) and logged as `start-up <phase>: <seconds> s`.
"""

from __future__ import annotations

import dataclasses

import importlib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import PIL.Image
import PIL.ImageDraw
import torch

from remote.errors import ModelLoadError
from remote.pipeline import Pipeline
from remote.precision import check_precision, policy_for
from remote.preprocess import BackgroundRemover
from remote.triposr.model import TripoSR
from remote.triposr.weights import load_model, resolve_device

log = logging.getLogger("image_to_3d.warm_start")

# Imported before the snapshot so a restored process does not import them again (rembg alone,
# with pymatting's numba and scikit-image, takes seconds).
HEAVY_MODULES = ("rembg", "pymatting", "onnxruntime", "fastapi", "uvicorn", "remote.server.app")
CUDA_PROVIDER = "CUDAExecutionProvider"


@dataclass
class StartupTimes:
    """Seconds per start-up phase, in the order they ran; each is logged when it ends."""

    phases: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = time.perf_counter() - start
            log.info("start-up %s: %.2f s", name, self.phases[name])


def import_heavy_modules(times: StartupTimes | None = None) -> None:
    """Import what requests will need, so that the cost lands before a memory snapshot."""
    with (times or StartupTimes()).phase("imports"):
        for name in HEAVY_MODULES:
            importlib.import_module(name)


def load_on_cpu(model_source: str | Path, times: StartupTimes | None = None) -> TripoSR:
    """The device-free half: the model with its checked weights, on the CPU, in process memory
    (CUDA untouched)."""
    times = times or StartupTimes()
    with times.phase("read weights"):
        model = load_model(str(model_source), device=torch.device("cpu"))
    with times.phase("weights into process memory"):
        copy_into_process_memory(model)
    return model


def copy_into_process_memory(model: torch.nn.Module) -> None:
    """Give every parameter and buffer its own memory instead of a view of the mapped file.

    `torch.load(mmap=True)` leaves the tensors as pages of the checkpoint file; a memory snapshot
    would then not hold the weights, and every restored container would read them from disk again.
    """
    with torch.no_grad():
        for module in model.modules():
            for name, parameter in module.named_parameters(recurse=False):
                parameter.data = parameter.data.clone()
            for name, buffer in module.named_buffers(recurse=False):
                if buffer is not None:
                    module._buffers[name] = buffer.clone()


def file_backed_tensors(model: torch.nn.Module) -> list[str]:
    """Names of the parameters and buffers whose memory is a mapping of a file (Linux only)."""
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and fields[4] != "0" and fields[5].startswith("/"):  # inode, path
                start, end = (int(part, 16) for part in fields[0].split("-"))
                ranges.append((start, end))
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return [
        name
        for name, tensor in tensors
        if tensor.numel() and any(start <= tensor.data_ptr() < end for start, end in ranges)
    ]


def background_removal_device(remover: BackgroundRemover) -> str:
    """ "cuda" when ONNX Runtime runs rembg's session with its CUDA provider, else "cpu"."""
    providers = remover.session().inner_session.get_providers()
    return "cuda" if providers and providers[0] == CUDA_PROVIDER else "cpu"


def check_background_removal(remover: BackgroundRemover, device: torch.device) -> str:
    """Where background removal runs; on a CUDA machine, refuse to go on if that is the CPU.

    ONNX Runtime falls back to the CPU without raising when its CUDA provider cannot load (for
    example without libcurand.so.10); u2net then costs about 0.7 s a mask instead of milliseconds.
    """
    where = background_removal_device(remover)
    if device.type == "cuda" and where != "cuda":
        import onnxruntime  # type: ignore[import-untyped]  # ships no type information (no py.typed)

        raise ModelLoadError(
            f"Background removal would run on the CPU although this machine has a GPU: ONNX Runtime "
            f"{onnxruntime.__version__} offers {onnxruntime.get_available_providers()} but its CUDA "
            "provider did not load (its error is logged above; usually a missing CUDA library such "
            "as libcurand.so.10 or libcudnn.so.9). Install onnxruntime-gpu with the CUDA libraries "
            "of remote/modal_requirements.txt, and put their folders on LD_LIBRARY_PATH."
        )
    return where


def warm_up_background_removal(remover: BackgroundRemover) -> None:
    """Run one mask on a small drawn picture: ONNX Runtime's first run (CUDA kernels, cuDNN's
    algorithm search) then happens now. Does not count in `remover.calls`."""
    from rembg import remove  # type: ignore[import-untyped]

    picture = PIL.Image.new("RGB", (320, 320), (235, 235, 235))
    PIL.ImageDraw.Draw(picture).ellipse((80, 60, 240, 260), fill=(150, 60, 40))
    remove(picture, session=remover.session(), only_mask=True)


def finish_on_device(
    model: TripoSR,
    *,
    device: str | None,
    rembg_model_path: str | Path | None,
    model_source: str,
    revision: str | None,
    max_pixels: int | None = 40_000_000,
    precision: str = "auto",
    times: StartupTimes | None = None,
    compile_model: bool = True,
) -> Pipeline:
    """The quick half: move `model` to `device` (CUDA when present if None) and build the Pipeline.

    `compile_model=False` leaves the model pass uncompiled whatever the precision's policy says:
    Modal passes it unless the GPU snapshot holds the compiled pass, so that a restore does not
    spend tens of seconds compiling for a few milliseconds a request (docs/deploy.md, "Cold start").

    `model_source` and `revision` are what the pipeline reports (e.g. in `/v1/health`): the hub
    repository and commit the local files were verified against. `precision` means what it means
    for `Pipeline.load` ("auto": reduced precision on CUDA; "float32": the exact, dense path).
    Raises ModelLoadError when a GPU is there but background removal would run on the CPU.
    """
    times = times or StartupTimes()
    check_precision(precision)  # before any device work
    torch_device = resolve_device(device)
    policy = policy_for(precision, torch_device.type)
    if not compile_model:
        policy = dataclasses.replace(policy, compile_model=False)
    with times.phase("model to device"):
        model = model.to(torch_device)
        if torch_device.type == "cuda":
            torch.cuda.synchronize()
    with times.phase("background removal session"):
        remover = BackgroundRemover(rembg_model_path)
        where = check_background_removal(remover, torch_device)
    with times.phase(f"background removal first mask ({where})"):
        warm_up_background_removal(remover)
    pipeline = Pipeline.from_model(
        model,
        torch_device,
        remover,
        precision=policy,
        model_source=model_source,
        revision=revision,
        max_pixels=max_pixels,
    )
    with times.phase("pipeline warm-up (kernels, CUDA graph)"):
        pipeline.warm_up()
    return pipeline
