"""The two loading halves Modal runs around its memory snapshot, run back to back on the CPU."""

from __future__ import annotations

import pytest
import torch

from conftest import EXAMPLES, TINY_MODEL
from remote import warm_start
from remote.pipeline import GenerateOptions
from tiny_u2net import build_tiny_u2net


def test_cpu_half_then_device_half_give_a_working_pipeline(tmp_path):
    model = warm_start.load_on_cpu(TINY_MODEL)
    assert next(model.parameters()).device.type == "cpu"
    pipeline = warm_start.finish_on_device(
        model, device="cpu", rembg_model_path=build_tiny_u2net(tmp_path / "u2net.onnx"),
        model_source="stabilityai/TripoSR", revision="abc123",
    )
    assert pipeline.remover._session is not None  # opened during warm-up, not on the first request
    assert pipeline.info["model"] == "stabilityai/TripoSR" and pipeline.info["revision"] == "abc123"
    result = pipeline.generate((EXAMPLES / "teapot.png").read_bytes(), GenerateOptions(resolution=32))
    assert result.glb[:4] == b"glTF" and result.face_count > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_warm_up_prepares_the_cuda_path() -> None:
    """After warm_up the fused kernel is compiled and checked and the model pass is captured."""
    from remote.pipeline import Pipeline

    pipeline = Pipeline.load(TINY_MODEL, device="cuda")
    pipeline.warm_up()
    assert pipeline.model.fused_field_checked and len(pipeline.run_model._graphs) == 1
