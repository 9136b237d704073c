#!/usr/bin/env bash
# Install what is missing, idempotently: the virtual environment, the pinned packages, llama.cpp
# (from the llama-cpp-python sdist, which vendors llama.cpp's converter), the default model, and on a
# host where `nvidia-smi -L` lists a GPU, the GPU worker environment (scripts/gpu_env.sh).
# Offline: with a folder of wheels in ./wheels (or $VITUNE_WHEELS), every package comes from there.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
LCP_VERSION=0.3.36
LCP_DIR=.cache/llama_cpp_python-$LCP_VERSION
WHEELS=${VITUNE_WHEELS:-wheels}
SOURCE=()
if [ -d "$WHEELS" ]; then
  echo "==> installing from the wheels in $WHEELS (offline)"
  SOURCE=(--no-index --find-links "$WHEELS")
fi
pip_quiet() { "$@" 2>&1 | grep -v "^WARNING: Location" || true; }

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $PY"
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python

echo "==> installing pinned packages (requirements.txt)"
pip_quiet "$VPY" -m pip install --quiet --disable-pip-version-check "${SOURCE[@]}" -r requirements.txt
"$VPY" -c "import torch, transformers, trl, peft, streamlit, duckdb" || { echo "package install failed" >&2; exit 1; }

if [ ! -f "$LCP_DIR/vendor/llama.cpp/convert_hf_to_gguf.py" ]; then
  echo "==> fetching the llama-cpp-python $LCP_VERSION sdist (llama.cpp's converter and quantizer)"
  mkdir -p .cache
  pip_quiet "$VPY" -m pip download --quiet --no-deps --no-binary :all: "${SOURCE[@]}" "llama-cpp-python==$LCP_VERSION" -d .cache
  tar -xzf ".cache/llama_cpp_python-$LCP_VERSION.tar.gz" -C .cache
fi
lcp_wheel() { ls .cache/wheels/llama_cpp_python-"$LCP_VERSION"-*.whl 2>/dev/null | head -n 1 || true; }
build_lcp_wheel() {  # built once, installed into .venv and (on a GPU host) into .venv-gpu
  if [ -z "$(lcp_wheel)" ]; then
    echo "==> building llama-cpp-python $LCP_VERSION (about 5–10 minutes on 2 cores, once)"
    mkdir -p .cache/wheels
    CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF" pip_quiet "$VPY" -m pip wheel --quiet --no-deps "./$LCP_DIR" -w .cache/wheels
    [ -n "$(lcp_wheel)" ] || { echo "llama-cpp-python build failed" >&2; exit 1; }
  fi
}
if ! "$VPY" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LCP_VERSION')" 2>/dev/null; then
  build_lcp_wheel
  pip_quiet "$VPY" -m pip install --quiet --disable-pip-version-check "${SOURCE[@]}" "$(lcp_wheel)"
  "$VPY" -c "import llama_cpp" || { echo "llama-cpp-python install failed" >&2; exit 1; }
fi

echo "==> compiling the interface's catalogues (locale/, Vietnamese and English)"
"$VPY" -m core i18n compile >/dev/null

echo "==> preparing the default model (Gemma 3 270M from PyPI)"
"$VPY" -m core models fetch-default

gpu=$(bash scripts/gpu_env.sh detect)
echo "==> this host: $gpu"
if [[ "$gpu" == gpu:* ]]; then
  build_lcp_wheel
  bash scripts/gpu_env.sh build
fi
