#!/usr/bin/env bash
# Make torchmcubes (commit 3381600, the newest) compile as C++20, which torch 2.15 requires.
#
# 1. torch 2.15's headers stop with "#error C++20 or later compatible compiler is required", and
#    torchmcubes sets both its C++ and CUDA standard to 17 in CMakeLists.txt, where a
#    -DCMAKE_CXX_STANDARD on the command line cannot override it: raise both to 20.
# 2. In C++20 <cmath> declares std::lerp(float, float, float), which the headers bring into the
#    global namespace, and cxx/helper_math.h defines its own lerp(float, float, float): g++ stops
#    with "conflicts with a previous declaration". Nothing in torchmcubes calls helper_math's lerp,
#    so its four overloads are renamed helper_lerp.
# Used by the Modal image build and by scripts/check_torchmcubes_compile.sh. Fails if the lines
# are not there exactly as expected, so a new upstream revision is noticed instead of half-patched.
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

helper="$(dirname "$cmakelists")/cxx/helper_math.h"
count=$(grep -c "^inline __device__ __host__ float[234]* lerp(" "$helper" || true)
if [ "$count" != 4 ]; then
  echo "error: expected four lerp overloads in $helper, found $count; check this revision's lerp" >&2
  exit 1
fi
if grep -rn "[^_]lerp(" "$(dirname "$helper")" | grep -v "^$helper:.*inline __device__ __host__"; then
  echo "error: something in torchmcubes calls lerp; renaming helper_math's lerp would change it" >&2
  exit 1
fi
sed -i "s/^\(inline __device__ __host__ float[234]*\) lerp(/\1 helper_lerp(/" "$helper"
grep -n "helper_lerp(" "$helper"
