#!/usr/bin/env bash
# bench/gpu_pipeline.py on this workplace's H200 machine (the `device` tool), where nothing can be
# installed from a registry: what the run needs travels in .gpu/ (made on a connected machine, see
# docs/performance.md) and is unpacked here. The app side (this process: DuckDB) gets /tmp/asite on
# its path; the workers run under /tmp/worker-python, the same python3 without /tmp/asite, so they
# have the GPU packages alone. Results go to $OUT.
set -uo pipefail
G=${1:-.gpu}
OUT=${OUT:-/tmp/out}
mkdir -p /tmp/gsite /tmp/wsite /tmp/asite /tmp/llama.cpp /tmp/g4tok "$OUT"
tar xzf "$G/site.tgz" -C /tmp/gsite                                   # Unsloth, bitsandbytes, trl, datasets
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/wsite "$G"/wheels/*.whl
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/asite "$G"/appwheels/*.whl
tar xzf "$G/llama_cpp_pkg.tgz" -C /tmp/wsite                          # llama-cpp-python (ctypes, CPU build)
tar xzf "$G/converter.tgz" -C /tmp/llama.cpp                          # convert_hf_to_gguf.py and gguf-py
tar xJf "$G/g4tok.txz" -C /tmp/g4tok                                  # Gemma 4's tokenizer (bench/gemma4_random.py)
cat > /tmp/worker-python <<'PY'
#!/bin/sh
PYTHONPATH=$(printf '%s' "$PYTHONPATH" | tr ':' '\n' | grep -v '^/tmp/asite$' | paste -sd: -) exec python3 "$@"
PY
chmod +x /tmp/worker-python
export PYTHONPATH=/tmp/gsite:/tmp/wsite:/tmp/asite VITUNE_LLAMA_CPP_DIR=/tmp/llama.cpp PYTHONUNBUFFERED=1 \
       HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv -l 2 > "$OUT/gpu-usage.csv" 2>&1 &
smi=$!
python3 bench/gpu_pipeline.py --out "$OUT" --home /tmp/vhome --worker-python /tmp/worker-python \
  --tokenizer /tmp/g4tok "${@:2}" 2>&1 | tee "$OUT/log.txt"
rc=${PIPESTATUS[0]}
kill $smi 2>/dev/null
for log in /tmp/vhome/data/runs/*/worker.log; do cp "$log" "$OUT/train-worker.log"; done
exit "$rc"
