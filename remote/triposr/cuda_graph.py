"""The model pass (TripoSR.encode) replayed as one CUDA graph.

Why: at batch 1 the encoder and transformer are hundreds of small kernels, and launching them
costs about as much as running them (replaying halves the pass: docs/performance.md, "Figures
behind the code"). `encode` has fixed
shapes for a given batch and conditioning size, so it is captured once per shape and replayed;
the image's own resize (`preprocess`) runs eagerly first. The graph keeps its activations' memory
between calls (a few hundred MB).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from remote.triposr.model import TripoSR

logger = logging.getLogger(__name__)

WARMUP_RUNS = 3  # before capture, on a side stream, as CUDA graph capture requires
# Max difference of the compiled pass's scene code from the eager one, relative to its largest
# value, for the compiled code to be used: about 20 times what a correct compile gives (like a
# change of attention kernel), far below what a miscompiled pass gives (docs/performance.md).
COMPILE_TOLERANCE = 1e-2


class GraphedModel:
    """Callable like the model (images in, scene codes out); CUDA inputs replay a graph captured
    once per input shape and TF32 setting (TF32's kernels are chosen at capture)."""

    def __init__(self, model: TripoSR) -> None:
        self.model = model
        self.encode: Callable[..., torch.Tensor] = model.encode
        self.compiled = False
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}

    def __call__(self, images: torch.Tensor, *, tf32: str = "off") -> torch.Tensor:
        if not images.is_cuda:
            if self.compiled:
                return self.encode(self.model.preprocess(images), tf32=tf32)
            return self.model(images, tf32=tf32)
        pixels = self.model.preprocess(images)
        key = (tuple(pixels.shape), pixels.dtype, pixels.device, tf32)
        if key not in self._graphs:
            self._graphs[key] = self._capture(pixels, tf32)
        graph, static_pixels, static_codes = self._graphs[key]
        static_pixels.copy_(pixels)
        graph.replay()
        return static_codes.clone()  # the next replay overwrites the graph's output

    def _capture(self, pixels: torch.Tensor, tf32: str) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]:
        static_pixels = pixels.clone()
        stream = torch.cuda.Stream(pixels.device)
        stream.wait_stream(torch.cuda.current_stream(pixels.device))
        with torch.cuda.stream(stream):
            for _ in range(WARMUP_RUNS):
                self.encode(static_pixels, tf32=tf32)
        torch.cuda.current_stream(pixels.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_codes = self.encode(static_pixels, tf32=tf32)
        return graph, static_pixels, static_codes

    def compile(self, pixels: torch.Tensor, compiler: Callable | None = None) -> bool:
        """Replace the pass by torch.compile's code (inductor: the norms, casts and activations
        fused into few kernels), kept only if its scene code for `pixels` (B, 3, S, S) agrees with
        the eager pass's within COMPILE_TOLERANCE; graphs captured so far are dropped. Returns
        whether the compiled pass is used. Compiling takes tens of seconds (less from inductor's
        cache), which is why only a long-running server does it, in `Pipeline.warm_up`."""
        compiler = compiler or (lambda function: torch.compile(function, dynamic=False))
        try:
            compiled = compiler(self.model.encode)
            expected = self.model.encode(pixels)
            error = float((compiled(pixels).float() - expected.float()).abs().max() / expected.float().abs().max())
        except Exception as exc:  # noqa: BLE001 - no C compiler, an unsupported op, a Triton failure...
            logger.warning("the model pass could not be compiled (%s); running it uncompiled", exc)
            return False
        if not error < COMPILE_TOLERANCE:  # also catches NaN
            logger.warning("the compiled model pass disagrees with the eager one (%.3g); running it uncompiled", error)
            return False
        logger.info("model pass compiled (difference from the eager pass %.2g)", error)
        self.encode, self.compiled = compiled, True
        self._graphs.clear()
        return True
