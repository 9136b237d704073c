"""By hand (not collected by pytest: CI's time): a *shipped* training (a node that does not see the studio's
home) whose node is lost after a checkpoint reached the home fails, resumes by itself and finishes on a new
node. ``flock /work/heavy.lock .venv/bin/python tests/ray_ship_lost_node.py`` (docs/scale.md says when it ran).
The shared layout's lost node is tests/test_ray_cluster.py's slow test."""
import json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.chdir(REPO)
from tests.ray_loopback import LoopbackCluster
from tests import worker_env

t0 = time.time()
home = Path(tempfile.mkdtemp(prefix="shipkill-", dir="/tmp"))
wpy = worker_env.build(Path(tempfile.mkdtemp(prefix="wenv-", dir="/tmp")) / "venv")
env = {**os.environ, "VITUNE_HOME": str(home), "VITUNE_SLOTS": "cpu", "VITUNE_WORKER_PYTHON": str(wpy)}
def cli(*a, check=True):
    p = subprocess.run([sys.executable, "-m", "core", *a], env=env, capture_output=True, text=True)
    if check and p.returncode: raise SystemExit(p.stderr)
    return p.stdout
c = LoopbackCluster()
sup = None
try:
    c.start_head()
    n1 = c.add_node({"vitune_ship": 1}, hide=(home,))
    cli("dataset", "import-samples")
    version = next(v["id"] for v in json.loads(cli("dataset", "list", "--json")) if v["name"] == "sample-ghichu-noibo")
    print(cli("jobs", "ray", c.address, "--resource", "vitune_ship", "--ship"))
    sup = subprocess.Popen([sys.executable, "-m", "core", "jobs", "supervise", "--interval", "1"], env=env,
                           stdout=open(home / "supervise.log", "w"), stderr=subprocess.STDOUT)
    q = json.loads(cli("train", "--dataset", version, "--preset", "quick test (CPU, 20 steps)", "--max-steps", "8", "--no-wait", "--json"))
    run_dir = home / "data" / "runs" / q["run"]
    while not (list(run_dir.glob("checkpoints/checkpoint-*/trainer_state.json")) and
               sum(1 for _ in open(run_dir / "metrics.jsonl")) >= 3 if (run_dir / "metrics.jsonl").exists() else False):
        time.sleep(0.3)
    print("in the home before the kill:", sorted(p.parent.name for p in run_dir.glob("checkpoints/*/trainer_state.json")), time.time() - t0, flush=True)
    c.kill_node(n1)
    os.environ["VITUNE_HOME"] = str(home)
    from core.jobs import queue
    while queue.get_job(q["job"])["state"] == "running":
        time.sleep(0.5)
    print("failed:", queue.get_job(q["job"])["error"], flush=True)
    n2 = c.add_node({"vitune_ship": 1}, hide=(home,))
    from core.training import runs
    while True:
        j = queue.get_job(runs.get_run(q["run"])["job_id"])
        if j["state"] in ("succeeded", "failed", "cancelled"): break
        time.sleep(1)
    print("resumed job:", j["id"], j["state"], j["error"], j["ray_node"] == n2.node_id, j["config"].get("resume_from"), flush=True)
    print("steps:", list(runs.run_metrics(q["run"])["step"]), "adapter:", sorted(os.listdir(runs.get_run(q["run"])["adapter_dir"])), flush=True)
    print("seconds:", round(time.time() - t0, 1))
finally:
    if sup: sup.terminate(); sup.wait(30)
    print("left:", c.stop())
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(wpy.parents[2], ignore_errors=True)
