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
from safetensors.torch import load_file, save_file

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
    ours = {name: list(tensor.shape) for name, tensor in model.state_dict().items()}
    assert ours == {name: entry["shape"] for name, entry in manifest.items()}
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
    with pytest.raises(ModelLoadError, match="published layout"):
        model_from_state_dict(missing, device="meta")
    misshapen = dict(state)
    misshapen["decoder.layers.0.weight"] = torch.empty(64, 121, device="meta")
    with pytest.raises(ModelLoadError, match="published layout"):
        model_from_state_dict(misshapen, device="meta")


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
    model = build_random_model(config, device="cpu")
    assert model(torch.rand(1, 40, 40, 3)).shape == (1, 3, 8, 8, 8)


def test_config_reads_the_published_format():
    config = load_config()  # default_config.yaml: the published text with its ${...} interpolation
    assert config.backbone.in_channels == 1024 and isinstance(config.backbone.in_channels, int)
    assert config.vit.hidden_size == 768 and config.vit.num_hidden_layers == 12  # DINO ViT-B/16 default
    assert config.renderer.density_bias == -1.0 and config.post_processor_out_channels == 40
    tiny = load_config(TINY_MODEL / "config.yaml")
    assert tiny.vit.hidden_size == 48 and tiny.backbone.norm_num_groups == 8 and tiny.cond_image_size == 64


def test_malformed_config_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="No config.yaml"):
        load_config(tmp_path / "config.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text((TINY_MODEL / "config.yaml").read_text().replace("\ntokenizer:\n", "\ntokenizers:\n"))
    with pytest.raises(ModelLoadError, match="incomplete or malformed"):
        load_config(broken)


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
    (tmp_path / "config.yaml").write_text((TINY_MODEL / "config.yaml").read_text().replace("n_neurons: 16", "n_neurons: 32"))
    shutil.copy(TINY_MODEL / "model.safetensors", tmp_path / "model.safetensors")
    with pytest.raises(ModelLoadError, match="published layout"):
        load_model(tmp_path, device="cpu")


def test_device_choice():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InvalidOptionError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidOptionError, match="no CUDA GPU"):
            resolve_device("cuda")


def _populate_hub_cache(cache: Path, ckpt_folder: Path, revision: str) -> None:
    """Lay out files the way huggingface_hub caches them, so its real offline path finds them."""
    repo = cache / "models--stabilityai--TripoSR"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    for name in ("config.yaml", "model.ckpt"):
        shutil.copy(ckpt_folder / name, snapshot / name)


HUB_SCRIPT = """
import json, sys
from remote.errors import ModelLoadError
from remote.triposr.weights import load_model
expected = json.loads(sys.argv[1])
try:
    model = load_model("stabilityai/TripoSR", device="cpu", expected_sha256=expected or None)
    print("LOADED", model.revision)
except ModelLoadError as error:
    print("ERROR", error.message)
"""


def _load_from_hub_offline(cache: Path, expected: dict[str, str]) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent)}
    run = subprocess.run(
        [sys.executable, "-c", HUB_SCRIPT, json.dumps(expected)], env=env, capture_output=True, text=True, timeout=120
    )
    return run.stdout + run.stderr


def test_hub_download_uses_the_pinned_revision_and_checks_sha256(tmp_path, ckpt_folder):
    cache = tmp_path / "hub"
    _populate_hub_cache(cache, ckpt_folder, TRIPOSR_REVISION)
    digests = {name: hashlib.sha256((ckpt_folder / name).read_bytes()).hexdigest() for name in ("config.yaml", "model.ckpt")}
    assert f"LOADED {TRIPOSR_REVISION}" in _load_from_hub_offline(cache, digests)
    # With the published digests these tiny files are "another version" and must be refused.
    refused = _load_from_hub_offline(cache, {})
    assert "ERROR" in refused and "expected " + PINNED_SHA256["config.yaml"] in refused


def test_hub_download_at_another_revision_is_not_used(tmp_path, ckpt_folder):
    cache = tmp_path / "hub"
    _populate_hub_cache(cache, ckpt_folder, "0" * 40)
    output = _load_from_hub_offline(cache, {})
    assert "ERROR Could not download config.yaml of stabilityai/TripoSR at revision " + TRIPOSR_REVISION in output
