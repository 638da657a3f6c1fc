#!/usr/bin/env bash
# GPU check: on a fresh CUDA machine (Python 3.11 + pip), install domainclust with the CUDA
# build of torch, run the GPU tests (pytest marker `gpu`) with faiss-cpu, then with each
# candidate GPU wheel for k-means (Meta's faiss-gpu, NVIDIA's cuvs-cu12), and the benchmarks.
# Finishes in under 10 minutes (each step has its own timeout). Everything goes to $OUT
# (default ./gpu_check_out): gpu_check.log, junit XML per step, benchmark JSON, wheels.txt.
#
#   bash benchmarks/gpu_check.sh            # from the repository root, or anywhere
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
export NO_ALBUMENTATIONS_UPDATE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }
step() { echo; echo "=== [$(elapsed) s] $*"; }
left() { echo $(( 570 - $(elapsed) )); }  # seconds left in the 9.5-minute budget

step "machine"
nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv || true
PY=$(command -v python3.11 || command -v python3)
"$PY" --version

step "install (torch==2.13.0 from PyPI is the CUDA build on Linux x86_64)"
"$PY" -m venv .venv-gpu
VPY=.venv-gpu/bin/python
timeout 300 $VPY -m pip install -q torch==2.13.0 -e '.[test]' || { echo "install failed"; exit 1; }
$VPY - <<'PYEOF'
import torch, faiss
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(), "capability", torch.cuda.get_device_capability(),
          "arch list", torch.cuda.get_arch_list())
print("faiss", faiss.__version__)
PYEOF
echo "wheel,status" > "$OUT/wheels.txt"

run_gpu_tests() {  # $1: label
    local t; t=$(left); [ "$t" -gt 40 ] || { echo "no time left for $1"; return 1; }
    timeout $(( t < 150 ? t : 150 )) $VPY -m pytest -m gpu tests/test_gpu.py -rs -s -q \
        --junitxml="$OUT/junit-$1.xml"
}

step "GPU tests with faiss-cpu (torch backend on the GPU)"
run_gpu_tests faiss-cpu; echo "faiss-cpu+torch,rc=$?" >> "$OUT/wheels.txt"

step "kernels and epoch benchmarks"
timeout $(( $(left) / 3 )) $VPY benchmarks/bench_kmeans_backends.py --n 200000 1280000 \
    --k 1000 10000 --json "$OUT/kmeans_torch.json" || echo "k-means benchmark stopped (rc=$?)"
timeout $(( $(left) / 3 )) $VPY benchmarks/bench_datapath.py --n 2048 --batch 256 --repeats 1 \
    || echo "data path benchmark stopped (rc=$?)"
timeout $(( $(left) / 3 )) $VPY benchmarks/bench_epoch.py --n 5000 --k 100 --batch 256 --scale \
    || echo "epoch benchmark stopped (rc=$?)"

for wheel in "faiss-gpu==1.15.1" "cuvs-cu12"; do
    step "candidate wheel $wheel"
    [ "$(left)" -gt 90 ] || { echo "$wheel,not tried (time)" >> "$OUT/wheels.txt"; continue; }
    if [[ $wheel == faiss-gpu* ]]; then
        $VPY -m pip uninstall -q -y faiss-cpu
    fi
    if timeout 120 $VPY -m pip install -q "$wheel"; then
        run_gpu_tests "${wheel%%=*}"; rc=$?
        echo "$wheel,rc=$rc" >> "$OUT/wheels.txt"
        timeout $(( $(left) / 2 )) $VPY benchmarks/bench_kmeans_backends.py --n 1280000 \
            --k 1000 10000 --json "$OUT/kmeans_${wheel%%=*}.json" || true
    else
        echo "$wheel,install failed" >> "$OUT/wheels.txt"
    fi
    if [[ $wheel == faiss-gpu* ]]; then  # back to the CPU build for the next candidate
        $VPY -m pip uninstall -q -y faiss-gpu
        timeout 60 $VPY -m pip install -q faiss-cpu
    fi
done

step "done in $(elapsed) s"
cat "$OUT/wheels.txt"
