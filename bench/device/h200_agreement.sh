#!/usr/bin/env bash
# bench/static_agreement.py on this workplace's H200 machine (the `device` tool): the random-weight
# Gemma 4 1.7B of bench/gpu_speed.py, the static engine against the dynamic path in bf16 and float32.
#   bash bench/device/h200_agreement.sh .gpu [gemma4|gemma3]
set -uo pipefail
G=${1:-.gpu}
ARCH=${2:-gemma4}
OUT=${OUT:-/tmp/out}
mkdir -p /tmp/gsite /tmp/wsite "$OUT"
tar xzf "$G/site.tgz" -C /tmp/gsite
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/wsite "$G"/wheels/*.whl 2>/dev/null
export PYTHONPATH=/tmp/gsite:/tmp/wsite PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
       HF_DATASETS_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1
W=/tmp/vitune-gpu-speed/$ARCH-1.7b
[ -f "$W/config.json" ] || python3 -c "import sys; sys.path[:0]=['bench','.']; from pathlib import Path; \
from train_throughput import build_model; build_model(Path('$W'), '$ARCH', '1.7b', 262144)" > "$OUT/build.log" 2>&1
python3 bench/static_agreement.py --base-model "$W" --device cuda --prompts 64 --max-new-tokens 48 \
  --json "$OUT/static-agreement-$ARCH.json" > "$OUT/log.txt" 2>&1
rc=$?
grep -v "it/s\]" "$OUT/log.txt" | tail -n 30
exit "$rc"
