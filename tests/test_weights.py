"""Loading weights: the published layout exactly, folders in both formats, the pinned hub path, errors."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_MODEL
from remote.errors import InvalidOptionError, ModelLoadError
from remote.triposr.config import load_config
from remote.triposr.model import TripoSR
from remote.triposr.weights import (
    PINNED_SHA256,
    TRIPOSR_REVISION,
    build_random_model,
    load_model,
    model_from_state_dict,
    random_state_dict,
    resolve_device,
)

MANIFEST = Path(__file__).resolve().parents[1] / "remote" / "triposr" / "full_state_dict_manifest.json"


def test_full_model_has_exactly_the_published_names_and_shapes():
    manifest = json.loads(MANIFEST.read_text())
    with torch.device("meta"):
        model = TripoSR(load_config())
    ours = {name: (list(tensor.shape), str(tensor.dtype)) for name, tensor in model.state_dict().items()}
    assert ours == {name: (entry["shape"], "torch." + entry["dtype"]) for name, entry in manifest.items()}
    assert sum(p.numel() for p in model.parameters()) == 419_275_628


def test_manifest_state_dict_loads_strictly():
    manifest = json.loads(MANIFEST.read_text())
    state = {name: torch.empty(entry["shape"], device="meta") for name, entry in manifest.items()}
    model = model_from_state_dict(state, device="meta")
    assert model.decoder.layers[18].weight.shape == (4, 64)


def test_a_missing_or_misshapen_tensor_is_refused():
    manifest = json.loads(MANIFEST.read_text())
    state = {name: torch.empty(entry["shape"], device="meta") for name, entry in manifest.items()}
    missing = dict(state)
    missing.pop("backbone.proj_in.weight")
    with pytest.raises(ModelLoadError, match="published layout .1 missing: backbone.proj_in.weight.") as error:
        model_from_state_dict(missing, device="meta")
    assert "config.yaml" in error.value.message
    misshapen = dict(state, extra=torch.empty(1, device="meta"))
    misshapen["decoder.layers.0.weight"] = torch.empty(64, 121, device="meta")
    with pytest.raises(
        ModelLoadError,
        match=r"1 unexpected: extra; 1 wrong shape: decoder.layers.0.weight \(64, 121\) "
        r"instead of \(64, 120\)",
    ):
        model_from_state_dict(misshapen, device="meta")
    renamed = {name.replace("transformer_blocks", "blocks"): tensor for name, tensor in state.items()}
    with pytest.raises(ModelLoadError, match=r"320 missing: .* and 317 more; 320 unexpected"):
        model_from_state_dict(renamed, device="meta")


def test_random_weights_have_the_published_names_and_default_scale():
    # Shapes come from the meta-built model, checked against the full manifest above; the tiny
    # config keeps this cheap (the full-size draw is 1.7 GB) while the names are the checkpoint's.
    config = load_config(TINY_MODEL / "config.yaml")
    published = load_file(TINY_MODEL / "model.safetensors")
    state = random_state_dict(config, seed=1)
    assert {n: t.shape for n, t in state.items()} == {n: t.shape for n, t in published.items()}
    proj_in = state["backbone.proj_in.weight"]  # (64, 64): default init bound 1/sqrt(64)
    assert proj_in.abs().max() <= 1 / 8 + 1e-6 and proj_in.std() > 1 / 8 / 3
    assert torch.equal(state["backbone.norm.weight"], torch.ones(64))
    assert torch.equal(random_state_dict(config, seed=1)["tokenizer.embeddings"], state["tokenizer.embeddings"])
    assert not torch.equal(random_state_dict(config, seed=2)["tokenizer.embeddings"], state["tokenizer.embeddings"])
    half = random_state_dict(config, seed=1, dtype=torch.float16)
    assert half["decoder.layers.0.weight"].dtype == torch.float16
    assert torch.equal(half["decoder.layers.0.weight"], state["decoder.layers.0.weight"].half())
    model = build_random_model(config, device="cpu")
    assert model(torch.rand(1, 40, 40, 3)).shape == (1, 3, 8, 8, 8)


def test_config_reads_the_published_format():
    config = load_config()  # default_config.yaml: the published text with its ${...} interpolation
    assert config.backbone.in_channels == 1024 and isinstance(config.backbone.in_channels, int)
    assert config.vit.hidden_size == 768 and config.vit.num_hidden_layers == 12  # DINO ViT-B/16 default
    assert config.renderer.density_bias == -1.0 and config.post_processor_out_channels == 40
    tiny = load_config(TINY_MODEL / "config.yaml")
    assert tiny.vit.hidden_size == 48 and tiny.backbone.norm_num_groups == 8 and tiny.cond_image_size == 64


def _tiny_config_with(tmp_path: Path, old: str, new: str) -> Path:
    text = (TINY_MODEL / "config.yaml").read_text()
    assert old in text
    path = tmp_path / "edited.yaml"
    path.write_text(text.replace(old, new))
    return path


def test_config_numbers_are_read_whatever_yaml_makes_of_them(tmp_path):
    # YAML 1.1 reads `1e-6` (no dot) as text; the reader converts it to the field's type.
    path = _tiny_config_with(tmp_path, "layer_norm_eps: 1.0e-12", "layer_norm_eps: 1e-6")
    assert load_config(path).vit.layer_norm_eps == 1e-6
    path = _tiny_config_with(tmp_path, "density_bias: -1.0", "density_bias: -2")
    assert load_config(path).renderer.density_bias == -2.0


def test_config_interpolations_resolve_in_the_published_form(tmp_path):
    path = _tiny_config_with(
        tmp_path, "backbone:\n  in_channels: 64", "backbone:\n  in_channels: ${tokenizer.num_channels}"
    )
    assert load_config(path).backbone.in_channels == 64
    path = _tiny_config_with(
        tmp_path, "backbone:\n  in_channels: 64", "backbone:\n  in_channels: ${tokenizer.channels}"
    )
    with pytest.raises(ModelLoadError, match=r"refers to \$\{tokenizer.channels\}, which it does not define"):
        load_config(path)
    path = _tiny_config_with(
        tmp_path, "backbone:\n  in_channels: 64", "backbone:\n  in_channels: ${backbone.in_channels}"
    )
    with pytest.raises(ModelLoadError, match="refers to itself"):
        load_config(path)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("\ntokenizer:\n", "\ntokenizers:\n", "incomplete: it has no 'tokenizer' entry"),
        ("plane_size: 4", "plane_size: four", "tokenizer.plane_size must be a whole number, not 'four'"),
        ("qkv_bias: true", "qkv_bias: 1", "vit.qkv_bias must be true or false"),
        ("num_layers: 2", "num_layers: 2.5", "backbone.num_layers must be a whole number"),
        (
            "post_processor:\n  in_channels: 64",
            "post_processor:\n  in_channels: 32",
            "must equal tokenizer.num_channels",
        ),
        ("decoder:\n  in_channels: 24", "decoder:\n  in_channels: 16", "decoder.in_channels must be 3 x"),
        ("feature_reduction: concat", "feature_reduction: mean", "feature_reduction 'mean' .only concat"),
        ("density_activation: exp", "density_activation: softplus", "density_activation 'softplus'"),
        ("num_attention_heads: 3", "num_attention_heads: 5", "vit.hidden_size must be a multiple"),
    ],
)
def test_malformed_or_unsupported_config_is_refused(tmp_path, old, new, message):
    with pytest.raises(ModelLoadError, match=message):
        load_config(_tiny_config_with(tmp_path, old, new))


def test_missing_or_unreadable_config_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="No config.yaml"):
        load_config(tmp_path / "config.yaml")
    (tmp_path / "bad.yaml").write_text("tokenizer: [unclosed\n")
    with pytest.raises(ModelLoadError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


@pytest.fixture()
def ckpt_folder(tmp_path):
    folder = tmp_path / "ckpt_model"
    folder.mkdir()
    shutil.copy(TINY_MODEL / "config.yaml", folder / "config.yaml")
    torch.save(load_file(TINY_MODEL / "model.safetensors"), folder / "model.ckpt")
    return folder


def test_ckpt_and_safetensors_folders_load_the_same_model(ckpt_folder):
    from_safetensors = load_model(TINY_MODEL, device="cpu")
    from_ckpt = load_model(ckpt_folder, device="cpu")
    for (name, a), (_, b) in zip(from_safetensors.state_dict().items(), from_ckpt.state_dict().items()):
        assert torch.equal(a, b), name
    assert from_ckpt.revision is None and not from_ckpt.training


def test_legacy_and_wrapped_checkpoints_load(tmp_path, ckpt_folder):
    # torch's pre-zip format cannot be memory-mapped; a Lightning-style file wraps the weights.
    reference = load_model(ckpt_folder, device="cpu").state_dict()
    tensors = load_file(TINY_MODEL / "model.safetensors")
    torch.save(tensors, ckpt_folder / "model.ckpt", _use_new_zipfile_serialization=False)
    legacy = load_model(ckpt_folder, device="cpu").state_dict()
    torch.save({"state_dict": tensors, "epoch": 3}, ckpt_folder / "model.ckpt")
    wrapped = load_model(ckpt_folder, device="cpu").state_dict()
    for name, tensor in reference.items():
        assert torch.equal(legacy[name], tensor) and torch.equal(wrapped[name], tensor), name


def test_checkpoints_that_need_unpickling_are_refused(ckpt_folder):
    torch.save({"weights": load_file(TINY_MODEL / "model.safetensors"), "when": object()}, ckpt_folder / "model.ckpt")
    with pytest.raises(ModelLoadError, match="corrupt or incomplete"):
        load_model(ckpt_folder, device="cpu")
    torch.save({"version": 2}, ckpt_folder / "model.ckpt")
    with pytest.raises(ModelLoadError, match="not a TripoSR checkpoint"):
        load_model(ckpt_folder, device="cpu")


def test_missing_folder_and_files_say_what_to_do(tmp_path):
    with pytest.raises(ModelLoadError, match="neither a model folder nor a hub repository"):
        load_model(tmp_path / "nowhere" / "model" / "dir", device="cpu")
    (tmp_path / "config.yaml").write_text((TINY_MODEL / "config.yaml").read_text())
    with pytest.raises(ModelLoadError, match="no model.safetensors or model.ckpt"):
        load_model(tmp_path, device="cpu")


def test_corrupt_weights_are_refused(tmp_path):
    shutil.copy(TINY_MODEL / "config.yaml", tmp_path / "config.yaml")
    data = (TINY_MODEL / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="corrupt or incomplete"):
        load_model(tmp_path, device="cpu")


def test_wrong_config_is_refused(tmp_path):
    (tmp_path / "config.yaml").write_text(
        (TINY_MODEL / "config.yaml").read_text().replace("n_neurons: 16", "n_neurons: 32")
    )
    shutil.copy(TINY_MODEL / "model.safetensors", tmp_path / "model.safetensors")
    with pytest.raises(ModelLoadError, match="published layout"):
        load_model(tmp_path, device="cpu")


def test_device_choice():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(torch.device("cpu")).type == "cpu"
    for wrong in ("tpu", "cuda0", "CPU", ""):
        with pytest.raises(InvalidOptionError, match="must be cpu or cuda"):
            resolve_device(wrong)
    if not torch.cuda.is_available():
        for name in ("cuda", "cuda:0"):
            with pytest.raises(InvalidOptionError, match="no CUDA GPU"):
                resolve_device(name)
    else:
        assert resolve_device("cuda:0") == torch.device("cuda", 0)
        with pytest.raises(InvalidOptionError, match="only"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def _populate_hub_cache(cache: Path, ckpt_folder: Path, revision: str) -> None:
    """Lay out files the way huggingface_hub caches them, so its real offline path finds them."""
    repo = cache / "models--stabilityai--TripoSR"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    (repo / "blobs").mkdir()
    for name in ("config.yaml", "model.ckpt"):
        data = (ckpt_folder / name).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))


HUB_SCRIPT = """
import json, sys
from remote.errors import ModelLoadError
from remote.triposr.weights import load_model
for expected in json.loads(sys.argv[1]):
    try:
        model = load_model("stabilityai/TripoSR", device="cpu", expected_sha256=expected or None)
        print("LOADED", model.revision)
    except ModelLoadError as error:
        print("ERROR", error.message)
