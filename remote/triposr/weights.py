"""Load TripoSR weights: from a folder, or from the hub at a pinned revision with SHA-256 checks.

The module is built on the meta device and the checkpoint's tensors are assigned to it with
`strict=True`: no time is spent initialising 420M parameters that are overwritten at once, and any
name or shape that differs from the published checkpoint is refused.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch

from remote.errors import InvalidOptionError, ModelLoadError
from remote.triposr.config import TripoSRConfig, load_config
from remote.triposr.model import TripoSR
from remote.weights_cache import PINNED_FILES, TRIPOSR_REPO, TRIPOSR_REVISION, file_digest

PINNED_SHA256 = {Path(p.name).name: p.digest for p in PINNED_FILES if p.name.startswith("triposr/")}
WEIGHT_FILES = ("model.safetensors", "model.ckpt")


def resolve_device(name: str | torch.device | None) -> torch.device:
    """CUDA when present unless told otherwise; a clear error when CUDA is asked for and missing."""
    if isinstance(name, torch.device):
        return name
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise InvalidOptionError(f"device must be cpu or cuda (got {name!r}).")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidOptionError(
                f"--device {name} was asked for, but PyTorch sees no CUDA GPU here; use --device cpu."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InvalidOptionError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA GPUs here.")
    return device


def load_model(
    source: str | Path = TRIPOSR_REPO,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    *,
    revision: str = TRIPOSR_REVISION,
    expected_sha256: dict[str, str] | None = None,
) -> TripoSR:
    """A ready model in eval mode from a folder (config.yaml + model.safetensors or model.ckpt) or a hub repo."""
    torch_device = resolve_device(device)
    folder = Path(source)
    if folder.is_dir():
        config_path, weights_path, model_revision = folder / "config.yaml", _weights_in(folder), None
    elif _looks_like_repo(str(source)):
        config_path, weights_path = download_pinned(str(source), revision, expected_sha256 or PINNED_SHA256)
        model_revision = revision
    else:
        raise ModelLoadError(
            f"{source} is neither a model folder nor a hub repository; give a folder holding "
            "config.yaml and model.ckpt (or model.safetensors), or stabilityai/TripoSR."
        )
    state = read_state_dict(weights_path, torch_device)
    model = model_from_state_dict(state, load_config(config_path), device=torch_device, dtype=dtype)
    model.revision = model_revision
    return model


def model_from_state_dict(
    state: dict[str, torch.Tensor],
    config: TripoSRConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> TripoSR:
    """Assign a checkpoint's tensors to a TripoSR built on the meta device (strict names and shapes)."""
    with torch.device("meta"):
        model = TripoSR(config or load_config())
    problems = layout_differences(model.state_dict(), state)
    if problems:
        raise ModelLoadError(
            f"The weights do not match TripoSR's published layout ({problems}). Use the weights "
            "together with the config.yaml they were published with (stabilityai/TripoSR)."
        )
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval()


def layout_differences(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], shown: int = 3) -> str:
    """What `strict=True` would refuse, in a few words: missing, unexpected and misshapen tensors."""
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    misshapen = [
        f"{name} {tuple(state[name].shape)} instead of {tuple(tensor.shape)}"
        for name, tensor in expected.items()
        if name in state and state[name].shape != tensor.shape
    ]
    parts = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen)):
        if names:
            more = f" and {len(names) - shown} more" if len(names) > shown else ""
            parts.append(f"{len(names)} {label}: {', '.join(names[:shown])}{more}")
    return "; ".join(parts)


def read_state_dict(path: Path, device: torch.device) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors (straight onto the device) or a .ckpt (weights_only, never plain pickle)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device=str(device))
        state = _torch_load_weights(path)
    except Exception as error:  # corrupt or truncated files raise many different types
        raise ModelLoadError(
            f"Could not read the weights in {path} ({type(error).__name__}); the file is corrupt or "
            "incomplete. Delete it and download it again."
        ) from error
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ModelLoadError(f"{path} does not hold a state dict of tensors; it is not a TripoSR checkpoint.")
    return state


