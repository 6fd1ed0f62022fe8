"""The precision setting and the policy it stands for.

The setting is spelled `precision` everywhere: `--precision` (with `--exact` kept as an alias of
`--precision float32`), `IMAGE_TO_3D_PRECISION`, `Pipeline.load(precision=...)`.

- "auto": "fast" on CUDA; on the CPU, where reduced precision does not pay, float32 weights with the
  band extraction.
- "fast": reduced-precision matrix products, the band extraction and (on CUDA) the CUDA graph.
- "float32": float32 weights and the dense grid: upstream TripoSR's numbers (slower).

`policy_for` turns the setting into a `PrecisionPolicy`, a frozen value the pipeline is built from;
the model (remote/triposr/) stays the plain float32 description of TripoSR and `apply_policy` casts
its weights. A benchmark that wants a variant builds it: `dataclasses.replace(policy, cuda_graph=False)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from remote.errors import InvalidOptionError

if TYPE_CHECKING:
    from remote.triposr.model import TripoSR

PRECISIONS = ("auto", "fast", "float32")
DEFAULT_PRECISION = "auto"
EXACT = "float32"  # what the `--exact` alias means
EXTRACTIONS = ("band", "dense")
# TF32 for the model pass's float32 products: "off" (the product: they run in float32),
# "convolutions" (PyTorch's default: cuDNN's convolutions in TF32), "on" (matrix products too).
TF32_MODES = ("off", "convolutions", "on")
DTYPES = ("float32", "float16", "bfloat16")

# The band extraction's defaults (remote/extraction.py takes them as keyword defaults): the fine
# voxels per coarse cell edge, and how close to the threshold, in log-density, a coarse corner
# counts as "near the surface" (e^±4: a narrower band lost sharp peaks that the coarse grid
# undersampled; docs/performance.md, "Figures behind the code").
COARSE_STRIDE = 4
BAND_LOG_MARGIN = 4.0

# The products the fast path keeps in float32, by their names in the model: the ViT's patch
# embedding (it reads the pixels) and the transformer's proj_in and proj_out (proj_out writes the
# planes directly). Under 1% of the pass's arithmetic, they carried most of its fp16 error
# (docs/performance.md, benchmarks/investigations/precision_sweep.py).
FLOAT32_ENDS = (
    "image_tokenizer.model.embeddings.patch_embeddings",
    "backbone.proj_in",
    "backbone.proj_out",
)


@dataclass(frozen=True)
class PrecisionPolicy:
    """How the pipeline runs the model; every field is data, nothing is read back from the weights.

    - `matmul_dtype`: the encoder's and transformer's Linear and Conv2d layers (except
      `float32_layers`); the residual streams, norms, embeddings, the post-processor (so the scene
      code) and the final exp/sigmoid stay float32 whatever it is. fp16, not bf16, on the fast
      path: its scene codes are closer to float32 at the same speed, and an input that overflows
      fp16 is run again with bf16 arithmetic (`Pipeline.scene_code`).
    - `decoder_dtype`: the field MLP's layers (fp16 on the fast path: finer steps than bf16 where
      the density is compared with the threshold).
    - `float32_layers`: module names (as `model.get_submodule` takes them) kept in float32.
    - `fused_field`: query the field with the fused Triton kernel where it can run (CUDA, or
      Triton's interpreter) and agrees with float32 (checked once per pipeline).
    - `cuda_graph`: replay the model pass as a CUDA graph (remote/triposr/cuda_graph.py) on CUDA.
    - `extraction`: "band" (the surface's neighbourhood) or "dense" (every grid point, upstream's).
    - `compile_model`: compile the model pass with torch.compile when the pipeline warms up
      (`Pipeline.warm_up`, which the server runs before it reports ready; the one-shot CLI does
      not warm up, so it does not spend tens of seconds compiling for one image); CUDA only, and
      kept only if it agrees with the eager pass (remote/triposr/cuda_graph.py).
    - `tf32`: one of TF32_MODES, for the model pass (remote/triposr/model.py's
      `float32_products`); "off" in every policy the product runs, as TF32 convolutions alone
      move the surface (docs/performance.md); the others are for experiments.
    - `png_on_device`: a plain 8-bit RGBA PNG is only inflated on the host and its rows are
      unfiltered on the device by a Triton kernel (remote/png_unfilter.py) where it runs (CUDA, or
      Triton's interpreter) and passed its check; else libpng decodes it on the host.
    - `coarse_stride`, `band_log_margin`: the band's coarse grid (fine voxels per coarse cell
      edge) and its width (log-density either side of the threshold); the band extraction only.
    """

    matmul_dtype: str = "float32"
    decoder_dtype: str = "float32"
    float32_layers: tuple[str, ...] = ()
    fused_field: bool = False
    cuda_graph: bool = False
    extraction: str = "dense"
    compile_model: bool = False
    tf32: str = "off"
    png_on_device: bool = False
    coarse_stride: int = COARSE_STRIDE
    band_log_margin: float = BAND_LOG_MARGIN

    def __post_init__(self) -> None:
        for name in ("matmul_dtype", "decoder_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(f"{name} must be one of {', '.join(DTYPES)} (got {getattr(self, name)!r})")
        if self.extraction not in EXTRACTIONS:
            raise ValueError(f"extraction must be one of {', '.join(EXTRACTIONS)} (got {self.extraction!r})")
        if self.tf32 not in TF32_MODES:
            raise ValueError(f"tf32 must be one of {', '.join(TF32_MODES)} (got {self.tf32!r})")
        if isinstance(self.coarse_stride, bool) or not isinstance(self.coarse_stride, int) or self.coarse_stride < 1:
            raise ValueError(f"coarse_stride must be a whole number of at least 1 (got {self.coarse_stride!r})")
        if not (math.isfinite(self.band_log_margin) and self.band_log_margin >= 0):
            raise ValueError(f"band_log_margin must be a finite number of at least 0 (got {self.band_log_margin!r})")

    @property
    def reduced(self) -> bool:
        """Whether any matrix product runs below float32 (an fp16 pass can overflow)."""
        return self.matmul_dtype != "float32" or self.decoder_dtype != "float32"


FLOAT32 = PrecisionPolicy()  # upstream's numbers: float32 everywhere, the dense grid
FLOAT32_BAND = PrecisionPolicy(extraction="band")  # "auto" on the CPU
FAST = PrecisionPolicy(
    matmul_dtype="float16",
    decoder_dtype="float16",
    float32_layers=FLOAT32_ENDS,
    fused_field=True,
    cuda_graph=True,
    extraction="band",
    compile_model=True,
    png_on_device=True,
)


def check_precision(precision: str) -> None:
    """Refuse an unknown precision setting with the choices."""
    if precision not in PRECISIONS:
        raise InvalidOptionError(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r}).")


def policy_for(precision: str, device_type: str) -> PrecisionPolicy:
    """The policy a precision setting means on a device type ("cuda", "cpu", ...)."""
    check_precision(precision)
    if precision == "float32":
        return FLOAT32
    if precision == "fast" or device_type == "cuda":
        return FAST
    return FLOAT32_BAND


def apply_policy(model: "TripoSR", policy: PrecisionPolicy) -> "TripoSR":
    """Cast a float32 model's layers, in place, to the policy's dtypes; returns the model."""
    import torch

    from remote.triposr.model import reduce_matmul_precision

    keep = [model.get_submodule(name) for name in policy.float32_layers]
    matmul_dtype = getattr(torch, policy.matmul_dtype)
    for part in (model.image_tokenizer, model.backbone):
        reduce_matmul_precision(part, matmul_dtype, keep=keep)
    model.decoder.to(getattr(torch, policy.decoder_dtype))
    return model
