"""The model pass (TripoSR.encode) replayed as one CUDA graph.

Why: at batch 1 the encoder and transformer are hundreds of small kernels, and launching them
costs about as much as running them (replaying halves the pass: docs/performance.md, "Figures
behind the code"). `encode` has fixed
shapes for a given batch and conditioning size, so it is captured once per shape and replayed;
the image's own resize (`preprocess`) runs eagerly first. The graph keeps its activations' memory
between calls (a few hundred MB).
"""

from __future__ import annotations

import torch

from remote.triposr.model import TripoSR

WARMUP_RUNS = 3  # before capture, on a side stream, as CUDA graph capture requires


class GraphedModel:
    """Callable like the model (images in, scene codes out); CUDA inputs replay a graph captured
    once per input shape and TF32 setting (TF32's kernels are chosen at capture)."""

    def __init__(self, model: TripoSR) -> None:
        self.model = model
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}

    def __call__(self, images: torch.Tensor, *, tf32: str = "off") -> torch.Tensor:
        if not images.is_cuda:
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
                self.model.encode(static_pixels, tf32=tf32)
        torch.cuda.current_stream(pixels.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_codes = self.model.encode(static_pixels, tf32=tf32)
        return graph, static_pixels, static_codes