"""


def _load_from_hub_offline(cache: Path, *expected: dict[str, str]) -> list[str]:
    """One load per digest table ({} = the pinned digests), in a process whose hub is offline at `cache`."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent)}
    run = subprocess.run(
        [sys.executable, "-c", HUB_SCRIPT, json.dumps(expected)], env=env, capture_output=True, text=True, timeout=120
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith(("LOADED", "ERROR"))]
    assert len(lines) == len(expected), run.stdout + run.stderr
    return lines


@pytest.mark.slow  # huggingface_hub in a subprocess
def test_hub_download_uses_the_pinned_revision_and_checks_sha256(tmp_path, ckpt_folder):
    cache = tmp_path / "hub"
    _populate_hub_cache(cache, ckpt_folder, TRIPOSR_REVISION)
    digests = {
        name: hashlib.sha256((ckpt_folder / name).read_bytes()).hexdigest() for name in ("config.yaml", "model.ckpt")
    }
    loaded, refused, wrong_ckpt = _load_from_hub_offline(
        cache, digests, {}, {"config.yaml": digests["config.yaml"], "model.ckpt": "0" * 64}
    )
    assert loaded == f"LOADED {TRIPOSR_REVISION}"
    # With the published digests these tiny files are "another version" and must be refused,
    # naming the cached blob (the snapshot entry is only a link to it) as the file to delete.
    assert refused.startswith("ERROR config.yaml has SHA-256 " + digests["config.yaml"])
    assert "expected " + PINNED_SHA256["config.yaml"] in refused and "corrupt or another version" in refused
    assert f"Delete {(cache / 'models--stabilityai--TripoSR' / 'blobs').resolve()}/" in refused
    # A good config.yaml does not let a wrong checkpoint through.
    assert wrong_ckpt.startswith("ERROR model.ckpt has SHA-256 " + digests["model.ckpt"])


@pytest.mark.slow  # huggingface_hub in a subprocess
def test_hub_download_at_another_revision_is_not_used(tmp_path, ckpt_folder):
    cache = tmp_path / "hub"
    _populate_hub_cache(cache, ckpt_folder, "0" * 40)
    (output,) = _load_from_hub_offline(cache, {})
    assert output.startswith(
        "ERROR Could not download config.yaml of stabilityai/TripoSR at revision " + TRIPOSR_REVISION
    )
