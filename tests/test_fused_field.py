"""The fused Triton field kernel (remote/triposr/fused_field.py), run on the CPU by Triton's
interpreter against the PyTorch query it replaces on CUDA. The CUDA run is checked on the GPU by
benchmarks/pipeline.py --parity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from remote.triposr import fused_field

pytestmark = [
    pytest.mark.slow,  # Triton's interpreter
    pytest.mark.skipif(not fused_field.available(), reason="triton is not installed"),
]

SCRIPT = Path(__file__).with_name("fused_field_script.py")


@pytest.fixture(scope="module")
def report() -> dict:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_float32_weights_give_the_same_field(report):
    figures = report["float32"]
    assert figures["dispatched"]  # the scene field went through the kernel
    assert figures["density"] < 1e-5 and figures["colour"] < 1e-5, figures


def test_the_mesh_is_the_same(report):
    mesh = report["mesh"]
    assert mesh["vertices"][0] == mesh["vertices"][1] and mesh["faces"][0] == mesh["faces"][1], mesh
    assert mesh["max_vertex_difference"] < 1e-4 and mesh["max_colour_difference"] < 1e-4, mesh


def test_fast_precision_uses_fp16_weights_and_stays_near_float32(report):
    figures = report["fast"]
    assert figures["dispatched"] and figures["weights_dtype"] == "torch.float16"
    assert figures["density"] < 2e-2 and figures["colour"] < 5e-3, figures


def test_a_kernel_that_disagrees_is_switched_off(report):
    assert report["disagreeing_kernel"] == {"dispatched": False, "enabled": False}


def test_a_kernel_as_close_as_the_pytorch_query_runs_even_with_no_tolerance(report):
    figures = report["zero_tolerance"]
    assert 0 < figures["error"] < 1 and 0 < figures["reference_error"] < 1, figures
    assert figures["enabled"] == figures["dispatched"] == (figures["error"] < figures["reference_error"]), figures


def test_a_kernel_that_cannot_run_is_switched_off(report):
    assert report["failing_kernel"] == {"dispatched": False, "enabled": False, "answers": True}
