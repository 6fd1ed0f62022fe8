"""The image encoder: a ViT (DINO ViT-B/16 in the published model), named like the checkpoint.

Parameter names follow the checkpoint's `image_tokenizer.model.*` (HF ViTModel's layout) so the
published weights load unchanged. Position embeddings are trained for a 14x14 grid and resized
bicubically with scale factors `(grid + 0.1) / 14`, the behaviour the checkpoint was trained with.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from remote.triposr.config import ViTConfig


class PatchEmbeddings(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.projection = nn.Conv2d(3, config.hidden_size, config.patch_size, stride=config.patch_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.projection(pixels.to(self.projection.weight.dtype)).flatten(2).transpose(1, 2)


class ViTEmbeddings(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        trained_grid = config.image_size // config.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.position_embeddings = nn.Parameter(torch.zeros(1, trained_grid**2 + 1, config.hidden_size))
        self.patch_embeddings = PatchEmbeddings(config)
        # The resized grid for the last input size: it depends only on the weights and the size, and
        # the bicubic resize was the largest single kernel of the fast path's pass (docs/performance.md).
        self._resized: tuple[tuple, torch.Tensor] | None = None

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = pixels.shape
        patches = self.patch_embeddings(pixels).to(self.cls_token.dtype)  # the stream's dtype
        tokens = torch.cat([self.cls_token.expand(batch, -1, -1), patches], dim=1)
        return tokens + self.resized_position_embeddings(height, width)

    @torch.compiler.disable  # reads the weights' version: stays Python when the pass is compiled
    def resized_position_embeddings(self, height: int, width: int) -> torch.Tensor:
        """Bicubic resize of the trained grid with scale (grid + 0.1) / trained, as the checkpoint expects.

        Computed once per input size and kept while the weights are unchanged (an in-place change,
        such as `load_state_dict`, bumps the parameter's version and so recomputes it); while
        gradients flow to the embeddings (training), or when they were made in inference mode (which
        keeps no version to notice a change by), it is computed every time."""
        weights = self.position_embeddings
        if (torch.is_grad_enabled() and weights.requires_grad) or weights.is_inference():
            return self._resize_position_embeddings(height, width)
        key = (height, width, weights.data_ptr(), weights._version, weights.dtype, weights.device)
        if self._resized is None or self._resized[0] != key:
            with torch.inference_mode(False), torch.no_grad():  # a plain tensor, usable in and out of inference mode
                self._resized = (key, self._resize_position_embeddings(height, width))
        return self._resized[1]

    def _resize_position_embeddings(self, height: int, width: int) -> torch.Tensor:
        trained = self.position_embeddings.shape[1] - 1
        trained_side = int(math.sqrt(trained))
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        if grid_h * grid_w == trained and height == width:
            return self.position_embeddings
        cls_position = self.position_embeddings[:, :1]
        dim = self.position_embeddings.shape[-1]
        grid = self.position_embeddings[:, 1:].reshape(1, trained_side, trained_side, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(
            grid.float(),
            scale_factor=((grid_h + 0.1) / trained_side, (grid_w + 0.1) / trained_side),
            mode="bicubic",
            align_corners=False,
        ).to(self.position_embeddings.dtype)
        return torch.cat([cls_position, grid.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)


class ViTSelfAttention(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.key = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.value = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden.to(self.query.weight.dtype)  # runs in its weights' dtype (fp16 on the fast path)
        batch, tokens, width = hidden.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, tokens, self.num_heads, -1).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            heads(self.query(hidden)), heads(self.key(hidden)), heads(self.value(hidden))
        )
        return out.transpose(1, 2).reshape(batch, tokens, width)


class ViTSelfOutput(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dense(hidden)


class ViTAttention(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.attention = ViTSelfAttention(config)
        self.output = ViTSelfOutput(config)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.output(self.attention(hidden))


class ViTIntermediate(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        if config.hidden_act != "gelu":
            raise ValueError(f"unsupported ViT activation {config.hidden_act!r}; the checkpoint uses gelu")
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(hidden.to(self.dense.weight.dtype)))


class ViTOutput(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dense(hidden)


class ViTLayer(nn.Module):
    """Pre-norm block: attention then MLP, each added back."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = ViTAttention(config)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.intermediate = ViTIntermediate(config)
        self.output = ViTOutput(config)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # The residual stream keeps its dtype (float32 on the fast path too); see backbone.py.
        hidden = hidden + self.attention(self.layernorm_before(hidden)).to(hidden.dtype)
        return hidden + self.output(self.intermediate(self.layernorm_after(hidden))).to(hidden.dtype)


class ViTEncoder(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList([ViTLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            hidden = layer(hidden)
        return hidden


class ViTPooler(nn.Module):
    """Present only so the checkpoint's pooler weights load; TripoSR does not use its output."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)


class ViTModel(nn.Module):
    """Pixels (B, 3, H, W), already normalised -> all tokens after the final LayerNorm (B, 1 + N, C)."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.embeddings = ViTEmbeddings(config)
        self.encoder = ViTEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = ViTPooler(config)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.layernorm(self.encoder(self.embeddings(pixels)))
