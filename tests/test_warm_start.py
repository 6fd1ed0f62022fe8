"""The two loading halves Modal runs around its memory snapshot, run back to back on the CPU."""

from __future__ import annotations

import pytest
import torch

from conftest import EXAMPLES, TINY_MODEL
from remote import warm_start
from remote.pipeline import GenerateOptions
from image_to_3d_dev.tiny_u2net import build_tiny_u2net


@pytest.mark.slow  # loads and runs the tiny model
def test_cpu_half_then_device_half_give_a_working_pipeline(tmp_path):
    model = warm_start.load_on_cpu(TINY_MODEL)
    assert next(model.parameters()).device.type == "cpu"
    pipeline = warm_start.finish_on_device(
        model,
        device="cpu",
        rembg_model_path=build_tiny_u2net(tmp_path / "u2net.onnx"),
        model_source="stabilityai/TripoSR",
        revision="abc123",
    )
    assert pipeline.remover._session is not None  # opened during warm-up, not on the first request
    assert pipeline.info["model"] == "stabilityai/TripoSR" and pipeline.info["revision"] == "abc123"
    result = pipeline.generate((EXAMPLES / "teapot.png").read_bytes(), GenerateOptions(resolution=32))
    assert result.glb[:4] == b"glTF" and result.face_count > 0


def test_the_device_half_can_leave_the_pass_uncompiled(tmp_path):
    """Modal's restores (without a GPU snapshot) do not compile; the policy says so before warm-up."""
    u2net = build_tiny_u2net(tmp_path / "u2net.onnx")
    common = dict(device="cpu", rembg_model_path=u2net, model_source="m", revision=None, precision="fast")
    kept = warm_start.finish_on_device(warm_start.load_on_cpu(TINY_MODEL), **common)
    plain = warm_start.finish_on_device(warm_start.load_on_cpu(TINY_MODEL), **common, compile_model=False)

    assert kept.policy.compile_model and not plain.policy.compile_model
    assert plain.policy.matmul_dtype == kept.policy.matmul_dtype == "float16"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_warm_up_prepares_the_cuda_path() -> None:
    """After warm_up the fused kernel is compiled and checked and the model pass is captured."""
    from remote.pipeline import Pipeline

    pipeline = Pipeline.load(TINY_MODEL, device="cuda")
    pipeline.warm_up()
    assert pipeline.fused_field.checked and len(pipeline.run_model._graphs) == 1


def test_the_cpu_half_leaves_no_weight_in_the_mapped_file():
    """A memory snapshot holds process memory; tensors that are pages of the file would be read
    from disk again after every restore."""
    from remote.triposr.weights import load_model

    mapped = load_model(str(TINY_MODEL), device=torch.device("cpu"))
    assert warm_start.file_backed_tensors(mapped)  # what loading alone leaves: the check can fail

    model = warm_start.load_on_cpu(TINY_MODEL)

    assert warm_start.file_backed_tensors(model) == []
    reference = load_model(str(TINY_MODEL), device=torch.device("cpu")).state_dict()
    assert all(torch.equal(reference[name], tensor) for name, tensor in model.state_dict().items())


def test_start_up_phases_are_timed_and_logged(tmp_path, caplog):
    times = warm_start.StartupTimes()
    with caplog.at_level("INFO", logger="image_to_3d.warm_start"):
        warm_start.import_heavy_modules(times)
        model = warm_start.load_on_cpu(TINY_MODEL, times)
        pipeline = warm_start.finish_on_device(
            model,
            device="cpu",
            rembg_model_path=build_tiny_u2net(tmp_path / "u2net.onnx"),
            model_source="stabilityai/TripoSR",
            revision=None,
            times=times,
        )

    assert list(times.phases) == [
        "imports",
        "read weights",
        "weights into process memory",
        "model to device",
        "background removal session",
        "background removal first mask (cpu)",
        "pipeline warm-up (kernels, CUDA graph)",
    ]
    assert all(seconds >= 0 for seconds in times.phases.values())
    logged = [record.getMessage() for record in caplog.records]
    assert all(any(line.startswith(f"start-up {phase}: ") for line in logged) for phase in times.phases)
    assert pipeline.remover.calls == 0  # the warm-up mask is not an artist's


def test_background_removal_on_the_cpu_is_refused_when_there_is_a_gpu(tmp_path):
    """ONNX Runtime falls back to the CPU silently; here the CPU build of ORT plays a GPU build
    whose CUDA provider did not load."""
    from remote.errors import ModelLoadError
    from remote.preprocess import BackgroundRemover

    remover = BackgroundRemover(build_tiny_u2net(tmp_path / "u2net.onnx"))

    assert warm_start.background_removal_device(remover) == "cpu"
    assert warm_start.check_background_removal(remover, torch.device("cpu")) == "cpu"
    with pytest.raises(ModelLoadError, match="libcurand.so.10") as refused:
        warm_start.check_background_removal(remover, torch.device("cuda"))
    assert "CPUExecutionProvider" in refused.value.message and "onnxruntime-gpu" in refused.value.message


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_background_removal_runs_on_the_gpu_when_there_is_one(tmp_path):
    from remote.preprocess import BackgroundRemover

    remover = BackgroundRemover(build_tiny_u2net(tmp_path / "u2net.onnx"))

    assert warm_start.check_background_removal(remover, torch.device("cuda")) == "cuda"
