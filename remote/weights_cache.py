"""Put the published model files into a folder once, checked against pinned digests.

The Modal image runs `python -m remote.weights_cache DEST` at build time, so containers find the
TripoSR checkpoint and rembg's u2net on local disk and never download at request time. The same
function works anywhere (`python -m remote.weights_cache ~/models`) to prepare an offline folder.

Only the standard library and `remote.errors` are used: the image build copies just this module
(and `remote/errors.py`) before the download step, so editing the rest of the package does not
invalidate the 1.7 GB layer.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from remote.errors import ModelLoadError

TRIPOSR_REPO = "stabilityai/TripoSR"
TRIPOSR_REVISION = "5b521936b01fbe1890f6f9baed0254ab6351c04a"
TRIPOSR_DIR = "triposr"
U2NET_FILE = "u2net.onnx"

_CHUNK = 1 << 20
_TIMEOUT_S = 60.0

Opener = Callable[[str], BinaryIO]


@dataclass(frozen=True)
class PinnedFile:
    """One file to fetch: where it goes (relative to the folder), where from, and its digest."""

    name: str
    url: str
    algorithm: str  # "sha256" or "md5": whatever the publisher states
    digest: str
    size: int | None = None


def hub_url(repo: str, revision: str, filename: str) -> str:
    """The Hugging Face download address of one file at one commit (no moving branch)."""
    return f"https://huggingface.co/{repo}/resolve/{revision}/{filename}"


PINNED_FILES: tuple[PinnedFile, ...] = (
    PinnedFile(
        name=f"{TRIPOSR_DIR}/config.yaml",
        url=hub_url(TRIPOSR_REPO, TRIPOSR_REVISION, "config.yaml"),
        algorithm="sha256",
        digest="74ca708ce086bf68e97709ea6b3d91f14717921c04691e84043f0eb8fcc68e62",
    ),
    PinnedFile(
        name=f"{TRIPOSR_DIR}/model.ckpt",
        url=hub_url(TRIPOSR_REPO, TRIPOSR_REVISION, "model.ckpt"),
        algorithm="sha256",
        digest="429e2c6b22a0923967459de24d67f05962b235f79cde6b032aa7ed2ffcd970ee",
        size=1_677_246_742,
    ),
    PinnedFile(
        name=U2NET_FILE,
        url="https://github.com/danielgatis/rembg/releases/download/v0.0.0/u2net.onnx",
        algorithm="md5",
        digest="60024c5c889badc19c04ad937298a77b",
    ),
)


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in chunks (the checkpoint does not fit comfortably in memory twice)."""
    hasher = hashlib.new(algorithm)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def is_verified(path: Path, pinned: PinnedFile) -> bool:
    """True when `path` exists with the pinned size (if known) and digest."""
    if not path.is_file():
        return False
    if pinned.size is not None and path.stat().st_size != pinned.size:
        return False
    return file_digest(path, pinned.algorithm) == pinned.digest


def fetch_pinned(pinned: PinnedFile, folder: Path, opener: Opener | None = None) -> Path:
    """Make `folder/pinned.name` the verified file, downloading only if it is missing or wrong.

    The download goes to a `.part` file next to the target and is renamed into place only after
    its digest matches, so a failed or interrupted run never leaves a file that looks finished.
    """
    target = folder / pinned.name
    if is_verified(target, pinned):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    open_url = opener or _open_url
    hasher = hashlib.new(pinned.algorithm)
    try:
        with open_url(pinned.url) as response, partial.open("wb") as out:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                hasher.update(chunk)
                out.write(chunk)
    except (OSError, urllib.error.URLError) as error:
        partial.unlink(missing_ok=True)
        raise ModelLoadError(
            f"Could not download {pinned.url}: {error}. Check the network connection and run "
            "`python -m remote.weights_cache` again."
        ) from error
    size = partial.stat().st_size
    if pinned.size is not None and size != pinned.size:
        partial.unlink()
        raise ModelLoadError(
            f"{pinned.url} gave {size} bytes, expected {pinned.size}; the download was cut short "
            "or the file changed upstream. Run `python -m remote.weights_cache` again; if it "
            "keeps failing, the pinned file is no longer published there."
        )
    actual = hasher.hexdigest()
    if actual != pinned.digest:
        partial.unlink()
        raise ModelLoadError(
            f"{pinned.url} has {pinned.algorithm} {actual}, expected {pinned.digest}; refusing to "
            "use a file that is not the pinned one. Run `python -m remote.weights_cache` again; "
            "if it keeps failing, the file changed upstream."
        )
    os.replace(partial, target)
    return target


def prepare_weights(
    folder: Path, files: Sequence[PinnedFile] = PINNED_FILES, opener: Opener | None = None
) -> list[Path]:
    """Fetch every pinned file into `folder`; returns their paths in the order given."""
    return [fetch_pinned(pinned, folder, opener) for pinned in files]


def _open_url(url: str) -> BinaryIO:
    request = urllib.request.Request(url, headers={"User-Agent": "image-to-3d-weights-cache"})
    response: BinaryIO = urllib.request.urlopen(request, timeout=_TIMEOUT_S)
    return response


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m remote.weights_cache",
        description="Download the pinned TripoSR checkpoint and rembg's u2net.onnx into FOLDER "
        "(skipping files already there and verified).",
    )
    parser.add_argument("folder", type=Path, metavar="FOLDER")
    args = parser.parse_args(argv)
    try:
        for path in prepare_weights(args.folder):
            print(f"ok {path}")
    except ModelLoadError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
