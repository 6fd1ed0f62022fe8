"""The precision setting as a frozen policy (remote/precision.py), and the pipeline built from it."""

from __future__ import annotations

import dataclasses

import PIL.Image
import pytest
import torch

from conftest import TINY_MODEL
from remote.errors import InvalidOptionError
from remote.options import GenerateOptions
from remote.pipeline import Pipeline
from remote.precision import (
    FAST,
    FLOAT32,
    FLOAT32_BAND,
    FLOAT32_ENDS,
    TF32_MODES,
    PrecisionPolicy,
    apply_policy,
    policy_for,
)
from remote.preprocess import BackgroundRemover
from remote.triposr.weights import load_model


@pytest.mark.parametrize(
    ("precision", "device_type", "expected"),
    [
        ("auto", "cuda", FAST),
        ("auto", "cpu", FLOAT32_BAND),
        ("fast", "cuda", FAST),
        ("fast", "cpu", FAST),
        ("float32", "cuda", FLOAT32),
        ("float32", "cpu", FLOAT32),
    ],
)
def test_each_setting_means_one_policy(precision: str, device_type: str, expected: PrecisionPolicy) -> None:
    assert policy_for(precision, device_type) == expected


def test_the_policies_say_what_the_settings_document() -> None:
    assert (FAST.matmul_dtype, FAST.decoder_dtype, FAST.extraction) == ("float16", "float16", "band")
    assert FAST.fused_field and FAST.cuda_graph and FAST.float32_layers == FLOAT32_ENDS and FAST.reduced
    assert (FLOAT32.matmul_dtype, FLOAT32.decoder_dtype, FLOAT32.extraction) == ("float32", "float32", "dense")
    assert not (FLOAT32.fused_field or FLOAT32.cuda_graph or FLOAT32.float32_layers or FLOAT32.reduced)
    assert dataclasses.replace(FLOAT32, extraction="band") == FLOAT32_BAND


def test_a_policy_is_frozen_and_a_variant_is_a_new_value() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        FAST.cuda_graph = False  # type: ignore[misc]
    variant = dataclasses.replace(FAST, cuda_graph=False)
    assert FAST.cuda_graph and not variant.cuda_graph and variant.matmul_dtype == FAST.matmul_dtype


def test_unknown_settings_and_values_are_refused() -> None:
    with pytest.raises(InvalidOptionError, match="precision must be one of auto, fast, float32"):
        policy_for("half", "cpu")
    with pytest.raises(ValueError, match="matmul_dtype"):
        PrecisionPolicy(matmul_dtype="float8")
    with pytest.raises(ValueError, match="extraction"):
        PrecisionPolicy(extraction="sparse")
    with pytest.raises(ValueError, match="tf32"):
        PrecisionPolicy(tf32="yes")
    with pytest.raises(ValueError, match="coarse_stride"):
        PrecisionPolicy(coarse_stride=0)
    with pytest.raises(ValueError, match="band_log_margin"):
        PrecisionPolicy(band_log_margin=-1.0)


def test_the_float32_ends_name_modules_of_the_model() -> None:
    model = load_model(TINY_MODEL, device="cpu")
    for name in FLOAT32_ENDS:
        assert isinstance(model.get_submodule(name), torch.nn.Module)


def _dtypes(model) -> tuple[torch.dtype, torch.dtype, torch.dtype, torch.dtype]:
    """(a transformer block's product, the field MLP, a float32 end, the residual stream's norm)."""
    return (
        model.backbone.transformer_blocks[0].attn1.to_q.weight.dtype,
        model.decoder.layers[0].weight.dtype,
        model.backbone.proj_out.weight.dtype,
        model.backbone.norm.weight.dtype,
    )


def test_apply_policy_casts_the_layers_the_policy_names() -> None:
    f32, f16 = torch.float32, torch.float16
    assert _dtypes(apply_policy(load_model(TINY_MODEL, device="cpu"), FLOAT32)) == (f32, f32, f32, f32)
    assert _dtypes(apply_policy(load_model(TINY_MODEL, device="cpu"), FAST)) == (f16, f16, f32, f32)
    no_ends = dataclasses.replace(FAST, float32_layers=())
    assert _dtypes(apply_policy(load_model(TINY_MODEL, device="cpu"), no_ends)) == (f16, f16, f16, f32)


@pytest.mark.parametrize(
    ("precision", "dtypes", "info"),
    [
        ("float32", (torch.float32, torch.float32), ("float32", "dense")),
        ("auto", (torch.float32, torch.float32), ("float32", "band")),
        ("fast", (torch.float16, torch.float16), ("float16", "band")),
    ],
)
def test_the_pipeline_applies_a_setting(precision: str, dtypes: tuple, info: tuple) -> None:
    pipeline = Pipeline.from_model(
        load_model(TINY_MODEL, device="cpu"), torch.device("cpu"), BackgroundRemover(), precision=precision
    )
    assert _dtypes(pipeline.model)[:2] == dtypes
    assert (pipeline.info["precision"], pipeline.info["extraction"]) == info
    assert pipeline.policy == policy_for(precision, "cpu")
    assert pipeline.run_model is pipeline.model  # no CUDA graph on the CPU
    assert (pipeline.fused_field is not None) == (precision == "fast")


