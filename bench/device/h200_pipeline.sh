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
# the studio's workers run in a process session of their own (so that they outlive a restart of the app):
# on a machine kept warm between calls, a worker of the last call can still be running and holding the GPU
# and the queue's slot; a call ends them first, and ends its own before it returns (seen 2026-12-07: a stuck
# worker of one call made the next call's training wait for its slot for the whole call)
pkill -9 -f "core.worker" 2>/dev/null; pkill -9 -f "core jobs supervise" 2>/dev/null
rm -rf /tmp/vhome/data   # a fresh queue and database each call; the built models under /tmp/vhome/models stay
# shellcheck source=bench/device/env.sh
source bench/device/env.sh "$G" $CUDA || exit 1
left=$(( BUDGET - SECONDS ))
# the bench saves its JSON after every stage: a run cut at the budget still brings back what it measured
timeout "$left" python3 bench/gpu_pipeline.py --out "$OUT" --home /tmp/vhome --worker-python /tmp/worker-python \
  --tokenizer /tmp/g4tok "${args[@]}" > "$OUT/log.txt" 2>&1
rc=$?
ps -eo pid,etimes,pcpu,rss,args | grep -E "core.worker|gpu_pipeline" | grep -v grep > "$OUT/left-running.txt"
pkill -9 -f "core.worker" 2>/dev/null
kill "$SMI_PID" 2>/dev/null
n=0; for log in $(find /tmp/vhome -name worker.log | head -n 3); do  # what comes back: 8 files at most
  n=$((n+1)); tail -c 60000 "$log" > "$OUT/worker-$n.log"; done
grep -E "^==>|^    \{" "$OUT/log.txt" | cut -c1-1500
exit "$rc"
