"""Where a run of flags starts and ends, read on the flags' device.

The GPU preprocessing (the alpha's rows and columns) and marching cubes (the box of samples at the
threshold) both need bounding boxes; each asks for several spans and reads them back together, in
one synchronisation.
"""

from __future__ import annotations

import torch


def true_span(flags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last index where the 1-D bool `flags` is True, as 0-d tensors on its device (len(flags)
    and -1 when none is), not yet read back."""
    ramp = torch.arange(len(flags), device=flags.device)
    return torch.where(flags, ramp, len(flags)).min(), torch.where(flags, ramp, -1).max()
