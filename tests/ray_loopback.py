"""A real Ray cluster on loopback for the tests: a head and more nodes, each its own ``ray start --block`` process
(its own process tree, its own temp dir, its own ports), as two boxes would run them. ``kill_node`` takes a node
down the way a box that loses power does (SIGKILL to the node's every process: raylet, agents, workers, and the
job processes they started); ``stop`` ends every process any node started, whatever happened (``ray stop`` would
end every Ray process on the machine, not only this cluster's).

Used by tests/test_ray_cluster.py; ``python tests/ray_loopback.py`` starts one by hand and waits (Ctrl-C ends it).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).parent / "ray")
# the head notices a lost node within seconds, not Ray's default ~30 s (its health checks, Ray's own settings)
FAST_HEALTH = {"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "1000",
               "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "3"}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, name: str, proc: subprocess.Popen, temp_dir: Path, log: Path):
        self.name, self.proc, self.temp_dir, self.log = name, proc, temp_dir, log
        self.node_id: str | None = None
        self.seen: set[int] = set()   # every pid of its tree seen so far (a job process outlives its parent)

    def tree(self) -> list[psutil.Process]:
        found = []
        try:
            root = psutil.Process(self.proc.pid)
            found = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
        for p in psutil.process_iter(["pid", "cmdline"]):   # a process of its temp dir, wherever it hangs
            try:
                if str(self.temp_dir) in " ".join(p.info["cmdline"] or []):
                    found.append(p)
            except psutil.Error:
                continue
        self.seen |= {p.pid for p in found}
        return found


class LoopbackCluster:
    def __init__(self, root: Path | None = None):
        # short paths: Ray's Unix sockets live under the temp dir (a socket path is at most 107 bytes)
        self.root = Path(tempfile.mkdtemp(prefix="vray-", dir="/tmp")) if root is None else root
        self.nodes: list[Node] = []
        self.gcs_port = _free_port()
        self.dashboard_port = _free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"

    def _start(self, name: str, args: list[str], env_extra: dict | None = None, hide: tuple = ()) -> Node:
        temp_dir = self.root / name
        temp_dir.mkdir(parents=True, exist_ok=True)
        log = self.root / f"{name}.log"
        env = {**os.environ, **FAST_HEALTH, **(env_extra or {}), "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS", None)
        ports = ["--node-manager-port", str(_free_port()), "--object-manager-port", str(_free_port()),
                 "--dashboard-agent-listen-port", str(_free_port()), "--dashboard-agent-grpc-port", str(_free_port()),
                 "--metrics-export-port", str(_free_port()), "--runtime-env-agent-port", str(_free_port())]
        cmd = [RAY, "start", "--block", "--disable-usage-stats", "--node-ip-address", "127.0.0.1",
               "--temp-dir", str(temp_dir), "--object-store-memory", str(100 * 2**20), "--num-gpus", "0", *ports, *args]
        if hide:   # a box that does not see these folders: its own mount namespace, an empty tmpfs over each
            import shlex

            mounts = " && ".join(f"mount -t tmpfs vray-hidden {shlex.quote(str(p))}" for p in hide)
            cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", f"{mounts} && exec {shlex.join(cmd)}"]
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, cwd=str(REPO), env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        node = Node(name, proc, temp_dir, log)
        self.nodes.append(node)
        return node

    def start_head(self, timeout: float = 180) -> Node:
        head = self._start("head", ["--head", "--port", str(self.gcs_port), "--num-cpus", "1",
                                    "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                                    "--dashboard-port", str(self.dashboard_port),
                                    "--ray-client-server-port", str(_free_port())])
        self._wait(lambda: self._alive_nodes(), timeout, head, "the head's Job API")
        head.node_id = self._alive_nodes()[0]["node_id"]
        return head

    def add_node(self, resources: dict, timeout: float = 180, hide: tuple = ()) -> Node:
        """A node that joins the head; ``hide``: folders it does not see (each an empty tmpfs in its own mount
        namespace, as on a box that does not mount them)."""
        before = {n["node_id"] for n in self._alive_nodes()}
        node = self._start(f"node{len(self.nodes)}", ["--address", f"127.0.0.1:{self.gcs_port}", "--num-cpus", "1",
                                                      "--resources", json.dumps(resources)], hide=tuple(hide))
        self._wait(lambda: [n for n in self._alive_nodes() if n["node_id"] not in before], timeout, node,
                   "the new node to join")
        node.node_id = next(n["node_id"] for n in self._alive_nodes() if n["node_id"] not in before)
        node.tree()
        return node

    def _alive_nodes(self) -> list[dict]:
        """The cluster's live nodes, asked of the head's dashboard (Ray's state API); [] while it does not answer."""
        try:
            from ray.util.state import list_nodes

            return [{"node_id": n.node_id, "resources": n.resources_total}
                    for n in list_nodes(address=self.address, filters=[("state", "=", "ALIVE")], timeout=10,
                                        raise_on_missing_output=False)]
        except Exception:
            return []

    def node_alive(self, node: Node) -> bool:
        return any(n["node_id"] == node.node_id for n in self._alive_nodes())

    def _wait(self, until, timeout: float, node: Node, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            if node.proc.poll() is not None:
                raise AssertionError(f"ray start ({node.name}) exited {node.proc.returncode}:\n"
                                     + node.log.read_text(errors="replace")[-3000:])
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not come in {timeout:g} s:\n"
                                     + node.log.read_text(errors="replace")[-3000:])
            time.sleep(0.5)

    def kill_node(self, node: Node) -> list[int]:
        """SIGKILL every process of the node at once (a box that loses power). Returns their pids."""
        procs = node.tree()
        for p in procs:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=30)
        node.proc.wait(30)
        return [p.pid for p in procs]

    def stop(self) -> list[str]:
        """End every node's processes (SIGTERM to ``ray start --block``, which stops its node; SIGKILL to what is
        left after 20 s). Returns what had to be killed."""
        leftovers = []
        for node in reversed(self.nodes):
            node.tree()
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for node in self.nodes:
            try:
                node.proc.wait(max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for node in self.nodes:
            rest = node.tree() + [psutil.Process(pid) for pid in node.seen if psutil.pid_exists(pid)]
            for p in rest:
                try:
                    if p.status() != psutil.STATUS_ZOMBIE and p.pid != os.getpid():
                        leftovers.append(f"{node.name}: {p.pid} {' '.join(p.cmdline())[:120]}")
                        p.kill()
                except psutil.Error:
                    pass
            if node.proc.poll() is None:
                node.proc.kill()
                node.proc.wait(10)
        import shutil

        shutil.rmtree(self.root, ignore_errors=True)
        return leftovers


if __name__ == "__main__":
    cluster = LoopbackCluster()
    try:
        head = cluster.start_head()
        node = cluster.add_node({"vitune_worker": 1})
        print(f"Ray on loopback: {cluster.address} (head {head.node_id}, node {node.node_id}); Ctrl-C stops it",
              flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        print("left over:", cluster.stop())
