"""The worker boundary and the layout: a worker imports only worker-side code and runs under an
interpreter without DuckDB, streamlit or plotly; the job queue imports no job kind; ``core/`` has no
import circles. (Every job the test suite starts runs under such an interpreter: conftest's
``worker_env``; ``test_pipeline.py`` and ``test_generate.py`` check that each kind did.)"""
from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

from core.jobs import kinds
from tests import worker_env as env

REPO = Path(__file__).resolve().parent.parent
CORE = REPO / "core"
APP_SIDE_CORE = {"core.store", "core.cli", "core.charts", "core.jobs.queue", "core.jobs.supervisor"}
APP_SIDE_PACKAGES = {"duckdb", "streamlit", "plotly"}


def _modules() -> dict[str, Path]:
    out = {}
    for f in CORE.rglob("*.py"):
        name = ".".join(f.relative_to(REPO).with_suffix("").parts)
        out[name[: -len(".__init__")] if name.endswith(".__init__") else name] = f
    return out


MODULES = _modules()


def _imports(name: str) -> tuple[set[str], set[str]]:
    """(modules of core, other top-level packages) that ``name`` imports anywhere in its file, at
    module level or inside functions."""
    f = MODULES[name]
    pkg = name if f.name == "__init__.py" else name.rsplit(".", 1)[0]
    core_deps, others = set(), set()
    for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            if t == "core" or t.startswith("core."):
                while t and t not in MODULES:
                    t = t.rsplit(".", 1)[0] if "." in t else ""
                if t and t != name:
                    core_deps.add(t)
            elif t:
                others.add(t.split(".")[0])
    return core_deps, others


def _closure(start: str) -> tuple[set[str], set[str]]:
    seen, packages, todo = set(), set(), [start]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        deps, others = _imports(m)
        packages |= others
        # importing a.b.c runs a/__init__ and a/b/__init__ too
        parents = {".".join(m.split(".")[:i]) for i in range(1, m.count(".") + 1)}
        todo += [d for d in deps | parents if d in MODULES]
    return seen, packages


@pytest.mark.parametrize("kind", sorted(kinds.KINDS))
def test_a_kinds_worker_side_reaches_nothing_of_the_app_side(kind):
    reached, packages = _closure(kinds.KINDS[kind].worker)
    assert not reached & APP_SIDE_CORE, f"{kind}: worker-side code imports {sorted(reached & APP_SIDE_CORE)}"
    assert not packages & APP_SIDE_PACKAGES, f"{kind}: worker-side code imports {sorted(packages & APP_SIDE_PACKAGES)}"
    assert kinds.KINDS[kind].app not in reached  # the worker side never needs the app side of its own kind


def test_the_job_queue_and_supervisor_import_no_job_kind():
    kind_modules = {k.worker for k in kinds.KINDS.values()} | {k.app for k in kinds.KINDS.values()}
    for start in ("core.jobs.queue", "core.jobs.supervisor", "core.jobs.worker"):
        reached, _ = _closure(start)
        assert not reached & kind_modules, f"{start} imports {sorted(reached & kind_modules)}"


def _cycles() -> list[list[str]]:
    graph = {m: {d for d in _imports(m)[0] if d in MODULES} for m in MODULES}
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_core_has_no_import_circles():
    assert _cycles() == []


def test_the_cycle_finder_finds_a_circle(monkeypatch):
    """The check above can fail: two modules that import each other are reported."""
    real = _imports

    def fake(name):
        deps, others = real(name)
        if name == "core.paths":
            deps = deps | {"core.store.connection"}   # core.store.connection imports core.paths
        return deps, others

    monkeypatch.setattr(f"{__name__}._imports", fake)
    assert ["core.paths", "core.store.connection"] in _cycles()


def test_every_stage_has_its_folder():
    folders = {p.name for p in CORE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert {"datasets", "training", "evaluation", "deploy", "jobs"} <= folders
    for kind in kinds.KINDS.values():   # a kind's two sides live in the same stage
        assert kind.worker.split(".")[1] == kind.app.split(".")[1], kind


def test_the_worker_environment_cannot_import_the_app_side(worker_env):
    for module in sorted(APP_SIDE_PACKAGES):
        proc = subprocess.run([str(worker_env), "-c", f"import {module}"], capture_output=True, text=True)
        assert proc.returncode != 0 and f"No module named '{module}'" in proc.stderr
    proc = subprocess.run([str(worker_env), "-c", "import torch, transformers, peft, trl, llama_cpp, gguf"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_self_check_imports_every_kind_under_the_worker_environment(worker_env):
    proc = subprocess.run([str(worker_env), "-m", "core.worker", "--self-check"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith(f"worker interpreter: {worker_env}")
    assert lines[-1] == "kinds: train evaluate export preflight quant_cost generate judge retention inference"
    assert [line.split()[0] for line in lines[1:-1]] == list(kinds.KINDS)


def test_self_check_names_a_kind_whose_packages_are_missing(tmp_path):
    python = env.build(tmp_path / "no-llama", without=env.APP_SIDE + ("llama_cpp", "llama_cpp_python"))
    proc = subprocess.run([str(python), "-m", "core.worker", "--self-check"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1
    by_kind = {line.split()[0]: line for line in proc.stdout.splitlines()[1:-1]}
    assert "CANNOT RUN: llama_cpp cannot be imported" in by_kind["export"]
    assert "CANNOT RUN: llama_cpp cannot be imported" in by_kind["preflight"]
    assert "CANNOT RUN: llama_cpp cannot be imported" in by_kind["quant_cost"]
    assert "ok" in by_kind["train"] and "ok (without llama_cpp.server)" in by_kind["generate"]
    assert proc.stdout.strip().splitlines()[-1] == "3 problem(s)"
