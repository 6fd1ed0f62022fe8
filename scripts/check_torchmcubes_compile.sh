#!/usr/bin/env bash
# Prove that torchmcubes compiles against the locked torch's headers with nvcc for the Modal GPUs.
#
# What the Modal image build does (remote/modal_app.py), done where nvcc and a GPU are at hand but
# the locked torch is not installed: compile every torchmcubes source file against torch 2.15's
# headers (unpacked from the locked wheel), once with C++17 as upstream sets it (expected to stop at
# torch's "#error C++20"), then with scripts/patch_torchmcubes_cxx20.sh applied, for every arch in
# ARCHS. The object files' embedded GPU code is listed with cuobjdump. Then, if $PYTHON has torch,
# the module is linked against it (the step-2 objects when it is the headers' version, else
# recompiled against its headers), imported, and run on a sphere: on the CPU, and on the GPU if any.
#
#   TORCHMCUBES_SRC=... TORCH_INCLUDE=.../torch/include PYTHON_INCLUDE=.../include/python3.11 \
#   ARCHS="86 89" OUT=build/torchmcubes-check scripts/check_torchmcubes_compile.sh
#
# nvcc can come from the CUDA base image or from PyPI (nvidia-cuda-nvcc, -crt, -nvvm, -runtime,
# -cccl, -cuobjdump, all 13.2.86: the CUDA of the locked torch); then put its bin/ on PATH and set
# CUDA_HOME to its folder, and EXTRA_INCLUDE to a folder with the cuBLAS, cuSPARSE and cuSOLVER
# headers (the locked torch's nvidia/cu13/include has them). Compiling needs no GPU.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
: "${TORCHMCUBES_SRC:?torchmcubes source folder}" "${TORCH_INCLUDE:?torch include folder}"
: "${PYTHON_INCLUDE:?folder with Python.h}"
ARCHS="${ARCHS:-86 89}"
OUT="${OUT:-build/torchmcubes-check}"
JOBS="${JOBS:-8}"
PYTHON="${PYTHON:-python3}"  # the Python whose torch step 3 links against
CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"  # for cuda_runtime.h in the C++ files
EXTRA_INCLUDE="${EXTRA_INCLUDE:-$CUDA_HOME/include}"  # cuBLAS/cuSPARSE/cuSOLVER headers ATen includes
rm -rf "$OUT" && mkdir -p "$OUT"
src="$OUT/src" && cp -r "$TORCHMCUBES_SRC" "$src"

version_of() { sed -n "s/^#define TORCH_VERSION_$1 \([0-9]*\).*/\1/p" "$2/torch/headeronly/version.h"; }
echo "== nvcc: $(nvcc --version | grep -E 'release|Build' | tr '\n' ' ')"
echo "== host compiler: $(g++ --version | head -1)"
headers_version="$(version_of MAJOR "$TORCH_INCLUDE").$(version_of MINOR "$TORCH_INCLUDE").$(version_of PATCH "$TORCH_INCLUDE")"
echo "== torch headers: $headers_version ($TORCH_INCLUDE)"
echo "== torchmcubes: $(cat "$src/REVISION" 2>/dev/null || echo "$TORCHMCUBES_SRC")"
echo "== archs: $ARCHS"

gencode=""
for arch in $ARCHS; do gencode+=" -gencode arch=compute_${arch},code=sm_${arch}"; done
# The flags torch's CMake config and torch.utils.cpp_extension give an extension build.
defines="-DWITH_CUDA -DTORCH_EXTENSION_NAME=torchmcubes_module -DTORCH_API_INCLUDE_EXTENSION_H -D_GLIBCXX_USE_CXX11_ABI=1"
nvcc_flags="-D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__ --expt-relaxed-constexpr -Xcompiler -fPIC -O3"

