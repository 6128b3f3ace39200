#!/usr/bin/env bash
# The inference bench on a GPU machine in one call: install what is missing, print the GPU, run
# bench/infer.py for both presets in fp32, bf16, fp16 and compiled, print the table (paste it into
# bench/RESULTS.md with the date and the card's name).
#
#   bash bench/gpu.sh                 # on the GPU machine
#   bash bench/gpu.sh --dry-run       # anywhere: print the commands, run nothing
#   bash bench/gpu.sh --device cpu    # anywhere: the same steps on the CPU, short (checks the script)
#   bash bench/gpu.sh -- --presets fast --seconds 1     # anything after -- goes to bench/infer.py
#
# From a session lent a GPU (the device tool), carry "work/bench": the mock set bench/infer.py cached
# here (work/bench/mocks-3000-11-*.npz; without it the GPU machine simulates analytic mocks, which
# needs astropy). The GPU image has python3 with CUDA torch, numpy and safetensors; this package is
# installed from the working tree without dependencies and offline (the bench needs none of them).
# Wheels carried in .whl/ (see /work/.library/device/README.md) are installed first. Takes ~5 min:
# give it timeout_s=540.
set -euo pipefail
cd "$(dirname "$0")/.."

device=cuda dry=0 extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1 ;;
    --device) device=$2; shift ;;
    --) shift; extra=("$@"); break ;;
    *) echo "bench/gpu.sh: unknown option $1 (see the header of this script)" >&2; exit 2 ;;
  esac
  shift
done
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
run() { echo "+ $*"; if [ "$dry" = 0 ]; then "$@"; fi; }

# 1. Install.
if compgen -G ".whl/*.whl" >/dev/null; then
  run "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if [ "$dry" = 1 ] || ! "$py" -c "import lamost_classify.model.fastpath" 2>/dev/null; then
  run "$py" -m pip install -q --no-deps --no-build-isolation --no-index -e .
fi

# 2. What it runs on.
if [ "$device" = cuda ]; then
  run nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
fi
run "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"

# 3. The bench, paper first (the goal: >= 50,000 spectra/s in bf16 on an H100; fp16, the GPU default
# for its accuracy, should match it), rows printed as they
# come. Compiled variants at one batch size each: every FastPath compiles anew (~1 min each). ~64:
# multi-scale branches grouped to 64 maps per convolution (one padded convolution), the width tensor
# cores like, against the CPU's 16; whichever is faster becomes GROUP_WIDTH["cuda"] in model/fastpath.py.
weights=()
if [ -f model/weights/default.safetensors ]; then weights=(--weights default); fi
if [ "$device" = cuda ]; then
  args=(--device cuda --presets paper,fast --batch-sizes 1024,4096 --seconds 2 --mocks 3000
        --variants "reference/fp32@1024,torch/fp32,torch/bf16,torch/fp16,torch/fp16~64,compile/fp32@4096,compile/bf16@4096,compile/fp16@4096")
else
  args=(--device cpu --threads 1 --presets fast --seconds 0.5 --mocks 300
        --variants "reference/fp32@64,torch/fp32@64,torch/bf16@256,torch/fp16@64")
fi
run "$py" bench/infer.py "${args[@]}" "${weights[@]}" "${extra[@]}"
