"""The triplane transformer: 1-D over the triplane tokens, cross-attending to the image tokens.

Names follow the checkpoint's `backbone.*` (a diffusers-style Transformer1D): GroupNorm + proj_in,
pre-norm blocks of self-attention, cross-attention and a GEGLU feed-forward, proj_out, and the
input added back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from remote.triposr.config import BackboneConfig


class Attention(nn.Module):
    """Multi-head attention; no bias on q/k/v, bias on the output projection (`to_out.0`)."""

    def __init__(self, query_dim: int, heads: int, head_dim: int, context_dim: int | None = None) -> None:
        super().__init__()
        inner = heads * head_dim
        context_dim = context_dim or query_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim)])

    def forward(self, hidden: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        dtype = self.to_q.weight.dtype  # runs in its weights' dtype (fp16 on the fast path)
        hidden = hidden.to(dtype)
        context = hidden if context is None else context.to(dtype)
        batch = hidden.shape[0]

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, x.shape[1], self.heads, -1).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            heads(self.to_q(hidden)), heads(self.to_k(context)), heads(self.to_v(context))
        )
        return self.to_out[0](out.transpose(1, 2).reshape(batch, hidden.shape[1], -1))


class GEGLU(nn.Module):
    """One projection split into value and gate halves: value * gelu(gate)."""

    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(hidden).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        # Index 1 is a dropout upstream (no weights), kept as Identity so `net.2` matches the checkpoint.
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim)])

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        geglu = self.net[0]
        assert isinstance(geglu, GEGLU)
        hidden = hidden.to(geglu.proj.weight.dtype)  # runs in its weights' dtype
        for module in self.net:
            hidden = module(hidden)
        return hidden


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn1 = Attention(dim, heads, head_dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.attn2 = Attention(dim, heads, head_dim, context_dim=context_dim)
        self.norm3 = nn.LayerNorm(dim, eps=1e-5)
        self.ff = FeedForward(dim)

    def forward(self, hidden: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        # The residual stream keeps its own dtype (float32 on the fast path too), so reduced
        # precision rounds what goes into the matrix products, not the sum carried through 16 blocks.
        hidden = hidden + self.attn1(self.norm1(hidden)).to(hidden.dtype)
        hidden = hidden + self.attn2(self.norm2(hidden), context).to(hidden.dtype)
        return hidden + self.ff(self.norm3(hidden)).to(hidden.dtype)


class Transformer1D(nn.Module):
    """Tokens (B, C, N) and image tokens (B, M, C_img) -> tokens (B, C, N)."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        inner = config.num_attention_heads * config.attention_head_dim
        self.norm = nn.GroupNorm(config.norm_num_groups, config.in_channels, eps=1e-6)
        self.proj_in = nn.Linear(config.in_channels, inner)
        self.transformer_blocks = nn.ModuleList(
            [
                TransformerBlock(
                    inner, config.num_attention_heads, config.attention_head_dim, config.cross_attention_dim
                )
                for _ in range(config.num_layers)
            ]
        )
        self.proj_out = nn.Linear(inner, config.in_channels)

    def forward(self, tokens: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The stream stays in the tokens' dtype; each Linear runs in its weights' dtype."""
        normed = self.norm(tokens).transpose(1, 2)
        hidden = self.proj_in(normed.to(self.proj_in.weight.dtype)).to(tokens.dtype)
        for block in self.transformer_blocks:
            hidden = block(hidden, context)
        out = self.proj_out(hidden.to(self.proj_out.weight.dtype)).to(tokens.dtype)
        return out.transpose(1, 2) + tokens
