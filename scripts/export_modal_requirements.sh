#!/usr/bin/env bash
# Write remote/modal_requirements.txt: exactly uv.lock's packages for the Modal image, with hashes.
#
# The runtime packages (no dev group), the modal-gpu group (ONNX Runtime's GPU build, cuRAND) and the
# modal-build group (torchmcubes' build tools), without the CPU onnxruntime: both builds install the
# same `onnxruntime` Python package, so only one may be there. Run it after every `uv lock`;
# tests/test_modal_app.py fails while the file and the lock disagree.
set -euo pipefail
cd "$(dirname "$0")/.."
uv export --frozen --no-dev --group modal-gpu --group modal-build --no-emit-project \
  --no-emit-package onnxruntime --format requirements-txt --no-header --output-file remote/modal_requirements.txt >/dev/null
echo "wrote remote/modal_requirements.txt ($(grep -c '==' remote/modal_requirements.txt) packages)"
