# Sourced by every bench/device/*.sh on the lent GPU machine, where nothing can be installed: unpacks the
# carry folder that `bash scripts/gpu_env.sh carry DIR` made here and that travelled with the call.
#   source bench/device/env.sh DIR [cuda]
# - /tmp/gsite: the GPU packages the machine lacks (Unsloth, bitsandbytes, trl, datasets);
# - /tmp/wsite: the workers' other packages and llama-cpp-python (as built on the CPU machine, or, with
#   `cuda`, built here from its carried sources with CUDA: what scripts/setup.sh does on a CUDA host);
# - /tmp/asite: the app side's DuckDB, on the app's path only: the workers run under /tmp/worker-python,
#   the same python3 without /tmp/asite, so they have the GPU packages alone (the worker boundary);
# - /tmp/llama.cpp: llama.cpp's converter; /tmp/g4tok: Gemma 4's tokenizer.
# Sets OUT (default /tmp/out) and starts recording nvidia-smi's memory and load into $OUT/gpu-usage.csv.
G=${1:-.gpu}
OUT=${OUT:-/tmp/out}
mkdir -p /tmp/gsite /tmp/wsite /tmp/asite /tmp/llama.cpp /tmp/g4tok "$OUT"
[ -f "$G/MANIFEST.txt" ] || { echo "$G is not a carry folder: make it with bash scripts/gpu_env.sh carry $G" >&2; return 1; }
tar xzf "$G/site.tgz" -C /tmp/gsite
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/wsite "$G"/wheels/*.whl 2>&1 | grep -v WARNING
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/asite "$G"/appwheels/*.whl 2>&1 | grep -v WARNING
tar xzf "$G/llama_cpp_pkg.tgz" -C /tmp/wsite
tar xzf "$G/converter.tgz" -C /tmp/llama.cpp
tar xJf "$G/g4tok.txz" -C /tmp/g4tok
if [ "${2:-}" = cuda ]; then
  # llama.cpp with CUDA offload, built as scripts/setup.sh builds it on a CUDA host (its CMAKE_ARGS), for
  # this card's architecture only; its libraries replace the CPU build's in the package folder
  t0=$(date +%s)
  mkdir -p /tmp/lcp-src && tar xzf "$G/llama_cpp_src.tgz" -C /tmp/lcp-src
  arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d '.')
  cmake -S /tmp/lcp-src/llama.cpp -B /tmp/lcp-build -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=ON \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_BUILD_COMMON=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_CURL=OFF > "$OUT/llama-cuda-build.log" 2>&1 \
  && cmake --build /tmp/lcp-build -j "$(nproc)" >> "$OUT/llama-cuda-build.log" 2>&1 \
  && find /tmp/lcp-build -name '*.so*' -exec cp -a {} /tmp/wsite/llama_cpp/lib/ \; \
  && export LD_LIBRARY_PATH=/tmp/wsite/llama_cpp/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
  && echo "llama.cpp built with CUDA (sm_$arch) in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/llama-cuda-build.log" \
  || { echo "llama.cpp's CUDA build failed: see llama-cuda-build.log; the CPU build stays" >&2; tail -n 30 "$OUT/llama-cuda-build.log" >&2; }
fi
cat > /tmp/worker-python <<'PY'
#!/bin/sh
PYTHONPATH=$(printf '%s' "$PYTHONPATH" | tr ':' '\n' | grep -v '^/tmp/asite$' | paste -sd: -) exec python3 "$@"
PY
chmod +x /tmp/worker-python
export PYTHONPATH=/tmp/gsite:/tmp/wsite:/tmp/asite VITUNE_LLAMA_CPP_DIR=/tmp/llama.cpp PYTHONUNBUFFERED=1 \
       HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1 OUT
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv -l 2 > "$OUT/gpu-usage.csv" 2>&1 &
SMI_PID=$!
