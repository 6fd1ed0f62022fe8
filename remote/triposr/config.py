"""TripoSR's configuration, read from the published `config.yaml` format with plain PyYAML.

The published file names upstream classes (`*_cls`) we do not use, and holds one OmegaConf
interpolation (`${tokenizer.num_channels}`), which is resolved here. The image encoder's size is not
in the published file (upstream fetches `facebook/dino-vitb16`'s config from the hub); an optional
`vit:` block gives it, and without one it is DINO ViT-B/16.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships no stubs; types-PyYAML is not a dependency

from remote.errors import ModelLoadError

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default_config.yaml")
_INTERPOLATION = re.compile(r"^\$\{([A-Za-z0-9_.]+)\}$")


@dataclass(frozen=True)
class ViTConfig:
    """The image encoder (a HF-style ViT); defaults are DINO ViT-B/16."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    image_size: int = 224
    patch_size: int = 16
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"


@dataclass(frozen=True)
class BackboneConfig:
    in_channels: int = 1024
    num_attention_heads: int = 16
    attention_head_dim: int = 64
    num_layers: int = 16
    cross_attention_dim: int = 768
    norm_num_groups: int = 32


@dataclass(frozen=True)
class DecoderConfig:
    in_channels: int = 120
    n_neurons: int = 64
    n_hidden_layers: int = 9
    activation: str = "silu"


@dataclass(frozen=True)
class RendererConfig:
    radius: float = 0.87
    feature_reduction: str = "concat"
    density_activation: str = "exp"
    density_bias: float = -1.0
    num_samples_per_ray: int = 128


@dataclass(frozen=True)
class TripoSRConfig:
    cond_image_size: int = 512
    plane_size: int = 32
    num_channels: int = 1024
    post_processor_out_channels: int = 40
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    renderer: RendererConfig = field(default_factory=RendererConfig)
    vit: ViTConfig = field(default_factory=ViTConfig)


def load_config(path: str | Path = DEFAULT_CONFIG_PATH) -> TripoSRConfig:
    """Read a published-format config.yaml into a TripoSRConfig."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as error:
        raise ModelLoadError(f"No config.yaml at {path}; the model folder needs config.yaml and weights.") from error
    except yaml.YAMLError as error:
        raise ModelLoadError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{path} does not hold a TripoSR configuration.")
    return config_from_dict(resolve_interpolations(raw))


def config_from_dict(raw: dict[str, Any]) -> TripoSRConfig:
    """Build the dataclasses from the published layout; unknown keys (`*_cls`, ...) are ignored."""
    try:
        tokenizer = raw["tokenizer"]
        post = raw["post_processor"]
        if tokenizer["num_channels"] != post["in_channels"]:
            raise ModelLoadError("tokenizer.num_channels must equal post_processor.in_channels.")
        return TripoSRConfig(
            cond_image_size=int(raw["cond_image_size"]),
            plane_size=int(tokenizer["plane_size"]),
            num_channels=int(tokenizer["num_channels"]),
            post_processor_out_channels=int(post["out_channels"]),
            backbone=_pick(BackboneConfig, raw["backbone"]),
            decoder=_pick(DecoderConfig, raw["decoder"]),
            renderer=_pick(RendererConfig, raw.get("renderer", {})),
            vit=_pick(ViTConfig, raw.get("vit") or {}),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ModelLoadError(f"The model configuration is incomplete or malformed ({error!r}).") from error


def resolve_interpolations(raw: dict[str, Any]) -> dict[str, Any]:
    """Replace values of the form `${a.b}` by the value at that dotted path (OmegaConf's syntax)."""

    def lookup(dotted: str) -> Any:
        node: Any = raw
        for part in dotted.split("."):
            node = node[part]
        return resolve(node)

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, str) and (match := _INTERPOLATION.match(node)):
            return lookup(match.group(1))
        return node

    return resolve(raw)


def _pick(cls: type, values: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{key: value for key, value in values.items() if key in names})
