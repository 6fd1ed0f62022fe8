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
        config = TripoSRConfig(
            cond_image_size=_coerce(raw["cond_image_size"], int, "cond_image_size"),
            plane_size=_coerce(tokenizer["plane_size"], int, "tokenizer.plane_size"),
            num_channels=_coerce(tokenizer["num_channels"], int, "tokenizer.num_channels"),
            post_processor_out_channels=_coerce(post["out_channels"], int, "post_processor.out_channels"),
            backbone=_pick(BackboneConfig, raw["backbone"], "backbone"),
            decoder=_pick(DecoderConfig, raw["decoder"], "decoder"),
            renderer=_pick(RendererConfig, raw.get("renderer") or {}, "renderer"),
            vit=_pick(ViTConfig, raw.get("vit") or {}, "vit"),
        )
        if _coerce(post["in_channels"], int, "post_processor.in_channels") != config.num_channels:
            raise ValueError("post_processor.in_channels must equal tokenizer.num_channels")
    except KeyError as error:
        raise ModelLoadError(f"The model configuration is incomplete: it has no {error} entry.") from error
    except (TypeError, ValueError) as error:
        raise ModelLoadError(f"The model configuration is malformed: {error}.") from error
    check_supported(config)
    return config


def check_supported(config: TripoSRConfig) -> None:
    """Refuse settings this implementation does not compute (upstream has a few more variants)."""
    problems = []
    if config.backbone.in_channels != config.num_channels:
        problems.append("backbone.in_channels must equal tokenizer.num_channels")
    if config.decoder.in_channels != 3 * config.post_processor_out_channels:
        problems.append("decoder.in_channels must be 3 x post_processor.out_channels (concatenated planes)")
    if config.renderer.feature_reduction != "concat":
        problems.append(f"renderer.feature_reduction {config.renderer.feature_reduction!r} (only concat)")
    if config.renderer.density_activation != "exp":
        problems.append(f"renderer.density_activation {config.renderer.density_activation!r} (only exp)")
    if config.decoder.activation != "silu":
        problems.append(f"decoder.activation {config.decoder.activation!r} (only silu)")
    if config.vit.hidden_act != "gelu":
        problems.append(f"vit.hidden_act {config.vit.hidden_act!r} (only gelu)")
    if config.vit.hidden_size % config.vit.num_attention_heads:
        problems.append("vit.hidden_size must be a multiple of vit.num_attention_heads")
    if problems:
        raise ModelLoadError("The model configuration is not supported: " + "; ".join(problems) + ".")


def resolve_interpolations(raw: dict[str, Any]) -> dict[str, Any]:
    """Replace values of the form `${a.b}` by the value at that dotted path (OmegaConf's syntax)."""

    def lookup(dotted: str, chain: tuple[str, ...]) -> Any:
        if dotted in chain:
            raise ModelLoadError(f"The model configuration's ${{{dotted}}} refers to itself.")
        node: Any = raw
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ModelLoadError(f"The model configuration refers to ${{{dotted}}}, which it does not define.")
            node = node[part]
        return resolve(node, (*chain, dotted))

    def resolve(node: Any, chain: tuple[str, ...] = ()) -> Any:
        if isinstance(node, dict):
            return {key: resolve(value, chain) for key, value in node.items()}
        if isinstance(node, str) and (match := _INTERPOLATION.match(node)):
            return lookup(match.group(1), chain)
        return node

    return resolve(raw)


def _pick(cls: type, values: Any, section: str) -> Any:
    """The dataclass `cls` from the keys it knows, each converted to the field's declared type."""
    if not isinstance(values, dict):
        raise TypeError(f"{section} must be a mapping")
    known = {f.name: f.type for f in fields(cls)}
    chosen = {key: value for key, value in values.items() if key in known}
    return cls(**{key: _coerce(value, _TYPES[str(known[key])], f"{section}.{key}") for key, value in chosen.items()})


# PyYAML follows YAML 1.1, where `1e-12` (no dot) is a string, so numbers are converted explicitly.
_TYPES: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str}


def _coerce(value: Any, kind: type, name: str) -> Any:
    """`value` as `kind`, or a ValueError naming the setting (bools are never taken for numbers)."""
    if kind is bool or kind is str:
        if not isinstance(value, kind):
            raise ValueError(f"{name} must be {'true or false' if kind is bool else 'text'}, not {value!r}")
        return value
    try:
        if isinstance(value, bool) or (kind is int and isinstance(value, float)):
            raise ValueError
        number = kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a {'whole number' if kind is int else 'number'}, not {value!r}") from None
    return number
