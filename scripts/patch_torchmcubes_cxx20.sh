#!/usr/bin/env bash
# Raise torchmcubes' C++ and CUDA standard from 17 to 20 in its top-level CMakeLists.txt.
#
# torch 2.15's headers stop with "#error C++20 or later compatible compiler is required", and
# torchmcubes (every commit up to 3381600) sets both standards to 17 in CMakeLists.txt, where a
# -DCMAKE_CXX_STANDARD on the command line cannot override it. Used by the Modal image build and by
# scripts/check_torchmcubes_compile.sh. Fails if the two lines are not there exactly once each, so
# a new upstream revision is noticed instead of half-patched.
#
#   scripts/patch_torchmcubes_cxx20.sh TORCHMCUBES_SOURCE_DIR
set -euo pipefail
cmakelists="${1:?usage: $0 TORCHMCUBES_SOURCE_DIR}/CMakeLists.txt"
for language in CXX CUDA; do
  count=$(grep -c "^ *set(CMAKE_${language}_STANDARD 17)" "$cmakelists" || true)
  if [ "$count" != 1 ]; then
    echo "error: expected one 'set(CMAKE_${language}_STANDARD 17)' in $cmakelists, found $count;" \
         "check what this torchmcubes revision sets before patching it" >&2
    exit 1
  fi
  sed -i "s/set(CMAKE_${language}_STANDARD 17)/set(CMAKE_${language}_STANDARD 20)/" "$cmakelists"
done
grep -n "_STANDARD 20)" "$cmakelists"
