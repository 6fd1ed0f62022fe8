"""Image -> GLB: the one pipeline behind the CLI, the HTTP service and Modal.

It strings the parts together (decode, background removal, TripoSR, mesh extraction, colour query,
GLB) and times each stage, so every caller reports the same numbers and the same errors.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from contextlib import contextmanager
from functools import partial
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import PIL.Image
import torch

from remote.errors import (
    BackgroundRemovalUnavailableError,
    GpuOutOfMemoryError,
    ImageTo3DError,
    JobCancelledError,
    NoForegroundError,
)
from remote import png_unfilter
from remote.extraction import extract_surface
from remote.fast_png import InflatedPng
from remote.compact_glb import PackedMesh, pack_mesh, packed_to_glb
from remote.glb import textured_mesh_to_glb
from remote.options import GenerateOptions
from remote.precision import FLOAT32_BAND, PrecisionPolicy, apply_policy, check_precision, policy_for
from remote.preprocess_torch import DevicePng, prepare_image_tensor, prepare_inflated_png_tensor, unfilter_png
from remote.preprocess import (
    DEFAULT_MAX_PIXELS,
    BackgroundRemover,
    load_for_device,
    load_image,
    prepare_image,
)
from remote.texture import TexturedMesh, bake_texture
from remote.triposr.cuda_graph import GraphedModel
from remote.triposr.model import FusedField, SceneField, TripoSR
from remote.triposr.weights import load_model, resolve_device

STAGES = ("decode", "preprocess", "model", "extraction", "color", "glb")
# With a texture (texture_size > 0) these come between "color" and "glb" (remote/texture/bake.py).
TEXTURE_STAGES = ("unwrap", "rasterise", "texture_color", "dilate", "encode")
logger = logging.getLogger(__name__)

LOCK_POLL_S = 0.05  # how often a job waiting for the device looks whether its client is still there
# A PNG up to this many pixels is unfiltered on a stream of its own in the decode stage, outside the
# device's lock (its 4 bytes a pixel then wait on the GPU for the lock: at most 16 MB a job); a
# larger one is unfiltered in the preprocess stage, under the lock.
ASIDE_PIXELS = 4_194_304

Cancelled = Callable[[], bool]  # True once the job's client has gone away


def _never() -> bool:
    return False


class UnavailableRemover:
    """Stands in for a BackgroundRemover whose model could not be loaded: an image that needs
    background removal gets a clear 503, images that are already cut out never call it."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def _refuse(self) -> BackgroundRemovalUnavailableError:
        return BackgroundRemovalUnavailableError(
            "Background removal is not available on this server (its model could not be loaded), so only "
            "images that are already cut out (PNG or WebP with transparency) work now; send one, or use "
            "remove_background=never."
        )

    def session(self) -> None:
        raise self._refuse()

    def mask(self, image: PIL.Image.Image) -> PIL.Image.Image:
        raise self._refuse()

    def __call__(self, image: PIL.Image.Image) -> PIL.Image.Image:
        raise self._refuse()


@dataclass
class GenerateResult:
    """The GLB and what the caller reports about it."""

    glb: bytes
    vertex_count: int
    face_count: int
    timings: dict[str, float] = field(default_factory=dict)


