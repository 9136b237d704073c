"""A Ray job on a node that does not see the studio's home: the job's folder shipped there and its files back.

``python -m core.jobs.ray_ship JOB_DIR`` is the entrypoint ``core.jobs.ray_cluster`` submits when the setting
says the nodes share no filesystem with the studio (``ray_ship``). Ray has unpacked the job's inputs (its
``working_dir``: the job folder and the files its payload names under the studio's data folder, each under
``root/`` at its own absolute path) into the current directory; this puts each at its path on the node, runs the
worker there (``python -m core.worker JOB_DIR``, unchanged), and sends what the worker writes in the job folder
back to the studio's home while it runs (every second: status, metrics, the log, checkpoints, the adapter) and
once more when it ends, through a small actor placed on the Ray **head** node, which writes into the home there:
the studio's home must be on the head node (the studio runs there, or the head mounts its home).

Each file goes whole, by a temporary name and a rename, once it has stopped changing since the last pass (a log
or the metrics file: only its new bytes); in a checkpoint folder ``trainer_state.json`` goes last, so a
checkpoint that reached the home is whole (``core.training.runs.checkpoints`` looks for that file). A node lost
mid-job has sent the checkpoints it had finished: the run resumes from the last of them.

It imports Ray and the standard library only; the worker it runs imports no Ray.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]   # the studio's checkout: at the same path on every node
PASS_S = 1.0
APPENDED = ("worker.log", "metrics.jsonl")   # files the worker only appends to: sent by their new bytes


class HomeWriter:
    """Runs on the head node (a Ray actor): writes the files a job's node sends into the studio's home, only
    under ``home/data`` (a job's folder lies there)."""

    def __init__(self, home: str):
        self.root = Path(home).resolve() / "data"

    def _target(self, path: str) -> Path:
        target = Path(path)
        if not target.is_absolute() or ".." in target.parts or not str(target).startswith(str(self.root) + os.sep):
            raise ValueError(f"{path}: not under the studio's data folder {self.root}")
        return target

    def write(self, path: str, data: bytes, offset: int | None = None) -> int:
        target = self._target(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if offset is None:   # whole: by a temporary name and a rename
            tmp = target.with_name(f".{target.name}.ship-{os.getpid()}")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        else:                # the new bytes of an appended file
            with open(target, "r+b" if target.exists() else "wb") as fh:
                fh.seek(offset)
                fh.write(data)
                fh.truncate()
        return len(data)


def _ended(status: Path) -> bool:
    import json

    try:
        return json.loads(status.read_text(encoding="utf-8")).get("state") in ("succeeded", "failed", "cancelled")
    except (OSError, ValueError):
        return False


def unpack(here: Path) -> list[Path]:
    """Put each shipped file (``root/ABSOLUTE/PATH``) at its absolute path on this node. Returns them."""
    placed = []
    root = here / "root"
    for src in sorted(p for p in root.rglob("*") if p.is_file()):
        dest = Path("/") / src.relative_to(root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
        placed.append(dest)
    return placed


class Sender:
    """What changed in the job folder since the last pass, sent to the writer."""

    def __init__(self, job_dir: Path, writer):
        self.job_dir, self.writer = job_dir, writer
        self.sent: dict[Path, tuple] = {}       # path -> (size, mtime) sent
        self.seen: dict[Path, tuple] = {}       # path -> (size, mtime) at the last pass
        self.offsets: dict[Path, int] = {}

    def _order(self, files: list[Path]) -> list[Path]:
        # a checkpoint's trainer_state.json after the rest of its folder; status.json after everything
        return sorted(files, key=lambda p: (p.name == "status.json", p.name == "trainer_state.json", str(p)))

    def run_pass(self, final: bool = False) -> int:
        import ray

        files = [p for p in self.job_dir.rglob("*") if p.is_file() and ".ship-" not in p.name
                 and not p.name.endswith(".tmp") and ".tmp." not in p.name]
        calls = []
        for path in self._order(files):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            mark = (st.st_size, st.st_mtime_ns)
            previous, self.seen[path] = self.seen.get(path), mark
            whole_at_once = path.name in APPENDED or path.name == "status.json"   # status.json: replaced atomically
            if self.sent.get(path) == mark or (mark != previous and not final and not whole_at_once):
                continue   # sent already, or still changing: the next pass sends it
            if path.name == "status.json" and not final and _ended(path):
                continue   # the worker's end goes last of all, once every file it wrote has gone
            if path.name in APPENDED:
                start = self.offsets.get(path, 0)
                with open(path, "rb") as fh:
                    fh.seek(start)
                    data = fh.read()
                if not data:
                    self.sent[path] = mark
                    continue
                calls.append(self.writer.write.remote(str(path), data, start))
                self.offsets[path] = start + len(data)
            else:
                calls.append(self.writer.write.remote(str(path), path.read_bytes(), None))
            self.sent[path] = mark
            if path.name == "trainer_state.json" or path.name == "status.json":
                ray.get(calls)   # what comes before a checkpoint's state file (or the status) lands first
                calls = []
        ray.get(calls)
        return len(self.sent)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m core.jobs.ray_ship JOB_DIR", file=sys.stderr)
        return 2
    import ray

    job_dir = Path(argv[0])
    home = os.environ["VITUNE_HOME"]
    placed = unpack(Path.cwd())
    print(f"[ray_ship] {len(placed)} file(s) placed on this node under {home}", flush=True)
    ray.init(address="auto", logging_level="WARNING", log_to_driver=False)
    writer = ray.remote(num_cpus=0, resources={"node:__internal_head__": 0.001})(HomeWriter).remote(home)
    python = os.environ.get("VITUNE_SHIP_PYTHON") or sys.executable
    env = {k: v for k, v in os.environ.items() if k != "VITUNE_SHIP_PYTHON"}
    with open(job_dir / "worker.log", "ab") as log:
        worker = subprocess.Popen([python, "-m", "core.worker", str(job_dir)], cwd=str(REPO),
                                  env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    sender = Sender(job_dir, writer)
    while worker.poll() is None:
        sender.run_pass()
        time.sleep(PASS_S)
    sent = sender.run_pass(final=True)
    print(f"[ray_ship] the worker exited {worker.returncode}; {sent} file(s) sent to the studio's home", flush=True)
    return worker.returncode


if __name__ == "__main__":
    sys.exit(main())
