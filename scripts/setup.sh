#!/usr/bin/env bash
# Install what is missing, idempotently: the virtual environment, the pinned packages, llama.cpp
# (from the llama-cpp-python sdist, which vendors llama.cpp's converter) and the default model.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
LCP_VERSION=0.3.36
LCP_DIR=.cache/llama_cpp_python-$LCP_VERSION

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $PY"
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python

echo "==> installing pinned packages (requirements.txt)"
"$VPY" -m pip install --quiet --disable-pip-version-check -r requirements.txt 2>&1 | grep -v "^WARNING: Location" || true
"$VPY" -c "import torch, transformers, trl, peft, streamlit, duckdb" || { echo "package install failed" >&2; exit 1; }

if [ ! -f "$LCP_DIR/vendor/llama.cpp/convert_hf_to_gguf.py" ]; then
  echo "==> fetching the llama-cpp-python $LCP_VERSION sdist (llama.cpp's converter and quantizer)"
  mkdir -p .cache
  "$VPY" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$LCP_VERSION" -d .cache 2>&1 | grep -v "^WARNING: Location" || true
  tar -xzf ".cache/llama_cpp_python-$LCP_VERSION.tar.gz" -C .cache
fi
if ! "$VPY" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LCP_VERSION')" 2>/dev/null; then
  echo "==> building llama-cpp-python $LCP_VERSION (about 5–10 minutes on 2 cores, once)"
  CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF" "$VPY" -m pip install --quiet "./$LCP_DIR" 2>&1 | grep -v "^WARNING: Location" || true
  "$VPY" -c "import llama_cpp" || { echo "llama-cpp-python build failed" >&2; exit 1; }
fi

echo "==> preparing the default model (Gemma 3 270M from PyPI)"
"$VPY" -m core models fetch-default