compile_all() {  # compile_all STD INCLUDE_DIR OBJ_DIR: every source; prints one line per file
  local std=$1 inc=$2 obj=$3 pids=() names=()
  mkdir -p "$obj"
  local includes="-I$inc -I$inc/torch/csrc/api/include -I$PYTHON_INCLUDE -I$EXTRA_INCLUDE"
  for file in "$src"/cxx/*.cu "$src"/cxx/*.cpp; do
    local name; name=$(basename "$file")
    if [[ $file == *.cu ]]; then
      nvcc -std=c++$std $gencode $nvcc_flags $defines $includes -c "$file" -o "$obj/$name.o" >"$obj/$name.log" 2>&1 &
    else
      g++ -std=c++$std -fPIC -O3 -fopenmp $defines $includes -I"$CUDA_HOME/include" -c "$file" -o "$obj/$name.o" >"$obj/$name.log" 2>&1 &
    fi
    pids+=($!) names+=("$name")
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 0.2; done
  done
  local failed=0
  for i in "${!pids[@]}"; do
    if wait "${pids[$i]}"; then echo "   ok     ${names[$i]} (c++$std)"
    else failed=1; echo "   FAILED ${names[$i]} (c++$std): $(grep -m1 -E 'error' "$obj/${names[$i]}.log")"; fi
  done
  return $failed
}

echo "== 1. upstream's standard (C++17) against these headers: expected to fail"
compile_all 17 "$TORCH_INCLUDE" "$OUT/obj17" && echo "   (unexpected: C++17 compiled)"

echo "== 2. patched to C++20 (scripts/patch_torchmcubes_cxx20.sh)"
"$here/patch_torchmcubes_cxx20.sh" "$src" | sed 's/^/   /'
if compile_all 20 "$TORCH_INCLUDE" "$OUT/obj20"; then result=ok; else result=FAILED; fi
for object in "$OUT"/obj20/*.cu.o; do
  [ -f "$object" ] && echo "   $(basename "$object"): $(cuobjdump --list-elf "$object" 2>/dev/null | grep -o 'sm_[0-9]*' | sort -u | tr '\n' ' ')"
done
echo "== RESULT torch-headers C++20 compile: $result"

echo "== 3. link the patched C++20 build against this machine's torch and run it on a sphere"
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
  echo "   skipped: no torch installed for $PYTHON"; exit $([ $result = ok ] && echo 0 || echo 1)
fi
torch_root=$("$PYTHON" -c "import torch, os; print(os.path.dirname(torch.__file__))")
torch_version=$("$PYTHON" -c "import torch; print(torch.__version__.split('+')[0])")
has_cuda=$("$PYTHON" -c "import torch; print(int(torch.cuda.is_available()))")
echo "   torch $torch_version at $torch_root (CUDA device: $([ "$has_cuda" = 1 ] && echo yes || echo no))"
if [ "$torch_version" = "$headers_version" ] && [ $result = ok ] && [ "$has_cuda" = 0 ]; then
  objects="$OUT/obj20"  # the same headers: link what step 2 compiled
else  # another torch (or a GPU to add): compile against its own headers
  if [ "$has_cuda" = 1 ]; then
    device_arch=$("$PYTHON" -c "import torch; print(''.join(map(str, torch.cuda.get_device_capability())))")
    [[ " $ARCHS " == *" $device_arch "* ]] || gencode+=" -gencode arch=compute_${device_arch},code=sm_${device_arch}"
  fi
  py_include=$("$PYTHON" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
  [ -f "$py_include/Python.h" ] || py_include="$PYTHON_INCLUDE"
  PYTHON_INCLUDE="$py_include" compile_all 20 "$torch_root/include" "$OUT/obj-installed" \
    || { echo "== RESULT link+run: FAILED (compile)"; exit 1; }
  objects="$OUT/obj-installed"
fi
cudart=$(ls "$CUDA_HOME"/lib*/libcudart.so* 2>/dev/null | head -1)
suffix=$("$PYTHON" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
g++ -shared -fopenmp "$objects"/*.o -o "$OUT/torchmcubes_module$suffix" \
  -L"$torch_root/lib" -lc10 -lc10_cuda -ltorch -ltorch_cpu -ltorch_cuda -ltorch_python "$cudart" \
  -Wl,-rpath,"$torch_root/lib" || { echo "== RESULT link+run: FAILED (link)"; exit 1; }
PYTHONPATH="$OUT" "$PYTHON" - <<'PY'
import torch, torchmcubes_module as mc
assert hasattr(mc, "mcubes_cuda"), "built without CUDA"  # the Modal image's own check
n = 64
axis = torch.linspace(-1, 1, n)
z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
volume = (x**2 + y**2 + z**2).sqrt() - 0.6                      # a sphere of radius 0.6
cpu_vertices, cpu_faces = mc.mcubes_cpu(volume, 0.0)
radius = (cpu_vertices.float() / (n - 1) * 2 - 1).norm(dim=1)
print(f"   cpu: {cpu_faces.shape[0]} faces, vertex radius {radius.min():.3f}..{radius.max():.3f}")
assert cpu_faces.shape[0] > 0 and (radius - 0.6).abs().max() < 0.03
if torch.cuda.is_available():
    gpu_vertices, gpu_faces = mc.mcubes_cuda(volume.cuda(), 0.0)
    radius = (gpu_vertices.float().cpu() / (n - 1) * 2 - 1).norm(dim=1)
    print(f"   {torch.cuda.get_device_name()}: cuda {gpu_faces.shape[0]} faces, "
          f"vertex radius {radius.min():.3f}..{radius.max():.3f}")
    assert abs(gpu_faces.shape[0] - cpu_faces.shape[0]) <= 0.01 * cpu_faces.shape[0]
    assert (radius - 0.6).abs().max() < 0.03
else:
    print("   cuda: not run (no GPU here); the module has mcubes_cuda")
print("== RESULT link+run: ok")
PY
status=$?
[ $result = ok ] && exit $status || exit 1
