"""TripoSR: one image -> a triplane scene code -> density and colour anywhere in the unit cube.

Built from a TripoSRConfig; parameter names are the published checkpoint's, so `load_state_dict`
with `strict=True` accepts `stabilityai/TripoSR` unchanged. The computation follows
`docs/triposr-facts.md` ("The computation, in order").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from remote.triposr.backbone import Transformer1D
from remote.triposr.config import DecoderConfig, TripoSRConfig
from remote.triposr.vit import ViTModel

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageTokenizer(nn.Module):
    """Normalised pixels -> all ViT tokens (CLS included), `image_tokenizer.model.*` in the checkpoint."""

    def __init__(self, config: TripoSRConfig) -> None:
        super().__init__()
        self.model = ViTModel(config.vit)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(IMAGENET_MEAN, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
        dtype = self.model.embeddings.cls_token.dtype
        return self.model(((pixels - mean) / std).to(dtype))


class TriplaneTokenizer(nn.Module):
    """The learned triplane (3, C, P, P), flattened to 3*P*P tokens in plane-row-column order."""

    def __init__(self, config: TripoSRConfig) -> None:
        super().__init__()
        size = config.plane_size
        self.embeddings = nn.Parameter(torch.zeros(3, config.num_channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        planes, channels = self.embeddings.shape[:2]
        tokens = self.embeddings.permute(1, 0, 2, 3).reshape(channels, -1)
        return tokens.unsqueeze(0).expand(batch, -1, -1)

    def detokenize(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, channels, _ = tokens.shape
        size = self.embeddings.shape[-1]
        return tokens.view(batch, channels, 3, size, size).permute(0, 2, 1, 3, 4)


class TriplaneUpsampler(nn.Module):
    """A 2x2 stride-2 transposed convolution applied to each plane."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        batch, count = planes.shape[:2]
        upsampled = self.upsample(planes.flatten(0, 1))
        return upsampled.view(batch, count, *upsampled.shape[1:])


class FieldDecoder(nn.Module):
    """The NeRF MLP: Linear layers with SiLU between (odd indices hold the activations)."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        if config.activation != "silu":
            raise ValueError(f"unsupported decoder activation {config.activation!r}; the checkpoint uses silu")
        widths = [config.in_channels] + [config.n_neurons] * config.n_hidden_layers + [4]
        layers: list[nn.Module] = []
        for index, (width_in, width_out) in enumerate(zip(widths[:-1], widths[1:])):
            if index:
                layers.append(nn.SiLU())
            layers.append(nn.Linear(width_in, width_out))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class TripoSR(nn.Module):
    def __init__(self, config: TripoSRConfig) -> None:
        super().__init__()
        self.config = config
        self.revision: str | None = None
        self.image_tokenizer = ImageTokenizer(config)
        self.tokenizer = TriplaneTokenizer(config)
        self.backbone = Transformer1D(config.backbone)
        self.post_processor = TriplaneUpsampler(config.num_channels, config.post_processor_out_channels)
        self.decoder = FieldDecoder(config.decoder)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) in 0..1 -> (B, 3, S, S) at the conditioning size, as the model was trained."""
        size = self.config.cond_image_size
        pixels = images.permute(0, 3, 1, 2).float()
        return F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, H, W, 3) float in 0..1 -> scene codes (B, 3, C, R, R)."""
        if images.dim() != 4 or images.shape[-1] != 3 or not images.is_floating_point():
            raise ValueError(
                f"TripoSR takes float images shaped (B, H, W, 3) in 0..1, got {images.dtype} {tuple(images.shape)}"
            )
        pixels = self.preprocess(images)
        dtype = self.tokenizer.embeddings.dtype
        image_tokens = self.image_tokenizer(pixels).to(dtype)
        tokens = self.backbone(self.tokenizer(images.shape[0]), image_tokens)
        planes = self.tokenizer.detokenize(tokens).to(self.post_processor.upsample.weight.dtype)
        return self.post_processor(planes)

    def use_fast_precision(
        self, transformer_dtype: torch.dtype = torch.bfloat16, decoder_dtype: torch.dtype = torch.float16
    ) -> "TripoSR":
        """The GPU fast path: encoder and transformer in bf16 (wide range), the scene code and the
        field MLP in fp16 (finer steps where the density is compared with the threshold); the final
        exp/sigmoid stay float32. fp16 planes halve what grid sampling writes, the largest memory
        traffic of mesh extraction (91 -> 69 ms for a 256^3 grid on an H100); the sampling position
        then carries fp16's rounding, under 0.01 triplane pixel."""
        for part in (self.image_tokenizer, self.tokenizer, self.backbone):
            part.to(transformer_dtype)
        self.post_processor.to(decoder_dtype)
        self.decoder.to(decoder_dtype)
        return self

    def query_field(self, scene_code: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Points (N, 3) in model space -> density (N,) after exp, colour (N, 3) sRGB in 0..1 (float32).

        `scene_code` is one item of `forward`'s output, (3, C, R, R); points outside the cube of
        side 2 * radius see zero features (grid_sample's zero padding), as upstream.
        """
        if scene_code.dim() != 4 or scene_code.shape[0] != 3 or points.dim() != 2 or points.shape[1] != 3:
            raise ValueError(
                f"query_field takes one scene code (3, C, R, R) and points (N, 3), got "
                f"{tuple(scene_code.shape)} and {tuple(points.shape)}"
            )
        radius = self.config.renderer.radius
        coords = (points / radius).to(scene_code.dtype)
        # plane 0 samples (x, y), plane 1 (x, z), plane 2 (y, z); grid_sample's first coordinate is width.
        grids = torch.stack((coords[:, [0, 1]], coords[:, [0, 2]], coords[:, [1, 2]]))[:, None]
        sampled = F.grid_sample(scene_code, grids, mode="bilinear", padding_mode="zeros", align_corners=False)
        # (3, C, 1, N) is already (3C, N) in upstream's feature order (plane-major); the MLP reads
        # its transpose as is, with no copy of the largest tensor of the query.
        features = sampled.view(-1, points.shape[0]).t()
        decoder_dtype = next(self.decoder.parameters()).dtype
        out = self.decoder(features.to(decoder_dtype)).float()
        density = torch.exp(out[:, 0] + self.config.renderer.density_bias)
        return density, torch.sigmoid(out[:, 1:4])

    def field(self, scene_code: torch.Tensor) -> "SceneField":
        return SceneField(self, scene_code)


class SceneField:
    """One scene code, seen as the Field that mesh extraction queries."""

    def __init__(self, model: TripoSR, scene_code: torch.Tensor) -> None:
        self.model = model
        self.scene_code = scene_code
        self.device = scene_code.device

    def query(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.query_field(self.scene_code, points)

    def density(self, points: torch.Tensor) -> torch.Tensor:
        return self.query(points)[0]

    def color(self, points: torch.Tensor) -> torch.Tensor:
        return self.query(points)[1]