class Pipeline:
    """A loaded model plus one background-removal session, reused across requests."""

    def __init__(
        self,
        model: TripoSR,
        device: torch.device,
        remover: BackgroundRemover,
        *,
        model_source: str = "",
        revision: str | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        policy: PrecisionPolicy = FLOAT32_BAND,  # what a plain Pipeline(...) ran before policies: band, no graph
    ) -> None:
        """`model` already has `policy`'s dtypes (`from_model` applies them); the policy says how
        the rest runs: the extraction method, the CUDA graph, the fused field kernel."""
        self.policy = policy
        self.extraction = policy.extraction
        self.model = model
        self.run_model = GraphedModel(model) if policy.cuda_graph and device.type == "cuda" else model
        self.fused_field = FusedField(model) if policy.fused_field else None
        # Plain RGBA PNGs unfiltered on the device (remote/png_unfilter.py), once its kernel has
        # passed its check (None: not checked yet).
        self.png_on_device = policy.png_on_device and png_unfilter.runs_on(device)
        self._unfilter_agrees: bool | None = None
        self.aside_pixels = ASIDE_PIXELS  # 0: always under the lock (benchmarks compare the two)
        self._aside: torch.cuda.Stream | None = None  # the decode stage's stream, made on first use
        self.device = device
        self.remover = remover
        self.max_pixels = max_pixels
        self.info: dict[str, str | bool | None] = {
            "model": model_source,
            "revision": revision,
            "device": device.type,
            "precision": policy.matmul_dtype,
            "extraction": policy.extraction,
        }
        self._lock = threading.Lock()

    @property
    def background_removal(self) -> bool:
        """False once `open_background_removal` found that rembg's model cannot load."""
        return not isinstance(self.remover, UnavailableRemover)

    def open_background_removal(self) -> bool:
        """Open the rembg session now (so the first image does not pay for it). If it cannot open
        (no model file and no network, a damaged file), keep serving without it: images that are
        already cut out still work, the others get 503 background_removal_unavailable."""
        try:
            self.remover.session()
        except ImageTo3DError as error:
            logger.error("background removal is unavailable: %s", error.message)
            self.remover = UnavailableRemover(error.message)  # type: ignore[assignment]
            return False
        return True

    @classmethod
    def load(
        cls,
        model: str | Path = "stabilityai/TripoSR",
        device: str | None = None,
        rembg_model_path: str | Path | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        precision: str | PrecisionPolicy = "auto",
    ) -> "Pipeline":
        """Load the model once onto `device` (CUDA when present) and prepare background removal.

        precision "float32" is the exact path (float32 weights, dense grid: upstream's numbers);
        "fast" uses reduced precision and the band extraction; "auto" is "fast" on CUDA and, on
        the CPU (where reduced precision does not pay), float32 weights with the band extraction.
        A PrecisionPolicy (remote/precision.py) is taken as it is.
        """
        if not isinstance(precision, PrecisionPolicy):
            check_precision(precision)
        torch_device = resolve_device(device)
        triposr = load_model(str(model), device=torch_device)
        return cls.from_model(
            triposr,
            torch_device,
            BackgroundRemover(rembg_model_path),
            precision=precision,
            model_source=str(model),
            revision=getattr(triposr, "revision", None),
            max_pixels=max_pixels,
        )

    @classmethod
    def from_model(
        cls,
        model: TripoSR,
        device: torch.device,
        remover: BackgroundRemover,
        *,
        precision: str | PrecisionPolicy = "auto",
        model_source: str = "",
        revision: str | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> "Pipeline":
        """A float32 model already on `device` -> Pipeline run by `precision`: a setting
        (remote/precision.py's `policy_for` on this device) or a PrecisionPolicy built by the
        caller. The model's layers are cast to the policy's dtypes, in place. Pipeline.load and the
        Modal container's warm start share it."""
        policy = precision if isinstance(precision, PrecisionPolicy) else policy_for(precision, device.type)
        return cls(
            apply_policy(model, policy),
            device,
            remover,
            model_source=model_source,
            revision=revision,
            max_pixels=max_pixels,
            policy=policy,
        )

    def warm_up(self) -> None:
        """On CUDA, one small generate before the first request: it compiles the model pass where
        the policy asks for it (torch.compile, checked against the eager pass), compiles the fused
        field kernel, checks it, and captures the model pass's CUDA graph (seconds the first artist would
        otherwise wait); a 512 texture is baked too, so the texture path's kernels are loaded, and the
        picture goes in as PNG bytes, so the PNG decoder is loaded too. On the CPU there is nothing
        to prepare."""
        if self.device.type != "cuda":
            return
        if self.policy.compile_model and isinstance(self.run_model, GraphedModel):
            size = self.model.config.cond_image_size
            pixels = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(self.device)
            with torch.inference_mode():
                self.info["compiled"] = self.run_model.compile(pixels)
        picture = warm_up_png()
        load_image(picture)  # libpng's first use, for the PNGs that are not unfiltered on the device
        try:
            self.generate(picture, GenerateOptions(resolution=64, remove_background="never", texture_size=512))
        except NoForegroundError:
            # An untrained or unusual model may see nothing in a square (no face to export); the
            # kernels ran and the graph was captured before that, so the server can start anyway.
            logger.info("warm-up: the model found no surface in the test square (kernels are ready)")

    def generate(
        self,
        image: bytes | str | Path | PIL.Image.Image,
        options: GenerateOptions | None = None,
        cancelled: Cancelled = _never,
    ) -> GenerateResult:
        """Turn one image into GLB bytes; one job at a time on the device.

        Bytes and paths go through `load_image` (format, pixel limit, EXIF orientation); a PIL image
        is taken as the caller prepared it (its mode is still normalised). `cancelled` is asked
        before the job starts, while it waits for the device, between stages and between chunks of
        the extraction; once it says True the job stops with JobCancelledError (the HTTP service
        passes "the client has disconnected", so an abandoned job frees the device early)."""
        options = (options or GenerateOptions()).validate()
        timings: dict[str, float] = {}
        _stop_if(cancelled)
        with self._stage(timings, "decode", device=False):
            picture = image if isinstance(image, PIL.Image.Image) else self._load(image, options)
        while not self._lock.acquire(timeout=LOCK_POLL_S):
            _stop_if(cancelled)
        try:
            result = self._generate_locked(picture, options, timings, cancelled)
        finally:
            # The GLB's JSON and file are put together on the host, so the next job can have the
            # device meanwhile (the server's concurrent requests overlap this with the next job's GPU stages).
            self._lock.release()
        _stop_if(cancelled)
        with self._stage(timings, "glb", device=False):
            # No NORMAL: it grows the file by a fifth and needs the vertex normals computed (the
            # extraction skips them), and the add-on shades the object smooth itself. Vertex colours
            # go in the compact form (remote/compact_glb.py), packed on the device already. A
            # textured mesh keeps float positions (its UV seams split vertices).
            if isinstance(result, PackedMesh):
                glb = packed_to_glb(result)
                vertex_count, face_count = result.vertex_count, result.face_count
            else:
                glb = textured_mesh_to_glb(result)
                vertex_count, face_count = len(result.vertices), len(result.faces)  # seams add vertex copies
        return GenerateResult(glb=glb, vertex_count=vertex_count, face_count=face_count, timings=timings)

    def _load(self, image: bytes | str | Path, options: GenerateOptions) -> PIL.Image.Image | InflatedPng | DevicePng:
        """The decode stage: a plain RGBA PNG only inflated where its rows are unfiltered on the
        device (not for "always": rembg needs the pixels on the host), every other image decoded.
        On CUDA an inflated PNG of up to `aside_pixels` is unfiltered here, on a stream of its own
        (`_unfilter_aside`), so the next job's decode overlaps the current job's device stages as
        the host decoders' did."""
        if not (self.png_on_device and self._unfilter_agrees is not False and options.remove_background != "always"):
            return load_image(image, self.max_pixels)
        picture = load_for_device(image, self.max_pixels)
        if (
            isinstance(picture, InflatedPng)
            and self.device.type == "cuda"
            and picture.size[0] * picture.size[1] <= self.aside_pixels
            and self._device_unfilters()
        ):
            return self._unfilter_aside(picture)
        return picture

    def _unfilter_aside(self, png: InflatedPng) -> DevicePng | InflatedPng:
        """Unfilter on the decode stage's own CUDA stream and wait for it in this thread only. When
        the job holding the device has left no room for the pixels, the PNG is unfiltered under
        the lock instead, once that job's memory is free again."""
        if self._aside is None:
            self._aside = torch.cuda.Stream(self.device)
        try:
            with torch.cuda.stream(self._aside):
                unfiltered = unfilter_png(png, self.device)
                done = torch.cuda.Event()
                done.record()
            done.synchronize()
        except torch.cuda.OutOfMemoryError:
            return png
        return unfiltered

    def _device_unfilters(self) -> bool:
        """Whether the device unfilters PNG rows: its kernel is checked on first use."""
        if self._unfilter_agrees is None:
            self._unfilter_agrees = png_unfilter.agrees(self.device)
        return self._unfilter_agrees

    def _generate_locked(
        self,
        picture: PIL.Image.Image | InflatedPng | DevicePng,
        options: GenerateOptions,
        timings: dict[str, float],
        cancelled: Cancelled,
    ) -> PackedMesh | TexturedMesh:
        """The stages that use the device: preprocessing to the colour query, then the compact
        GLB's arrays packed there, or the bake; their results on the host."""
        _stop_if(cancelled)
        with self._stage(timings, "preprocess"), torch.inference_mode():
            # On CUDA the crop, composite and resize run on the GPU from the uint8 picture
            # (remote/preprocess_torch.py: the CPU path's input within 2e-6), or from a PNG's
            # inflated rows unfiltered there; on the CPU, numpy's.
            if isinstance(picture, InflatedPng) and not self._device_unfilters():
                picture = load_image(picture.data, None)  # checked for size when it was inflated
            if isinstance(picture, DevicePng) and picture.rgba.is_cuda:
                # Made on the decode stage's stream: its memory must not go back to that stream's
                # pool while this stream still reads it.
                picture.rgba.record_stream(torch.cuda.current_stream(self.device))
            prepare: Callable[..., torch.Tensor | np.ndarray]
            if isinstance(picture, (InflatedPng, DevicePng)):
                prepare = partial(prepare_inflated_png_tensor, picture, device=self.device)
            elif self.device.type == "cpu":
                prepare = partial(prepare_image, picture)
            else:
                prepare = partial(prepare_image_tensor, picture, device=self.device)
            prepared = prepare(
                remove_background=options.remove_background,
                foreground_ratio=options.foreground_ratio,
                remover=self.remover,
                size=self.model.config.cond_image_size,
            )
        try:
            with torch.inference_mode():
                with self._stage(timings, "model"):
                    images = torch.as_tensor(prepared).to(self.device)[None]
                    scene_code = self.scene_code(images)
                _stop_if(cancelled)
                field = self.field(scene_code)
                surface = extract_surface(
                    field,
                    resolution=options.resolution,
                    threshold=options.threshold,
                    target_faces=options.target_faces,
                    method=self.extraction,
                    coarse_stride=self.policy.coarse_stride,
                    band_log_margin=self.policy.band_log_margin,
                    timings=timings,
                    sync=self._sync,
                    check=lambda: _stop_if(cancelled),
                )
                if len(surface.faces) == 0:  # extract_surface refuses empty surfaces; the GLB needs a face
                    raise NoForegroundError("The model found no surface in this image; try another threshold or image.")
                _stop_if(cancelled)
                if not options.texture_size:
                    with self._stage(timings, "glb"):
                        grid = (options.resolution, field.radius)
                        return pack_mesh(surface.vertices, surface.faces, surface.colors, grid)
                with self._stage(timings, "color"):
                    mesh = surface.to_host()
                # After the decimation, so the atlas is made for the faces the GLB carries.
                return bake_texture(mesh, field, size=options.texture_size, timings=timings, sync=self._sync)
        except torch.cuda.OutOfMemoryError as error:
            torch.cuda.empty_cache()
            raise GpuOutOfMemoryError(
                f"The GPU ran out of memory at resolution {options.resolution}; "
                "lower the resolution (for example 192 or 128)"
                + (" or texture_size" if options.texture_size else "")
                + " and try again."
            ) from error

    def scene_code(self, images: torch.Tensor) -> torch.Tensor:
        """The model pass for one image (1, H, W, 3). An fp16 pass that overflowed (inf or NaN in
        the scene code) is run again with bf16 arithmetic, which has float32's range."""
        scene_code = self.run_model(images, tf32=self.policy.tf32)[0]
        if self.policy.matmul_dtype == "float16" and not bool(scene_code.isfinite().all()):
            logger.warning("the fp16 model pass overflowed on this image; running it again with bf16 arithmetic")
            scene_code = self.model.forward_wide_range(images, self.policy.float32_layers, tf32=self.policy.tf32)[0]
            if not bool(scene_code.isfinite().all()):
                raise ImageTo3DError(
                    "The model's numbers overflowed on this image even with bf16 arithmetic; run the server "
                    "with the exact path (IMAGE_TO_3D_PRECISION=float32) for this model."
                )
        return scene_code

    def field(self, scene_code: torch.Tensor) -> SceneField:
        """A scene code as the Field the extraction and the bake query (through the fused kernel
        where the policy asks for it and it runs)."""
        return self.model.field(scene_code, self.fused_field)

    def _sync(self) -> None:
        """Wait for queued GPU work so stage timings measure the stage, not the launch."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def _stage(self, timings: dict[str, float], name: str, device: bool = True) -> Iterator[None]:
        """Add the block's wall time to `timings[name]`. A block that uses the device waits for its
        queued work first; a host-only block (`device=False`, run without the device lock) must
        not: it would wait for whichever job holds the device then."""
        start = time.perf_counter()
        try:
            yield
        finally:
            if device:
                self._sync()
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def warm_up_png() -> bytes:
    """The warm-up's picture, a cut-out square, as PNG bytes: the warm-up decodes it as a request's
    image is decoded (libpng's path, remote/fast_png.py), so the first request finds it loaded."""
    picture = PIL.Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    picture.paste((200, 120, 60, 255), (16, 16, 48, 48))  # a cut-out: no background removal
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def _stop_if(cancelled: Cancelled) -> None:
    if cancelled():
        raise JobCancelledError("The client disconnected; the job was stopped.")
