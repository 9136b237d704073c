#!/usr/bin/env bash
# bench/gpu_speed.py on this workplace's H200 machine (the `device` tool): unpack the GPU packages that
# travel in .gpu/ (see h200_pipeline.sh), then one part of issue 15's numbers. Results go to $OUT.
#   bash bench/device/h200_speed.sh .gpu eval|train [gpu_speed.py options]
set -uo pipefail
G=${1:-.gpu}
PART=${2:-eval}
OUT=${OUT:-/tmp/out}
mkdir -p /tmp/gsite /tmp/wsite "$OUT"
tar xzf "$G/site.tgz" -C /tmp/gsite                                   # Unsloth, bitsandbytes, trl, datasets
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/wsite "$G"/wheels/*.whl
export PYTHONPATH=/tmp/gsite:/tmp/wsite PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
       HF_DATASETS_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv -l 2 > "$OUT/gpu-usage.csv" 2>&1 &
smi=$!
python3 bench/gpu_speed.py --part "$PART" --out "$OUT" "${@:3}" > "$OUT/log.txt" 2>&1
rc=$?
kill $smi 2>/dev/null
grep -v "it/s\]" "$OUT/log.txt" | tail -n 60
exit "$rc"
