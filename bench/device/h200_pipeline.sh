#!/usr/bin/env bash
# bench/gpu_pipeline.py on this workplace's lent GPU machine (the `device` tool), where nothing can be
# installed: the carry folder made by `bash scripts/gpu_env.sh carry .gpu` travels with the call and
# bench/device/env.sh unpacks it (the app side gets DuckDB; the workers run under /tmp/worker-python, with
# the GPU packages alone). Everything after the folder goes to bench/gpu_pipeline.py. Results go to $OUT.
#   bash bench/device/h200_pipeline.sh .gpu [cuda] --shape e4b --stages train,fit,evaluate [--budget-s 560]
set -uo pipefail
G=${1:-.gpu}; shift
CUDA=""; if [ "${1:-}" = cuda ]; then CUDA=cuda; shift; fi
BUDGET=560
args=()
while [ $# -gt 0 ]; do
  if [ "$1" = --budget-s ]; then BUDGET=$2; shift 2; else args+=("$1"); shift; fi
done
# shellcheck source=bench/device/env.sh
source bench/device/env.sh "$G" $CUDA || exit 1
left=$(( BUDGET - SECONDS ))
# the bench saves its JSON after every stage: a run cut at the budget still brings back what it measured
timeout "$left" python3 bench/gpu_pipeline.py --out "$OUT" --home /tmp/vhome --worker-python /tmp/worker-python \
  --tokenizer /tmp/g4tok "${args[@]}" > "$OUT/log.txt" 2>&1
rc=$?
kill "$SMI_PID" 2>/dev/null
n=0; for log in $(find /tmp/vhome -name worker.log | head -n 3); do  # what comes back: 8 files at most
  n=$((n+1)); tail -c 60000 "$log" > "$OUT/worker-$n.log"; done
grep -E "^==>|^    \{" "$OUT/log.txt" | cut -c1-1500
exit "$rc"
