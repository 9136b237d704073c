#!/usr/bin/env bash
# The GPU worker environment, .venv-gpu: the package set of requirements-gpu.txt, which every worker
# job runs under on a CUDA host. scripts/setup.sh calls `detect` and, on a GPU host, `build`.
#
#   bash scripts/gpu_env.sh detect               "gpu: …" when `nvidia-smi -L` lists a GPU, else "cpu: why"
#   bash scripts/gpu_env.sh build                make .venv-gpu, check it (core.worker --self-check) and
#                                                record it as the workers' interpreter
#   bash scripts/gpu_env.sh resolve [PYVER]      check that requirements-gpu.txt resolves for CPython PYVER
#                                                on x86-64 Linux, wheels only (pip install --dry-run)
#   bash scripts/gpu_env.sh download DIR [PYVER] on a connected machine: every wheel an offline GPU box
#                                                needs (both package sets, pip, llama-cpp-python's sdist)
#
# Offline: when a folder of wheels exists (./wheels, or $VITUNE_WHEELS), every install in setup.sh and
# here reads from it alone (pip --no-index --find-links). Make it with `download` on a connected
# machine of the same architecture, carry it to the box, and run the README's two commands there.
set -euo pipefail
cd "$(dirname "$0")/.."

PIP_VERSION=25.3
LCP_VERSION=0.3.36
WHEELS=${VITUNE_WHEELS:-wheels}
GPU_VENV=${VITUNE_GPU_VENV:-.venv-gpu}

pip_source() {  # where packages come from: the wheel folder when there is one, else the registry
  if [ -d "$WHEELS" ]; then echo "--no-index --find-links $WHEELS"; fi
}

platforms() {
  local n out=""
  for n in $(seq 17 39); do out="$out --platform manylinux_2_${n}_x86_64"; done
  echo "$out --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform linux_x86_64"
}

resolver() {  # a pip that resolves for another Python version (pip 23 checks Requires-Python against its own)
  local venv=.cache/pip-$PIP_VERSION
  if [ ! -x "$venv/bin/pip" ]; then
    mkdir -p .cache
    "${PYTHON:-python3}" -m venv "$venv"
    # shellcheck disable=SC2046
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $(pip_source) "pip==$PIP_VERSION" >&2
  fi
  echo "$venv/bin/pip"
}

case "${1:-}" in
  detect)
    if ! command -v nvidia-smi >/dev/null 2>&1; then
      echo "cpu: no nvidia-smi on PATH"; exit 0
    fi
    listed=$(timeout 30 nvidia-smi -L 2>&1 || true)
    gpus=$(printf '%s\n' "$listed" | grep -c '^GPU [0-9]' || true)
    if [ "$gpus" -gt 0 ]; then
      echo "gpu: $gpus GPU(s): $(printf '%s\n' "$listed" | grep '^GPU [0-9]' | head -n 1)"
    else
      echo "cpu: nvidia-smi lists no GPU ($(printf '%s' "$listed" | head -n 1))"
    fi
    ;;
  build)
    PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
    if [ ! -x "$GPU_VENV/bin/python" ]; then
      echo "==> creating $GPU_VENV (the GPU worker environment) with $PY"
      "$PY" -m venv "$GPU_VENV"
    fi
    VPY=$GPU_VENV/bin/python
    # shellcheck disable=SC2046
    "$VPY" -m pip install --quiet --disable-pip-version-check $(pip_source) "pip==$PIP_VERSION" 2>&1 | grep -v "^WARNING: Location" || true
    echo "==> installing the GPU set (requirements-gpu.txt) into $GPU_VENV"
    # shellcheck disable=SC2046
    "$VPY" -m pip install --quiet --disable-pip-version-check $(pip_source) -r requirements-gpu.txt 2>&1 | grep -v "^WARNING: Location" || true
    if ! "$VPY" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LCP_VERSION')" 2>/dev/null; then
      wheel=$(ls .cache/wheels/llama_cpp_python-"$LCP_VERSION"-*.whl 2>/dev/null | head -n 1 || true)
      if [ -z "$wheel" ]; then echo "llama-cpp-python's wheel is missing from .cache/wheels: run scripts/setup.sh" >&2; exit 1; fi
      # shellcheck disable=SC2046
      "$VPY" -m pip install --quiet --disable-pip-version-check $(pip_source) "$wheel"
    fi
    echo "==> checking the GPU worker environment"
    PYTHONPATH=$PWD "$VPY" -m core.worker --self-check
    .venv/bin/python -m core jobs worker-python "$PWD/$VPY"
    ;;
  resolve)
    pyver=${2:-3.12}
    pip=$(resolver)
    report=$(mktemp)
    # shellcheck disable=SC2046
    "$pip" install --dry-run --quiet --disable-pip-version-check --ignore-installed --only-binary=:all: \
      --python-version "$pyver" --implementation cp $(platforms) --target "$(mktemp -d)" \
      $(pip_source) -r requirements-gpu.txt --report "$report" 2> >(grep -v "^WARNING: Location" >&2)
    python3 -c "import json, sys; r = json.load(open(sys.argv[1])); print(f'requirements-gpu.txt resolves for Python {sys.argv[2]}: ' + ' '.join(sorted(i['metadata']['name'].lower() + '==' + i['metadata']['version'] for i in r['install'])))" "$report" "$pyver"
    rm -f "$report"
    ;;
  download)
    dir=${2:?usage: gpu_env.sh download DIR [PYVER]}
    pyver=${3:-3.11}
    pip=$(resolver)
    mkdir -p "$dir"
    for req in requirements-gpu.txt requirements.txt requirements-test.txt; do
      echo "==> wheels of $req for Python $pyver"
      # shellcheck disable=SC2046
      "$pip" download --quiet --disable-pip-version-check --only-binary=:all: --python-version "$pyver" \
        --implementation cp $(platforms) -d "$dir" -r "$req"
    done
    "$pip" download --quiet --disable-pip-version-check --only-binary=:all: -d "$dir" "pip==$PIP_VERSION"
    "$pip" download --quiet --disable-pip-version-check --no-deps --no-binary :all: -d "$dir" "llama-cpp-python==$LCP_VERSION"
    echo "$(ls "$dir" | wc -l) files in $dir: carry it to the GPU box as ./wheels and run bash scripts/studio.sh there"
    ;;
  *)
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 2
    ;;
esac
