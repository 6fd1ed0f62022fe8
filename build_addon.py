"""Build the installable add-on zip: `python build_addon.py [-o dist/image_to_3d.zip]`.

The zip holds one folder, `image_to_3d/`, with `blender_manifest.toml` (Blender 4.2+ extension) and
`bl_info` in `__init__.py` (legacy "Install from Disk"). Entries are sorted and time-stamped
constantly, so the same sources always give the same bytes.
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SOURCE = ROOT / "blender_addon"
PACKAGE = "image_to_3d"
FILES = ("*.py", "blender_manifest.toml")
FIXED_TIME = (2024, 1, 1, 0, 0, 0)


def build(output: Path) -> Path:
    files = sorted({path for pattern in FILES for path in SOURCE.glob(pattern)})
    output.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            info = zipfile.ZipInfo(f"{PACKAGE}/{path.name}", date_time=FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "dist" / f"{PACKAGE}.zip")
    print(build(parser.parse_args().output))


if __name__ == "__main__":
    main()
