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
#   bash scripts/gpu_env.sh carry [DIR]          the carry folder (default .gpu) for a GPU box that already has
#                                                torch, transformers and peft but can install nothing (the
#                                                lent H200/H100): what it lacks of the GPU set, for CPython
#                                                3.12, at the versions requirements-gpu.txt resolves to; the
#                                                DuckDB wheel for the app side; llama-cpp-python as built here
#                                                and its sources for a CUDA build there; llama.cpp's converter;
#                                                Gemma 4's tokenizer. Unpacked there by bench/device/env.sh.
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
  carry)
    dir=${2:-.gpu}
    pyver=${CARRY_PYVER:-3.12}
    # what the lent GPU machine's image lacks of requirements-gpu.txt (docs/gpu.md, ../shared/gpu/NOTES.md):
    # the Unsloth stack and what datasets needs beyond the image; the rest of the set is there already
    missing=${CARRY_MISSING:-"unsloth unsloth-zoo cut-cross-entropy bitsandbytes trl datasets dill multiprocess fsspec"}
    worker_extra=${CARRY_WORKER:-"rapidfuzz gguf diskcache pypdf python-docx"}
    [ -x .venv/bin/python ] || { echo "run scripts/setup.sh first: the carry folder takes llama.cpp from .venv" >&2; exit 1; }
    pip=$(resolver)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    echo "==> resolving requirements-gpu.txt for CPython $pyver (wheels only)"
    # shellcheck disable=SC2046
    "$pip" install --dry-run --quiet --disable-pip-version-check --ignore-installed --only-binary=:all: \
      --python-version "$pyver" --implementation cp $(platforms) --target "$tmp/none" \
      $(pip_source) -r requirements-gpu.txt --report "$tmp/report.json" 2> >(grep -v "^WARNING: Location" >&2)
    pins() {  # NAME==VERSION of each name given: as resolved, else (llama-cpp-python's needs) as in .venv
      .venv/bin/python - "$tmp/report.json" "$@" <<'PY'
import importlib.metadata as meta, json, re, sys
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
got = {norm(i["metadata"]["name"]): i["metadata"]["version"] for i in json.load(open(sys.argv[1]))["install"]}
out = []
for name in sys.argv[2:]:
    try:
        out.append(f"{name}=={got.get(norm(name)) or meta.version(name)}")
    except meta.PackageNotFoundError:
        sys.exit(f"{name}: neither in the resolved GPU set nor installed in .venv")
print(" ".join(out))
PY
    }
    fetch() {  # wheels of the given pins for CPython $pyver on x86-64 Linux into $1 (pip's notes on absent index folders dropped)
      local dest=$1; shift
      mkdir -p "$dest"
      # shellcheck disable=SC2046
      "$pip" download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --python-version "$pyver" \
        --implementation cp $(platforms) $(pip_source) -d "$dest" "$@" 2> >(grep -v "^WARNING: Location" >&2)
    }
    rm -rf "$dir" && mkdir -p "$dir/wheels" "$dir/appwheels"
    site_pins=$(pins $missing) || exit 1
    # shellcheck disable=SC2086
    set -- $site_pins
    echo "==> the GPU packages the machine lacks: $*"
    fetch "$tmp/site-wheels" "$@"
    mkdir -p "$tmp/site"
    for w in "$tmp"/site-wheels/*.whl; do python3 -m zipfile -e "$w" "$tmp/site"; done
    rm -rf "$tmp/site/studio"                                  # Unsloth Studio's web UI: not needed
    find "$tmp/site/bitsandbytes" -name 'libbitsandbytes_*.so' \
      ! -name '*cuda13*' ! -name '*cpu*' -delete              # the machine's CUDA 13 and the CPU fallback
    tar czf "$dir/site.tgz" -C "$tmp/site" .
    worker_pins=$(pins $worker_extra) || exit 1
    # shellcheck disable=SC2086
    set -- $worker_pins
    echo "==> the workers' other packages: $*"
    fetch "$dir/wheels" "$@"
    duckdb=$(grep -E '^duckdb==' requirements.txt)
    echo "==> the app side's $duckdb"
    fetch "$dir/appwheels" "$duckdb"
    echo "==> llama-cpp-python $LCP_VERSION as built here (CPU), and its sources for a CUDA build there"
    pkg=$(.venv/bin/python -c "import llama_cpp, os; print(os.path.dirname(llama_cpp.__file__))")
    mkdir -p "$tmp/lcp" && cp -a "$pkg" "$tmp/lcp/"
    (cd "$tmp/lcp/llama_cpp/lib" && for f in *.so.*; do  # three identical copies of each library: keep one
      [ -f "$f" ] || continue; base=${f%%.so.*}.so; [ -f "$base" ] && cmp -s "$f" "$base" && ln -sf "$base" "$f"; done) || true
    tar czf "$dir/llama_cpp_pkg.tgz" -C "$tmp/lcp" llama_cpp
    src=.cache/llama_cpp_python-$LCP_VERSION
    v=$src/vendor/llama.cpp
    # llama.cpp's library alone (no tools, tests, examples, docs or models), with the CPU and CUDA backends
    # only: what a CUDA build there needs (bench/device/env.sh DIR cuda)
    tar czf "$dir/llama_cpp_src.tgz" -C "$src/vendor" \
      $(for d in models tools tests docs examples app benches pocs ci skills media scripts gguf-py vendor/cpp-httplib common \
                 ggml/src/ggml-{vulkan,sycl,metal,cann,musa,opencl,webgpu,zdnn,zendnn,hip,rpc,blas,hexagon,et,openvino,virtgpu}; do
          echo "--exclude=llama.cpp/$d"; done) --exclude='.git*' llama.cpp
    tar czf "$dir/converter.tgz" -C "$v" convert_hf_to_gguf.py gguf-py $( [ -d "$v/conversion" ] && echo conversion )
    echo "==> Gemma 4's tokenizer (bench/gemma4_random.py, checked against llama.cpp's reference tokenizations)"
    .venv/bin/python bench/gemma4_random.py "$tmp/g4tok" --tokenizer-only
    tar cJf "$dir/g4tok.txz" -C "$tmp/g4tok" .
    {
      echo "made $(date -u +%FT%TZ) by scripts/gpu_env.sh carry, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
      echo "site.tgz: $site_pins"
      echo "wheels/: $(ls "$dir/wheels" | tr '\n' ' ')"
      echo "appwheels/: $(ls "$dir/appwheels" | tr '\n' ' ')"
      echo "llama_cpp_pkg.tgz, llama_cpp_src.tgz: llama-cpp-python $LCP_VERSION"
    } > "$dir/MANIFEST.txt"
    du -sh "$dir" "$dir"/* | sed 's/^/    /'
    echo "carry $dir with the call (device tool: carry [\"$dir\"]) and start with: source bench/device/env.sh $dir"
    ;;
  *)
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 2
    ;;
esac
