#!/usr/bin/env bash
# Run the Blender tests (add-on install + generate + errors, GLB import) against other Blender
# releases, using bpy from PyPI in a venv of its own per release. CI keeps to the bpy in uv.lock.
#
#   scripts/test_blender_versions.sh              # 4.2 LTS and 4.5 LTS
#   scripts/test_blender_versions.sh 4.2.23       # one release
set -euo pipefail
cd "$(dirname "$0")/.."
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(4.2.23 4.5.15)
for version in "${versions[@]}"; do
    venv=".blender-venvs/bpy-$version"
    if [ ! -x "$venv/bin/python" ]; then
        uv venv -q --python 3.11 "$venv"
        uv pip install -q --python "$venv/bin/python" "bpy==$version"
    fi
    echo "== Blender $version"
    IMAGE_TO_3D_BLENDER_PYTHON="$PWD/$venv/bin/python" uv run pytest -q tests/test_addon.py tests/test_blender_import.py
done
