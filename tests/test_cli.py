"""`image-to-3d generate` as a user runs it: real processes, the tiny model, real files."""

from __future__ import annotations

import subprocess
import sys

import PIL.Image
import pytest
import trimesh

from conftest import EXAMPLES, TINY_MODEL
from live_server import ROOT
from image_to_3d_dev.tiny_u2net import build_tiny_u2net

pytestmark = pytest.mark.slow  # runs the real command on the tiny model


def generate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "remote.cli", "generate", *args, "--model", str(TINY_MODEL), "--device", "cpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_one_image_to_one_file(tmp_path):
    out = tmp_path / "chair.glb"
    run = generate(str(EXAMPLES / "chair.png"), "-o", str(out), "--resolution", "40", "--target-faces", "2000")
    assert run.returncode == 0, run.stderr
    (mesh,) = trimesh.load(out, file_type="glb").geometry.values()
    assert 1000 < len(mesh.faces) <= 2200
    for stage in ("decode", "preprocess", "model", "extraction", "color", "glb"):
        assert stage in run.stdout  # per-stage timings at the end


def test_texture_size_writes_a_textured_glb(tmp_path):
    out = tmp_path / "chair.glb"
    run = generate(str(EXAMPLES / "chair.png"), "-o", str(out), "--resolution", "32", "--texture-size", "512")
    assert run.returncode == 0, run.stderr
    (mesh,) = trimesh.load(out, file_type="glb").geometry.values()
    image = mesh.visual.material.baseColorTexture
    assert image.size == (512, 512) and mesh.visual.uv.shape == (len(mesh.vertices), 2)
    for stage in ("unwrap", "rasterise", "texture_color", "dilate", "encode"):
        assert stage in run.stdout


def test_several_images_to_a_folder_with_background_removal(tmp_path):
    onnx = build_tiny_u2net(tmp_path / "u2net.onnx")
    jpeg = tmp_path / "teapot.jpg"
    PIL.Image.open(EXAMPLES / "teapot.png").save(jpeg, quality=90)
    run = generate(
        str(EXAMPLES / "chair.png"),
        str(jpeg),
        "-o",
        str(tmp_path / "out"),
        "--resolution",
        "32",
        "--rembg-model",
        str(onnx),
        "--remove-background",
        "always",
        "--foreground-ratio",
        "0.7",
    )
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["chair.glb", "teapot.glb"]
    assert "2/2" in run.stderr  # the progress bar over several images


@pytest.mark.parametrize(
    ("make_input", "message"),
    [
        (lambda d: str(d / "missing.png"), "no such image file"),
        (lambda d: (d / "notes.png").write_text("not an image") and str(d / "notes.png"), "not a PNG, JPEG or WebP"),
        (
            lambda d: PIL.Image.new("RGBA", (32, 32), (0, 0, 0, 0)).save(d / "empty.png") or str(d / "empty.png"),
            "No object was found",
        ),
    ],
    ids=["missing", "not-an-image", "no-foreground"],
)
def test_errors_are_one_clear_line_and_a_failing_exit(tmp_path, make_input, message):
    run = generate(make_input(tmp_path), "-o", str(tmp_path / "x.glb"), "--resolution", "32")
    assert run.returncode == 1
    assert message in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "x.glb").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--resolution", "8"], "resolution must be between 32 and 512"),
        (["--foreground-ratio", "2"], "foreground_ratio must be between 0.5 and 1.0"),
        (["--target-faces", "10"], "target_faces must be between"),
    ],
)
def test_options_out_of_range(tmp_path, args, message):
    run = generate(str(EXAMPLES / "chair.png"), "-o", str(tmp_path / "x.glb"), *args)
    assert run.returncode == 1 and message in run.stderr


def test_a_texture_size_not_offered_is_refused_with_the_choices(tmp_path):
    run = generate(str(EXAMPLES / "chair.png"), "-o", str(tmp_path / "x.glb"), "--texture-size", "300")
    assert run.returncode == 2 and "invalid choice: 300 (choose from 0, 512, 1024, 2048)" in run.stderr
    assert not (tmp_path / "x.glb").exists()


def test_output_must_be_a_glb_file_for_one_image(tmp_path):
    run = generate(str(EXAMPLES / "chair.png"), "-o", str(tmp_path / "chair.obj"))
    assert run.returncode == 1 and "must end in .glb" in run.stderr


def test_wrong_model_folder(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "remote.cli",
            "generate",
            str(EXAMPLES / "chair.png"),
            "-o",
            str(tmp_path / "x.glb"),
            "--model",
            str(tmp_path),
            "--device",
            "cpu",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1 and "model.safetensors or model.ckpt" in run.stderr


def test_help_lists_both_commands():
    run = subprocess.run([sys.executable, "-m", "remote.cli", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0 and "generate" in run.stdout and "serve" in run.stdout
