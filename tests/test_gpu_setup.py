"""Setup on a CUDA host, as far as a CPU machine allows: the detection picks the GPU path when
``nvidia-smi -L`` lists a GPU (a stand-in nvidia-smi here, since no GPU exists), the GPU set resolves
for Python 3.11 and 3.12 from wheels alone, and the workers' interpreter is recorded only after its
self-check passes."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from core import store
from core.jobs import supervisor
from tests import worker_env as env
from tests.conftest import REPO


def _detect(tmp_path, script: str | None) -> str:
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    if script is not None:
        (fake / "nvidia-smi").write_text("#!/bin/sh\n" + script)
        (fake / "nvidia-smi").chmod(0o755)
    path = os.pathsep.join([str(fake)] + [p for p in os.environ["PATH"].split(os.pathsep)
                                          if not (p and os.path.exists(os.path.join(p, "nvidia-smi")))])
    proc = subprocess.run(["bash", "scripts/gpu_env.sh", "detect"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PATH": path})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_a_host_without_nvidia_smi_is_a_cpu_host(tmp_path):
    assert _detect(tmp_path, None) == "cpu: no nvidia-smi on PATH"


def test_a_listed_gpu_picks_the_gpu_path(tmp_path):
    listing = "GPU 0: NVIDIA H200 (UUID: GPU-5d2c0f0e-0000-0000-0000-000000000000)"
    got = _detect(tmp_path, f'[ "$1" = "-L" ] && echo "{listing}"\n')
    assert got == f"gpu: 1 GPU(s): {listing}"
    two = _detect(tmp_path, f'echo "{listing}"; echo "GPU 1: NVIDIA H200 (UUID: GPU-1)"\n')
    assert two.startswith("gpu: 2 GPU(s): GPU 0: NVIDIA H200")


def test_nvidia_smi_without_a_device_is_a_cpu_host(tmp_path):
    assert _detect(tmp_path, 'echo "No devices were found"; exit 6\n') == "cpu: nvidia-smi lists no GPU (No devices were found)"


def test_setup_builds_the_gpu_environment_only_on_the_gpu_path():
    text = (REPO / "scripts" / "setup.sh").read_text()
    detect, build = text.index("gpu_env.sh detect"), text.index("gpu_env.sh build")
    assert detect < build and 'if [[ "$gpu" == gpu:* ]]; then' in text[detect:build]


@pytest.mark.extended
@pytest.mark.parametrize("python", ["3.11", "3.12"])
def test_the_gpu_set_resolves_from_wheels_alone(python):
    """pip install --dry-run --only-binary=:all: of requirements-gpu.txt for CPython 3.11/3.12 on x86-64
    Linux (needs PyPI: CI has it). Unsloth's bounds hold in what resolves."""
    proc = subprocess.run(["bash", "scripts/gpu_env.sh", "resolve", python], cwd=REPO, capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith(f"requirements-gpu.txt resolves for Python {python}: ")
    got = dict(item.split("==") for item in line.split(": ", 1)[1].split())
    assert got["unsloth"] == "2026.10.9" and got["transformers"] == "5.17.0" and got["trl"] == "1.15.0"
    assert got["datasets"].startswith("4.") and "bitsandbytes" in got and "torch" in got
    assert not {"duckdb", "streamlit", "plotly"} & set(got)   # the worker environment has no app side


def _cli(*args, home, extra_env=None):
    environ = {k: v for k, v in os.environ.items() if k != "VITUNE_WORKER_PYTHON"}
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO, capture_output=True, text=True,
                          env={**environ, "VITUNE_HOME": str(home), **(extra_env or {})}, timeout=900)


def test_the_workers_interpreter_is_recorded_after_its_self_check(home, worker_env, tmp_path, monkeypatch):
    shown = _cli("jobs", "worker-python", home=home)
    assert shown.returncode == 0 and shown.stdout.strip() == f"workers run under {sys.executable}"
    missing = _cli("jobs", "worker-python", str(tmp_path / "nope" / "python"), home=home)
    assert missing.returncode == 1 and "cannot be started" in missing.stderr and "nothing was recorded" in missing.stderr
    no_llama = env.build(tmp_path / "no-llama", without=env.APP_SIDE + ("llama_cpp", "llama_cpp_python"))
    refused = _cli("jobs", "worker-python", str(no_llama), home=home)
    assert refused.returncode == 1 and "export     CANNOT RUN: llama_cpp cannot be imported" in refused.stderr
    assert store.get_setting("worker_python") is None
    recorded = _cli("jobs", "worker-python", str(worker_env), home=home)
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stdout.strip().splitlines()[-1] == f"workers run under {worker_env}"
    assert store.get_setting("worker_python") == str(worker_env)
    audit = store.one("SELECT * FROM audit_log WHERE action = 'setting.changed' AND subject = 'worker_python'")
    assert json.loads(audit["detail"])["new"] == str(worker_env)
    monkeypatch.delenv("VITUNE_WORKER_PYTHON")
    assert supervisor.worker_python() == str(worker_env)   # the supervisor starts workers with it
    cleared = _cli("jobs", "worker-python", "--clear", home=home)
    assert cleared.returncode == 0 and store.get_setting("worker_python") is None
    assert shutil.which("bash")


@pytest.mark.extended
def test_the_carry_folder_is_built_from_the_projects_pins(tmp_path):
    """`bash scripts/gpu_env.sh carry DIR` (needs PyPI: CI has it): what a GPU box that can install nothing
    lacks, at the versions requirements-gpu.txt resolves to for CPython 3.12, small enough to travel."""
    import tarfile

    carry = tmp_path / "carry"
    proc = subprocess.run(["bash", "scripts/gpu_env.sh", "carry", str(carry)], cwd=REPO, capture_output=True,
                          text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    manifest = (carry / "MANIFEST.txt").read_text()
    pins = dict(p.split("==") for p in manifest.split("site.tgz: ", 1)[1].splitlines()[0].split())
    required = dict(line.split("==") for line in (REPO / "requirements-gpu.txt").read_text().splitlines()
                    if "==" in line and not line.startswith("#") and ";" not in line)
    for name in ("unsloth", "bitsandbytes", "trl", "datasets"):
        assert pins[name] == required[name], name
    with tarfile.open(carry / "site.tgz") as tar:
        names = tar.getnames()
    assert "./unsloth/__init__.py" in names and "./trl/__init__.py" in names and not any("/studio/" in n for n in names)
    apps = [w.name for w in (carry / "appwheels").iterdir()]
    duckdb_pin = next(line for line in (REPO / "requirements.txt").read_text().splitlines() if line.startswith("duckdb=="))
    assert len(apps) == 1 and apps[0].startswith(duckdb_pin.replace("==", "-") + "-") and "cp312" in apps[0]
    assert not any(w.name.startswith(("duckdb", "streamlit", "plotly")) for w in (carry / "wheels").iterdir())
    with tarfile.open(carry / "llama_cpp_src.tgz") as tar:
        src = tar.getnames()
    assert "llama.cpp/CMakeLists.txt" in src and any(n.startswith("llama.cpp/ggml/src/ggml-cuda/") for n in src)
    assert not any(n.startswith(("llama.cpp/models/", "llama.cpp/ggml/src/ggml-vulkan")) for n in src)
    total = sum(f.stat().st_size for f in carry.rglob("*") if f.is_file())
    assert total < 60 * 2**20, total   # the device tool carries 64 MiB in all, the checkout included
