"""Fill the texels no face claimed, so filtering and mip-mapping never read black or grey there.

First `steps` rounds of dilation: each empty texel next to filled ones takes their mean, so the
gutters around charts continue the charts' own colours. Then a push-pull pass fills the rest of
the atlas (the space the packing left) from ever coarser averages of what is there, so even the
smallest mip levels average chart colours only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DILATION_STEPS = 4  # texels: covers the packing's gutter (2 texels of padding a side) and more


def fill_atlas(texels: torch.Tensor, colours: torch.Tensor, size: int, steps: int = DILATION_STEPS) -> torch.Tensor:
    """Colours (T, 3) at flat texel indices -> the whole (size, size, 3) atlas, float32."""
    device = colours.device
    image = torch.zeros((3, size * size), dtype=torch.float32, device=device)
    image[:, texels] = colours.t().float()
    filled = torch.zeros(size * size, dtype=torch.float32, device=device)
    filled[texels] = 1.0
    image = image.view(1, 3, size, size)
    filled = filled.view(1, 1, size, size)
    for _ in range(steps):
        # Means over each 3x3 neighbourhood; their ratio is the mean of the filled neighbours.
        counts = F.avg_pool2d(filled, 3, stride=1, padding=1)
        sums = F.avg_pool2d(image * filled, 3, stride=1, padding=1)
        grow = (counts > 0) & (filled == 0)
        image = torch.where(grow, sums / counts.clamp_min(1e-12), image)
        filled = torch.where(grow, 1.0, filled)
    if not bool(filled.all()):
        image = _push_pull(image, filled)
    return image[0].permute(1, 2, 0)


def _push_pull(image: torch.Tensor, filled: torch.Tensor) -> torch.Tensor:
    """Empty texels (filled == 0) take the weighted mean of the next coarser level, recursively."""
    if image.shape[-1] == 1 or bool(filled.all()):
        return image
    weight = F.avg_pool2d(filled, 2)
    coarse = F.avg_pool2d(image * filled, 2) / weight.clamp_min(1e-12)
    coarse = _push_pull(coarse, (weight > 0).float())
    return torch.where(filled > 0, image, F.interpolate(coarse, scale_factor=2.0, mode="nearest"))