def _torch_load_weights(path: Path) -> Any:
    """`torch.load` with weights_only (never plain unpickling); memory-mapped when the file is in
    torch's zip format, read whole when it is in the legacy format, which cannot be mapped."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as error:
        if "mmap" not in str(error):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def download_pinned(repo: str, revision: str, expected_sha256: dict[str, str]) -> tuple[Path, Path]:
    """config.yaml and model.ckpt from the hub at `revision` (cached by huggingface_hub), checked."""
    from huggingface_hub import hf_hub_download

    paths = []
    for filename in ("config.yaml", "model.ckpt"):
        try:
            path = Path(hf_hub_download(repo_id=repo, filename=filename, revision=revision))
        except Exception as error:  # network, auth and offline-cache misses all land here
            raise ModelLoadError(
                f"Could not download {filename} of {repo} at revision {revision} ({type(error).__name__}: "
                f"{error}). Check the internet connection, or pass --model with a local folder "
                f"(no folder named {repo} exists here)."
            ) from error
        verify_sha256(path, expected_sha256[filename])
        paths.append(path)
    return paths[0], paths[1]


def verify_sha256(path: Path, expected: str) -> None:
    """Streamed SHA-256 of `path` against the pinned value (the checkpoint is 1.7 GB)."""
    actual = file_digest(path, "sha256")
    if actual != expected:
        # In the hub cache `path` is a link into blobs/; the blob is what has to be downloaded again.
        stored = path.resolve()
        raise ModelLoadError(
            f"{path.name} has SHA-256 {actual}, expected {expected}: the file is corrupt or another "
            f"version. Delete {stored}{'' if stored == path else f' and {path}'} and run again to "
            "download it afresh."
        )


def _weights_in(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise ModelLoadError(f"{folder} holds no model.safetensors or model.ckpt; put the TripoSR weights there.")


def _looks_like_repo(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not Path(source).exists()


def random_state_dict(
    config: TripoSRConfig | None = None,
    seed: int = 0,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    decoder_gain: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Full-size random weights under the published names, scaled like PyTorch's default init.

    Drawn on the CPU from `seed`, so one seed gives the same weights on every device. With PyTorch's
    default scale the ten-layer field MLP loses its signal and the density comes out nearly
    constant; `decoder_gain` (e.g. 3) scales the MLP's weights up so the field has structure.
    """
    with torch.device("meta"):
        shapes = {name: tensor.shape for name, tensor in TripoSR(config or load_config()).state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in shapes.items():
        if name.endswith(_NORM_WEIGHTS):
            tensor = torch.ones(shape)
        elif len(shape) >= 2:
            # ConvTranspose2d stores (in, out, k, k); with stride == kernel each output sees `in` inputs.
            fan_in = shape[0] if name.endswith("upsample.weight") else math.prod(shape[1:])
            bound = 1.0 / math.sqrt(fan_in) * (decoder_gain if name.startswith("decoder.") else 1.0)
            tensor = (torch.rand(shape, generator=generator) * 2 - 1) * bound
        else:
            tensor = (torch.rand(shape, generator=generator) * 2 - 1) * 0.02
        state[name] = tensor.to(device=device, dtype=dtype)
    return state


_NORM_WEIGHTS = (
    "norm.weight", "norm1.weight", "norm2.weight", "norm3.weight",
    "layernorm.weight", "layernorm_before.weight", "layernorm_after.weight",
)  # fmt: skip


def build_random_model(
    config: TripoSRConfig | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    decoder_gain: float = 1.0,
) -> TripoSR:
    """A full-size TripoSR with random weights (benchmarks' --random-weights; no download)."""
    config = config or load_config()
    state = random_state_dict(config, seed, device=device, dtype=dtype, decoder_gain=decoder_gain)
    return model_from_state_dict(state, config, device=device, dtype=dtype)