def test_the_pipeline_honours_a_policy_passed_in() -> None:
    policy = dataclasses.replace(FAST, matmul_dtype="bfloat16", fused_field=False, extraction="dense")
    pipeline = Pipeline.from_model(
        load_model(TINY_MODEL, device="cpu"), torch.device("cpu"), BackgroundRemover(), precision=policy
    )
    assert pipeline.policy is policy and pipeline.fused_field is None and pipeline.extraction == "dense"
    assert _dtypes(pipeline.model) == (torch.bfloat16, torch.float16, torch.float32, torch.float32)
    assert pipeline.info["precision"] == "bfloat16"
    images = torch.rand(1, 32, 32, 3)
    with torch.inference_mode():
        scene_code = pipeline.scene_code(images)
        density = pipeline.field(scene_code).density(torch.zeros(5, 3))
    assert scene_code.dtype == density.dtype == torch.float32 and bool(density.isfinite().all())


def test_the_model_keeps_no_precision_state() -> None:
    """The model is the plain float32 TripoSR: what runs how is the pipeline's policy, not flags on
    the model or dtypes read back from its weights."""
    model = load_model(TINY_MODEL, device="cpu")
    Pipeline.from_model(model, torch.device("cpu"), BackgroundRemover(), precision="fast")
    for name in ("fused_field", "fused_field_checked", "transformer_dtype", "use_fast_precision", "float32_ends"):
        assert not hasattr(model, name), name


class _Stop(Exception):
    pass


def test_the_pipeline_passes_the_policys_band_to_the_extraction(monkeypatch) -> None:
    """The band's stride and margin are the policy's (benchmarks/pipeline.py's --coarse-stride and
    --band-margin build such a policy), not module globals."""
    import remote.pipeline

    seen = {}

    def spy(field, **options):
        seen.update(options)
        raise _Stop

    monkeypatch.setattr(remote.pipeline, "extract_surface", spy)
    for policy in (FLOAT32_BAND, dataclasses.replace(FLOAT32_BAND, coarse_stride=2, band_log_margin=0.5)):
        pipeline = Pipeline.from_model(
            load_model(TINY_MODEL, device="cpu"), torch.device("cpu"), BackgroundRemover(), precision=policy
        )
        with pytest.raises(_Stop):
            pipeline.generate(PIL.Image.new("RGB", (32, 32)), GenerateOptions(remove_background="never"))
        assert (seen["method"], seen["coarse_stride"], seen["band_log_margin"]) == (
            "band",
            policy.coarse_stride,
            policy.band_log_margin,
        )


def _tf32_in_the_pass(pipeline: Pipeline) -> list[tuple[bool, bool]]:
    """PyTorch's TF32 switches (cuDNN, matrix products) as the patch embedding and the
    post-processor see them during the pipeline's model pass."""
    seen: list[tuple[bool, bool]] = []
    model = pipeline.model
    hooks = [
        part.register_forward_pre_hook(
            lambda *_: seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
        )
        for part in (model.image_tokenizer.model.embeddings.patch_embeddings, model.post_processor)
    ]
    try:
        with torch.inference_mode():
            pipeline.scene_code(torch.rand(1, 32, 32, 3))
    finally:
        for hook in hooks:
            hook.remove()
    return seen


@pytest.mark.parametrize(
    ("policy", "flags"),
    [
        (FLOAT32, (False, False)),
        (FLOAT32_BAND, (False, False)),
        (dataclasses.replace(FAST, cuda_graph=False), (False, False)),
        (dataclasses.replace(FLOAT32, tf32="convolutions"), (True, False)),
        (dataclasses.replace(FLOAT32, tf32="on"), (True, True)),
    ],
)
def test_tf32_in_the_model_pass_is_the_policys(policy: PrecisionPolicy, flags: tuple[bool, bool]) -> None:
    """The product's policies keep TF32 off in the pass; a policy may allow it (an experiment,
    benchmarks/investigations/precision_sweep.py), with no module global patched."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    pipeline = Pipeline.from_model(
        load_model(TINY_MODEL, device="cpu"), torch.device("cpu"), BackgroundRemover(), precision=policy
    )
    assert _tf32_in_the_pass(pipeline) == [flags, flags]
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


def test_the_tf32_modes_are_the_models() -> None:
    from remote.triposr.model import TF32_FLAGS

    assert set(TF32_MODES) == set(TF32_FLAGS) and FAST.tf32 == FLOAT32.tf32 == FLOAT32_BAND.tf32 == "off"
