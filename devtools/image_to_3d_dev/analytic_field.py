"""An analytic scene with a known, asymmetric shape, standing in for a TripoSR scene in tests.

A ball body at the origin, a nose sticking out toward +X (the side the camera sees), and a thin fin
on top (thinner than the band method's coarse cells, to prove thin parts survive). The density is
`threshold * exp(-k * signed_distance)`, so the surface `density == threshold` is exactly the
shape's boundary and the density falls off smoothly like a real field. Colours: red on the nose side
(x > 0.2), blue elsewhere, so orientation and colour can be checked at once.
"""

from __future__ import annotations

import torch

BODY_RADIUS = 0.45
NOSE_CENTRE = (0.45, 0.0, 0.0)
NOSE_RADIUS = 0.18
FIN_HALF_THICKNESS = 0.012  # about 1.8 voxels at resolution 256, under one coarse cell (4 voxels)
FIN_TOP = 0.75
RED = (0.9, 0.1, 0.1)
BLUE = (0.1, 0.2, 0.8)


class AnalyticField:
    """Density/colour field of the body + nose + fin shape (see module docstring)."""

    radius = 0.87  # the grid's half-side, as TripoSR's

    def __init__(self, threshold: float = 25.0, sharpness: float = 30.0, device: str = "cpu") -> None:
        self.threshold = threshold
        self.sharpness = sharpness
        self.device = torch.device(device)

    def signed_distance(self, points: torch.Tensor) -> torch.Tensor:
        """Negative inside the shape, positive outside (exact for each part, min over parts)."""
        body = points.norm(dim=1) - BODY_RADIUS
        nose = (points - torch.tensor(NOSE_CENTRE, device=points.device)).norm(dim=1) - NOSE_RADIUS
        x, y, z = points.unbind(1)
        fin_box = torch.stack(
            (y.abs() - FIN_HALF_THICKNESS, x.abs() - 0.15, (z - FIN_TOP / 2).abs() - FIN_TOP / 2), dim=1
        )
        fin = fin_box.clamp_min(0).norm(dim=1) + fin_box.max(dim=1).values.clamp_max(0)
        return torch.minimum(torch.minimum(body, nose), fin)

    def density(self, points: torch.Tensor) -> torch.Tensor:
        return self.threshold * torch.exp(-self.sharpness * self.signed_distance(points))

    def color(self, points: torch.Tensor) -> torch.Tensor:
        red = torch.tensor(RED, device=points.device)
        blue = torch.tensor(BLUE, device=points.device)
        on_nose_side = (points[:, 0] > 0.2)[:, None]
        return torch.where(on_nose_side, red, blue)
