"""`image-to-3d generate`: images on disk -> GLB files, with a progress bar and a timing table.

Everything that can be checked before the (slow) model load is checked first, so a typo in a path
fails in a second, not after a 1.7 GB download. The pipeline (torch) is imported only when the
command runs, so `image-to-3d --help` stays quick.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from remote.errors import ImageTo3DError, InvalidOptionError
from remote.model_flags import add_model_arguments
from remote.options import OPTIONS, GenerateOptions, add_cli_arguments


def add_generate_command(commands: argparse._SubParsersAction) -> None:
    """Register `generate` on the `image-to-3d` command's subparsers."""
    generate = commands.add_parser(
        "generate",
        help="turn one or more images into GLB files",
        description="Turn one or more images into GLB files. OUT is a .glb file for one image, "
        "or a folder for several.",
    )
    generate.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="PNG, JPEG or WebP")
    generate.add_argument("-o", "--output", type=Path, required=True, metavar="OUT")
    add_model_arguments(generate)
    add_cli_arguments(generate)
    generate.set_defaults(run=run_generate)


def output_paths(images: list[Path], output: Path) -> list[Path]:
    """One .glb per image: OUT itself for one image (unless it is a folder), else OUT/<stem>.glb."""
    if len(images) == 1 and not output.is_dir() and output.suffix:
        if output.suffix.lower() != ".glb":
            raise InvalidOptionError(f"the output file must end in .glb (got {output}).")
        return [output]
    if output.exists() and not output.is_dir():
        raise InvalidOptionError(f"{output} is a file; for several images give a folder for -o/--output.")
    stems = [image.stem for image in images]
    if len(set(stems)) != len(stems):
        raise InvalidOptionError(
            "two input images share a file name; their GLB files would overwrite each other. "
            "Rename one, or run them separately."
        )
    return [output / f"{stem}.glb" for stem in stems]


def check_inputs(images: list[Path]) -> None:
    for image in images:
        if not image.is_file():
            raise InvalidOptionError(f"no such image file: {image}")


def run_generate(args: argparse.Namespace) -> int:
    """Run the pipeline over every image; report failures per image and exit 1 if any failed."""
    from tqdm import tqdm

    from remote.pipeline import STAGES, TEXTURE_STAGES, Pipeline

    options = GenerateOptions(**{option.name: getattr(args, option.name) for option in OPTIONS}).validate()
    images: list[Path] = list(args.images)
    check_inputs(images)
    targets = output_paths(images, args.output)

    pipeline = Pipeline.load(
        model=args.model,
        device=args.device,
        rembg_model_path=args.rembg_model,
        precision=args.precision,
    )
    stages = STAGES[:-1] + TEXTURE_STAGES + STAGES[-1:] if options.texture_size else STAGES  # "glb" last
    totals = {stage: 0.0 for stage in stages}
    failures = 0
    done = 0
    started = time.perf_counter()
    progress = tqdm(list(zip(images, targets)), unit="image", disable=len(images) < 2, file=sys.stderr)
    for image, target in progress:
        progress.set_postfix_str(image.name)
        try:
            result = pipeline.generate(image, options)
        except ImageTo3DError as error:
            failures += 1
            tqdm.write(f"error: {image}: {error.message}", file=sys.stderr)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(result.glb)
        done += 1
        for stage, seconds in result.timings.items():
            totals[stage] = totals.get(stage, 0.0) + seconds
        tqdm.write(f"{image} -> {target} ({result.vertex_count} vertices, {result.face_count} faces)")
    if done:
        print(format_timings(totals, done, time.perf_counter() - started, pipeline.device.type))
    return 1 if failures else 0


def format_timings(totals: dict[str, float], count: int, wall: float, device: str) -> str:
    """A small table of time per stage (mean per image) for the images that succeeded."""
    lines = [f"timings on {device} ({count} image{'s' if count != 1 else ''}, mean per image):"]
    for stage, seconds in totals.items():
        mean = seconds / count if count else 0.0
        lines.append(f"  {stage:<11}{mean * 1000:9.1f} ms")
    lines.append(f"  {'wall total':<11}{wall * 1000:9.1f} ms")
    return "\n".join(lines)
