"""TripoSR: one image -> a triplane scene code -> density and colour anywhere in the unit cube.

Built from a TripoSRConfig; parameter names are the published checkpoint's, so `load_state_dict`
with `strict=True` accepts `stabilityai/TripoSR` unchanged. The computation follows
`docs/triposr-facts.md` ("The computation, in order").
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from remote.triposr import fused_field
from remote.triposr.backbone import Transformer1D
from remote.triposr.config import DecoderConfig, TripoSRConfig
from remote.triposr.vit import ViTModel

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Max relative density, fused kernel against float32, for the kernel's check to pass: several times
# what a correct kernel gives (docs/performance.md), far below what a miscompiled one does.
FUSED_FIELD_TOLERANCE = 0.05


def reduce_matmul_precision(module: nn.Module, dtype: torch.dtype, keep: Iterable[nn.Module] = ()) -> nn.Module:
    """Cast the Linear and Conv2d layers of `module` to `dtype`, in place, except those inside
    `keep`; norms and embeddings keep theirs. The blocks run each layer in its weights' dtype and
    add back in the stream's (vit.py, backbone.py), so this gives reduced-precision matrix products
    on a float32 residual stream."""
    kept = {id(layer) for part in keep for layer in part.modules()}
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)) and id(layer) not in kept:
            layer.to(dtype)
    return module


# PyTorch's two TF32 switches (cuDNN convolutions, matrix products) for each of remote/precision.py's
# TF32_MODES: "off" is the product's, the others are experiments ("convolutions" is PyTorch's default).
TF32_FLAGS = {"off": (False, False), "convolutions": (True, False), "on": (True, True)}


@contextmanager
def float32_products(tf32: str = "off") -> Iterator[None]:
    """PyTorch's TF32 switches set for `tf32` while the block runs, the caller's restored after.

    "off": float32 products really in float32. PyTorch's default lets cuDNN run float32
    convolutions (the patch embedding, the post-processor) in TF32, whose 10-bit inputs move the
    surface measurably (docs/performance.md, "TF32 off inside the model pass")."""
    if tf32 not in TF32_FLAGS:
        raise ValueError(f"tf32 must be one of {', '.join(TF32_FLAGS)} (got {tf32!r})")
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = TF32_FLAGS[tf32]
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


class ImageTokenizer(nn.Module):
    """Normalised pixels -> all ViT tokens (CLS included), `image_tokenizer.model.*` in the checkpoint."""

    def __init__(self, config: TripoSRConfig) -> None:
        super().__init__()
        self.model = ViTModel(config.vit)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # Scalars, not a tensor made per call: a CPU-to-GPU copy would keep the pass out of a CUDA graph.
        channels = [(pixels[:, c] - mean) / std for c, (mean, std) in enumerate(zip(IMAGENET_MEAN, IMAGENET_STD))]
        dtype = self.model.embeddings.cls_token.dtype
        return self.model(torch.stack(channels, dim=1).to(dtype))


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

    def forward(self, images: torch.Tensor, *, tf32: str = "off") -> torch.Tensor:
        """Images (B, H, W, 3) float in 0..1 -> scene codes (B, 3, C, R, R). `tf32`: whether the
        pass's float32 products may use TF32 (`float32_products`; a precision policy's `tf32`)."""
        if images.dim() != 4 or images.shape[-1] != 3 or not images.is_floating_point():
            raise ValueError(
                f"TripoSR takes float images shaped (B, H, W, 3) in 0..1, got {images.dtype} {tuple(images.shape)}"
            )
        return self.encode(self.preprocess(images), tf32=tf32)

    def forward_wide_range(
        self, images: torch.Tensor, float32_layers: Iterable[str] = (), *, tf32: str = "off"
    ) -> torch.Tensor:
        """`forward` with bf16 copies of the encoder's and transformer's matrix weights (except the
        modules named in `float32_layers`, kept float32), for the rare input whose activations
        overflow fp16 (bf16 has float32's range). The copies are temporary (about 0.8 GB at full size)."""
        parts = {"image_tokenizer": self.image_tokenizer, "backbone": self.backbone}
        copied = copy.deepcopy(nn.ModuleList(parts.values()))
        copies = dict(zip(parts, copied))
        keep = []
        for name in float32_layers:
            top, _, rest = name.partition(".")
            if top in copies:
                keep.append(copies[top].get_submodule(rest))
        reduce_matmul_precision(copied, torch.bfloat16, keep=keep)
        pixels = self.preprocess(images)
        return self._encode(pixels, copies["image_tokenizer"], self.tokenizer, copies["backbone"], tf32)

    def encode(self, pixels: torch.Tensor, *, tf32: str = "off") -> torch.Tensor:
        """Pixels (B, 3, S, S) at the conditioning size -> scene codes (B, 3, C, R, R): fixed shapes,
        so the CUDA path can replay it as one graph (cuda_graph.py)."""
        return self._encode(pixels, self.image_tokenizer, self.tokenizer, self.backbone, tf32)

    def _encode(
        self,
        pixels: torch.Tensor,
        image_tokenizer: nn.Module,
        tokenizer: TriplaneTokenizer,
        backbone: nn.Module,
        tf32: str = "off",
    ) -> torch.Tensor:
        dtype = tokenizer.embeddings.dtype
        with float32_products(tf32):
            image_tokens = image_tokenizer(pixels).to(dtype)
            tokens = backbone(tokenizer(pixels.shape[0]), image_tokens)
            planes = tokenizer.detokenize(tokens).to(self.post_processor.upsample.weight.dtype)
            return self.post_processor(planes)

    def query_field(
        self, scene_code: torch.Tensor, points: torch.Tensor, decoder: nn.Module | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
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
        decoder = decoder or self.decoder
        decoder_dtype = next(decoder.parameters()).dtype
        with float32_products():
            return self.activate(decoder(features.to(decoder_dtype)))

    def activate(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The MLP's raw (N, 4) outputs -> density after exp, colour after sigmoid (float32)."""
        out = out.float()
        density = torch.exp(out[:, 0] + self.config.renderer.density_bias)
        return density, torch.sigmoid(out[:, 1:4])

    def field(self, scene_code: torch.Tensor, fused: "FusedField | None" = None) -> "SceneField":
        """One scene code as the Field that mesh extraction queries; through `fused`'s kernel where
        it can run (remote/precision.py's `fused_field`), PyTorch ops otherwise."""
        return SceneField(self, scene_code, fused)


def _relative_error(values: torch.Tensor, expected: torch.Tensor) -> float:
    """Max relative difference (NaN anywhere gives NaN, which fails every comparison)."""
    return float(((values - expected).abs() / expected.abs().clamp_min(1e-6)).max())


class FusedField:
    """The fused Triton field kernel for one model (fused_field.py): the decoder packed once per
    device and dtype, and whether the kernel passed its check. The pipeline holds one when its
    precision policy asks for the kernel; the model itself carries no such state.

    The check runs once, on the first scene: the kernel must agree with float32 math on the same
    weights and planes (PyTorch ops) within the tolerance, or at least as well as the PyTorch query
    in the model's dtypes does, or it is switched off for good: a compiler that miscompiles the
    kernel on some GPU must not change the mesh. (Against float32 because the fp16 PyTorch query
    is itself further from it than the kernel.)"""

    def __init__(self, model: TripoSR, tolerance: float = FUSED_FIELD_TOLERANCE) -> None:
        self.model = model
        self.tolerance = tolerance  # max relative density against float32 for the check to pass
        self.enabled = fused_field.available()
        self.checked = False
        self.error = math.nan  # the check's max relative density against float32: the kernel's
        self.reference_error = math.nan  # and the PyTorch query's, in the model's dtypes
        self._mlp: tuple[tuple[torch.device, torch.dtype], fused_field.FusedFieldMLP] | None = None

    def mlp(self) -> fused_field.FusedFieldMLP:
        """The decoder packed for the fused kernel, made once per device and dtype."""
        linears = [layer for layer in self.model.decoder.layers if isinstance(layer, nn.Linear)]
        key = (linears[0].weight.device, linears[0].weight.dtype)
        if self._mlp is None or self._mlp[0] != key:
            self._mlp = (key, fused_field.FusedFieldMLP(linears))
        return self._mlp[1]

    def runs_on(self, scene_code: torch.Tensor) -> bool:
        return self.enabled and (scene_code.is_cuda or fused_field.interpreted())


class SceneField:
    """One scene code, seen as the Field that mesh extraction queries.

    Given a FusedField that can run here, queries go through the fused Triton kernel
    (fused_field.py), which gives query_field's numbers without its memory traffic.
    """

    def __init__(self, model: TripoSR, scene_code: torch.Tensor, fused: FusedField | None = None) -> None:
        self.model = model
        self.scene_code = scene_code
        self.device = scene_code.device
        self.radius = model.config.renderer.radius
        self.fused: tuple[fused_field.FusedFieldMLP, torch.Tensor] | None = None
        if fused is not None and fused.runs_on(scene_code):
            mlp = fused.mlp()
            with float32_products():
                self.fused = (mlp, fused_field.project_planes(scene_code, mlp.first_weight))
            if not fused.checked:
                self._check_fused(fused)

    def _check_fused(self, kernel: FusedField) -> None:
        """FusedField's check, on this scene: switches the kernel off if it fails, or if it is further
        from float32 than both the tolerance and the PyTorch query it replaces (in the model's own
        dtypes). A correct kernel is as close as that query or closer; reduced precision on a scene
        with large weights can still take both past the tolerance, and that is not the kernel's
        fault. A miscompiled one is far off both."""
        points = (torch.rand(4096, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1) * self.radius
        points = points.to(self.device)
        float32_decoder = copy.deepcopy(self.model.decoder).float()
        expected, _ = self.model.query_field(self.scene_code.float(), points, decoder=float32_decoder)
        pytorch, _ = self.model.query_field(self.scene_code, points)
        kernel.checked = True
        kernel.reference_error = _relative_error(pytorch, expected)
        try:
            fused, _ = self.query(points)
            kernel.error = _relative_error(fused, expected)
        except Exception as exc:  # noqa: BLE001 - e.g. Triton cannot compile here (no C compiler)
            logger.warning("the fused field kernel does not run here (%s); using PyTorch ops", exc)
            kernel.error = math.inf
        else:
            if not kernel.error < max(kernel.tolerance, kernel.reference_error):  # also catches NaN
                logger.warning(
                    "the fused field kernel disagrees with float32 (%.3g, PyTorch's query %.3g); using PyTorch ops",
                    kernel.error,
                    kernel.reference_error,
                )
        if not kernel.error < max(kernel.tolerance, kernel.reference_error):
            kernel.enabled = False
            self.fused = None

    def query(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fused is None:
            return self.model.query_field(self.scene_code, points)
        mlp, projected = self.fused
        return self.model.activate(mlp(projected, points, self.model.config.renderer.radius))

    def density(self, points: torch.Tensor) -> torch.Tensor:
        return self.query(points)[0]

    def color(self, points: torch.Tensor) -> torch.Tensor:
        return self.query(points)[1]
