"""The field query as one Triton kernel: triplane sampling and the whole MLP per block of points.

Why: queried with PyTorch ops, every point's 120 sampled features and every hidden layer's 64
activations go to GPU memory and back (about 5 KB a point; 16.7M points for a 256^3 grid), which
is what the dense query spends its time on. Here a block of points stays in registers from the
plane lookup to the four outputs.

Two facts make that simple:

- The first Linear layer is linear and so is bilinear sampling, so sampling the planes and then
  applying the layer equals sampling planes that were multiplied by the layer's weights first.
  `project_planes` does that once per scene code (3 x R x R texels instead of every point), and the
  kernel samples 64-channel projected planes and adds the bias.
- Sampling follows `F.grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)`:
  texel coordinate `((u + 1) * R - 1) / 2`, four neighbours, texels outside the plane count as 0.

Hidden activations are rounded to the weights' dtype (fp16 on the fast path) for each matrix
product and accumulated in float32; everything else stays float32, so it is both faster and closer
to float32 than the PyTorch query with the same weights (figures: docs/performance.md, "Figures
behind the code").

Only the fast path on CUDA uses it, after SceneField has checked it once against float32 math;
`TRITON_INTERPRET=1` runs it on the CPU (the tests do, against `query_field`).
"""

from __future__ import annotations

import torch

from remote import environment

try:
    import triton  # type: ignore[import-untyped]  # Triton ships no type information (no py.typed)
    import triton.language as tl  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - torch's CUDA wheels bring triton; others may not
    triton = None

OUT_PAD = 16  # the last layer's 4 outputs, padded to tl.dot's smallest width
# 32 points a program: larger blocks were faster on some GPUs but faulted (illegal memory access) or
# returned NaN on others with the same Triton (docs/performance.md, "Figures behind the code"). A
# fault takes the server's CUDA context with it, which the self-check cannot catch, so 32 stays.
BLOCK_POINTS = 32
NUM_WARPS = 4


def available() -> bool:
    return triton is not None


def interpreted() -> bool:
    """True under TRITON_INTERPRET=1, where the kernel runs on CPU tensors (slowly): for tests."""
    return available() and environment.is_on(environment.TRITON_INTERPRET)


def project_planes(scene_code: torch.Tensor, first_weight: torch.Tensor) -> torch.Tensor:
    """(3, C, R, R) planes and the first layer's (W, 3C) weight -> (3, R, R, W) float32 planes
    whose bilinear samples are that layer's output before its bias."""
    planes, channels = scene_code.shape[0], scene_code.shape[1]
    with torch.no_grad():  # a query, never trained: no autograd graph over the weights
        weight = first_weight.float().view(-1, planes, channels)  # (W, plane, C): features are plane-major
        return torch.einsum("wpc,pchx->phxw", weight, scene_code.float()).contiguous()


class FusedFieldMLP:
    """The decoder's weights packed for the kernel (hidden layers transposed to (in, out))."""

    def __init__(self, layers: list[torch.nn.Linear]) -> None:
        if len(layers) < 2:
            raise ValueError("the fused field needs at least an input and an output layer")
        first, hidden, last = layers[0], layers[1:-1], layers[-1]
        width = first.out_features
        if width < 16 or width & (width - 1) or last.out_features > OUT_PAD:
            raise ValueError(f"the fused field needs a power-of-two width >= 16 (got {width})")
        dtype = last.weight.dtype
        self.first_weight = first.weight
        self.width = width
        self.bias0 = first.bias.float().contiguous()
        if hidden:
            self.hidden_weights = torch.stack([layer.weight.t() for layer in hidden]).to(dtype).contiguous()
            self.hidden_biases = torch.stack([layer.bias for layer in hidden]).float().contiguous()
        else:  # never read: the kernel's loop runs zero times
            self.hidden_weights = torch.zeros((1, width, width), dtype=dtype, device=first.weight.device)
            self.hidden_biases = torch.zeros((1, width), device=first.weight.device)
        self.hidden_count = len(hidden)
        self.out_weight = torch.zeros((width, OUT_PAD), dtype=dtype, device=first.weight.device)
        self.out_weight[:, : last.out_features] = last.weight.t()
        self.out_bias = torch.zeros(OUT_PAD, device=first.weight.device)
        self.out_bias[: last.out_features] = last.bias.float()
        self.out_features = last.out_features

    def __call__(self, projected: torch.Tensor, points: torch.Tensor, radius: float) -> torch.Tensor:
        """Points (N, 3) in model space -> the MLP's raw outputs (N, out_features), float32."""
        count = points.shape[0]
        out = torch.empty((count, self.out_features), dtype=torch.float32, device=points.device)
        if count == 0:
            return out
        grid = (triton.cdiv(count, BLOCK_POINTS),)
        _field_kernel[grid](
            points.float().contiguous(), count, 1.0 / radius, projected,
            self.bias0, self.hidden_weights, self.hidden_biases, self.out_weight, self.out_bias, out,
            RESOLUTION=projected.shape[1], WIDTH=self.width, HIDDEN=self.hidden_count,
            OUT=self.out_features, OUT_PAD=OUT_PAD, BLOCK=BLOCK_POINTS, num_warps=NUM_WARPS,
        )  # fmt: skip
        return out


if triton is not None:

    @triton.jit
    def _texel(plane, xi, yi, weight, valid, cols, RESOLUTION: tl.constexpr, WIDTH: tl.constexpr):
        """One neighbour's W channels times its bilinear weight; 0 outside the plane."""
        inside = valid & (xi >= 0) & (xi < RESOLUTION) & (yi >= 0) & (yi < RESOLUTION)
        offsets = (yi * RESOLUTION + xi)[:, None] * WIDTH + cols[None, :]
        return tl.load(plane + offsets, mask=inside[:, None], other=0.0) * weight[:, None]

    @triton.jit
    def _sample_plane(plane, u, v, valid, cols, RESOLUTION: tl.constexpr, WIDTH: tl.constexpr):
        """Bilinear sample of one (R, R, W) plane at normalised (u: width, v: height), zero outside."""
        x = ((u + 1.0) * RESOLUTION - 1.0) * 0.5
        y = ((v + 1.0) * RESOLUTION - 1.0) * 0.5
        x0f = tl.floor(x)
        y0f = tl.floor(y)
        wx = x - x0f
        wy = y - y0f
        x0 = x0f.to(tl.int32)
        y0 = y0f.to(tl.int32)
        total = _texel(plane, x0, y0, (1.0 - wx) * (1.0 - wy), valid, cols, RESOLUTION, WIDTH)
        total += _texel(plane, x0 + 1, y0, wx * (1.0 - wy), valid, cols, RESOLUTION, WIDTH)
        total += _texel(plane, x0, y0 + 1, (1.0 - wx) * wy, valid, cols, RESOLUTION, WIDTH)
        total += _texel(plane, x0 + 1, y0 + 1, wx * wy, valid, cols, RESOLUTION, WIDTH)
        return total

    @triton.jit
    def _field_kernel(
        points, count, inv_radius, planes,
        bias0, hidden_weights, hidden_biases, out_weight, out_bias, out,
        RESOLUTION: tl.constexpr, WIDTH: tl.constexpr, HIDDEN: tl.constexpr,
        OUT: tl.constexpr, OUT_PAD: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        valid = rows < count
        px = tl.load(points + rows * 3, mask=valid, other=0.0) * inv_radius
        py = tl.load(points + rows * 3 + 1, mask=valid, other=0.0) * inv_radius
        pz = tl.load(points + rows * 3 + 2, mask=valid, other=0.0) * inv_radius
        cols = tl.arange(0, WIDTH)
        plane_size = RESOLUTION * RESOLUTION * WIDTH
        # plane 0 samples (x, y), plane 1 (x, z), plane 2 (y, z); the first coordinate is the width.
        h = _sample_plane(planes, px, py, valid, cols, RESOLUTION, WIDTH)
        h += _sample_plane(planes + plane_size, px, pz, valid, cols, RESOLUTION, WIDTH)
        h += _sample_plane(planes + 2 * plane_size, py, pz, valid, cols, RESOLUTION, WIDTH)
        h += tl.load(bias0 + cols)[None, :]
        square = cols[:, None] * WIDTH + cols[None, :]
        for layer in tl.static_range(HIDDEN):
            weight = tl.load(hidden_weights + layer * WIDTH * WIDTH + square)
            activated = (h * tl.sigmoid(h)).to(weight.dtype)
            h = tl.dot(activated, weight) + tl.load(hidden_biases + layer * WIDTH + cols)[None, :]
        out_cols = tl.arange(0, OUT_PAD)
        weight = tl.load(out_weight + cols[:, None] * OUT_PAD + out_cols[None, :])
        activated = (h * tl.sigmoid(h)).to(weight.dtype)
        result = tl.dot(activated, weight) + tl.load(out_bias + out_cols)[None, :]
        keep = valid[:, None] & (out_cols[None, :] < OUT)
        tl.store(out + rows[:, None] * OUT + out_cols[None, :], result, mask=keep)
