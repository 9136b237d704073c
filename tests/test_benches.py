"""Every bench keeps running on today's code: each one's smallest CPU pass, run for real in its own process
(CI's slow set), so an API change that breaks a bench breaks CI instead of the next GPU call. The GPU
benches' code paths that a CPU can take are taken here too: bench/gpu_pipeline.py runs its whole pipeline
on a tiny model with Gemma 4 E4B's structure, laid out like the hub's checkpoint (towers and processor
included), through the studio's own jobs — what a team's first real Gemma 4 run meets, offline.

Default set: Gemma 4's published shapes counted part by part (``vram.gemma4_parts``) against the model
transformers builds for each (on the meta device: no weights are made), and the device scripts' syntax."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

BENCH = REPO / "bench"


def _bench(*args: str, timeout: float = 1800, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.parametrize("shape", ["e2b", "e4b", "26b-a4b", "31b"])
def test_gemma4_shapes_are_counted_part_by_part(shape):
    """The memory estimate's parameter count of each published shape equals what transformers builds."""
    sys.path.insert(0, str(BENCH))
    import gemma4_random
    import torch
    from transformers import Gemma4ForConditionalGeneration

    from core.training import vram

    config = gemma4_random.shape_config(shape)
    with torch.device("meta"):
        model = Gemma4ForConditionalGeneration(config)
    built_lm = sum(p.numel() for n, p in model.named_parameters() if ".language_model." in f".{n}")
    built_towers = sum(p.numel() for n, p in model.named_parameters() if ".language_model." not in f".{n}")
    parts = vram.gemma4_parts(json.loads(config.to_json_string()))
    counted_lm = parts["linear"] + parts["embed"] + parts["per_layer_embed"] + parts["experts"]
    assert abs(counted_lm / built_lm - 1) < 1e-3, (counted_lm, built_lm)
    assert abs((parts["towers"] + parts["towers_other"]) / built_towers - 1) < 1e-2
    published = {"e2b": 5.1e9, "e4b": 7.9e9, "26b-a4b": 25.8e9, "31b": 31.3e9}[shape]   # the model cards' totals
    assert abs((built_lm + built_towers) / published - 1) < 0.02


def test_the_device_scripts_parse_and_refuse_a_folder_that_is_no_carry_folder(tmp_path):
    for script in sorted((BENCH / "device").glob("*.sh")):
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, (script, proc.stderr)
    proc = subprocess.run(["bash", "-c", f'OUT={tmp_path}/out; source bench/device/env.sh {tmp_path}; echo "rc=$?"'],
                          cwd=REPO, capture_output=True, text=True)
    assert "rc=1" in proc.stdout and "is not a carry folder: make it with bash scripts/gpu_env.sh carry" in proc.stderr


@pytest.mark.slow
def test_gpu_pipeline_tiny_runs_a_hub_shaped_gemma4_through_every_job(tmp_path):
    """bench/gpu_pipeline.py --tiny --shape e4b on the CPU: the random checkpoint is
    Gemma4ForConditionalGeneration with vision and audio towers, as google/gemma-4-E4B-it is; the studio
    trains its text (LoRA in the language model only), evaluates, exports with llama.cpp's converter,
    writes the Modelfile and passes the preflight, every job in a worker without the app's packages."""
    out = tmp_path / "out"
    _bench(str(BENCH / "gpu_pipeline.py"), "--out", str(out), "--shape", "e4b", "--tiny",
           "--stages", "train,evaluate,export,modelfile,preflight")
    result = json.loads((out / "gpu_pipeline.json").read_text())
    stages = result["stages"]
    assert all(s["ok"] for s in stages.values()), {k: s.get("error") for k, s in stages.items() if not s["ok"]}
    assert "import duckdb in the worker interpreter: fails" in stages["worker self-check"]["report"]
    model = Path(stages["random Gemma 4"]["model"])
    config = json.loads((model / "config.json").read_text())
    assert config["architectures"] == ["Gemma4ForConditionalGeneration"]
    assert config["vision_config"] and config["audio_config"] and stages["random Gemma 4"]["towers"] > 0
    assert stages["train"]["backend"] == "hf" and stages["train"]["steps"] == 2
    assert stages["train"]["projected_guide_hours"] > 0
    assert stages["evaluate"]["n"] == stages["import"]["test"] and stages["evaluate"]["generated_tokens"] > 0
    assert stages["export"]["architecture"] == "Gemma4ForConditionalGeneration"
    assert set(stages["export"]["gguf_mib"]) == {"f16", "q8_0", "q4_k_m"}
    assert set(stages["export"]["timings_s"]) >= {"merge", "f16", "q8_0", "q4_k_m", "smoke"}
    assert stages["modelfile"]["template_turns"]
    assert stages["preflight"]["prompts_match_training"]

    # the adapter is the language model's alone, and the towers leave the merge as they came in
    from safetensors import safe_open

    adapter = next((out / "home" / "data" / "runs").glob("*/adapter/adapter_model.safetensors"))
    with safe_open(str(adapter), "pt") as st:
        names = list(st.keys())
    assert names and all(".language_model." in n for n in names), [n for n in names if ".language_model." not in n][:5]
    merged = next((out / "home" / "models" / "exports").glob("*/merged"))

    def tower_tensors(folder: Path) -> dict:
        found = {}
        for f in folder.glob("*.safetensors"):
            with safe_open(str(f), "pt") as st:
                for k in st.keys():
                    if "vision_tower" in k or "audio_tower" in k:
                        found[k] = st.get_tensor(k)
        return found

    before, after = tower_tensors(model), tower_tensors(merged)
    assert before and set(before) == set(after)
    assert all((before[k] == after[k]).all() for k in before)


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["e2b", "26b-a4b", "31b"])
def test_the_tiny_twins_of_the_other_shapes_build_and_are_counted(tmp_path, shape):
    proc = _bench(str(BENCH / "gemma4_random.py"), str(tmp_path / shape), "--shape", shape, "--tiny", timeout=900)
    built = json.loads(proc.stdout.strip().splitlines()[-1])
    from core.training import vram

    parts = vram.gemma4_parts(json.loads((tmp_path / shape / "config.json").read_text()))
    counted = sum(parts[k] for k in ("linear", "embed", "per_layer_embed", "experts"))
    assert abs(counted / built["language_model"] - 1) < 1e-3
    assert (tmp_path / shape / "tokenizer.json").exists() and (tmp_path / shape / "chat_template.jinja").exists()


@pytest.mark.slow
def test_the_cpu_benches_small_passes(tmp_path, default_model):
    """The CPU benches at their smallest: scoring, the bulk import, generation engines on the default model,
    the static engine's agreement, packed rows kept apart (transformers on the CPU), seeding a team-sized home (a
    small one, with a sweep) and timing its sweep view."""
    out = _bench(str(BENCH / "score.py"), "--pairs", "200", "--syllables", "40", "--repeat", "1", timeout=600).stdout
    assert "pairs" in out
    out = _bench(str(BENCH / "dataset_import.py"), "--rows", "3000", "--skip-pandas", timeout=900).stdout
    assert "3,000" in out or "3000" in out
    report = tmp_path / "eval.json"
    _bench(str(BENCH / "eval_generation.py"), "--device", "cpu", "--prompts", "4", "--batch-sizes", "2",
           "--max-new-tokens", "4", "--no-loop", "--json", str(report), timeout=900)
    assert json.loads(report.read_text())
    gguf = tmp_path / "gguf.json"   # the GGUF evaluation's batched llama.cpp pass, one and two sequences at once
    out = _bench(str(BENCH / "gguf_eval.py"), "--prompts", "4", "--parallel", "1", "2", "--max-new-tokens", "8",
                 "--json", str(gguf), timeout=900).stdout
    got = json.loads(gguf.read_text())["results"]
    assert [r["parallel"] for r in got] == [1, 2] and all(r["tokens_per_s"] > 0 and r["projected_500_s"] > 0
                                                          for r in got), got
    assert "500 examples" in out
    out = _bench(str(BENCH / "packed_rows_check.py"), str(default_model), "--cpu", timeout=900).stdout
    packing = json.loads(out.strip().splitlines()[-1])   # two texts in one row stay apart; end to end they mix
    assert packing["packed_vs_alone_max_abs"] < 1e-3 < packing["joined_vs_alone_max_abs"], packing
    agreement = tmp_path / "agreement.json"
    _bench(str(BENCH / "static_agreement.py"), "--base-model", str(default_model), "--device", "cpu", "--prompts", "2",
           "--max-new-tokens", "4", "--dtypes", "float32", "--json", str(agreement), timeout=900)
    assert json.loads(agreement.read_text())
    out = _bench(str(BENCH / "scale.py"), "--home", str(tmp_path / "scale"), "--seed-only", "--imports", "4", "--runs",
                 "8", timeout=900).stdout
    assert (tmp_path / "scale" / "data" / "studio.duckdb").exists()
    seeded = json.loads(out[out.index("\n{") + 1:])   # the sweep view, timed without a browser on the seeded home
    assert seeded["seed"]["made"]["sweeps"] == 1 and seeded["seed"]["made"]["sweep_runs"] == 9
    assert seeded["sweep_view"]["runs"] == 9 and seeded["sweep_view"]["best"]
    assert len(seeded["sweep_view"]["train_page_apptest_s"]) == 5
    # in Chromium: the Train page opened on the newest sweep, and another sweep picked on the open page
    timed = tmp_path / "sweep-view.json"
    _bench(str(BENCH / "scale.py"), "--home", str(tmp_path / "scale"), "--sweep-only", "--rounds", "1", "--out",
           str(timed), timeout=900)
    pages = json.loads(timed.read_text())["pages"]
    assert all(pages[k]["median_s"] for k in ("Train: sweep view", "Train: another sweep picked")), pages


@pytest.mark.slow
def test_the_retention_bench_small_pass(tmp_path, default_model):
    """bench/retention.py at its smallest: two trainings of two steps (with and without the general mix), and
    the retention check of each on 3 pairs a set with 8 new tokens; the base model is evaluated once."""
    report = tmp_path / "retention.json"
    _bench(str(BENCH / "retention.py"), "--home", str(tmp_path / "home"), "--max-steps", "2", "--limit", "3",
           "--max-new-tokens", "8", "--no-domain", "--out", str(report), timeout=1800)
    got = json.loads(report.read_text())
    mixed, plain = got["retention"]["with mix"]["numbers"]["sets"], got["retention"]["without mix"]["numbers"]["sets"]
    assert "general-test" not in plain and set(plain) <= set(mixed) and plain["shipped"]["n"] == 3
    assert plain["shipped"]["base_id"] == mixed["shipped"]["base_id"]   # the base model's results, reused
    assert all(s["base"] and s["tuned"]["perplexity"] > 1 for s in [*mixed.values(), *plain.values()])

@pytest.mark.slow
def test_train_throughputs_worker_path_on_the_cpu(tmp_path):
    """bench/train_throughput.py's model builder and its call of the studio's worker (the path its CUDA runs
    take), with the CPU's backend and two steps."""
    sys.path.insert(0, str(BENCH))
    import train_throughput

    model = train_throughput.build_model(tmp_path / "model", "gemma4", "small", 8000)
    res = train_throughput.run_worker(model, "hf", 2, tmp_path / "work", timeout=900,
                                      extra={"max_seq_length": 256, "per_device_train_batch_size": 1,
                                             "gradient_accumulation_steps": 1, "packing": False})
    assert res.get("error") is None, res
    assert [m["step"] for m in res["metrics"] if m.get("loss") is not None][-1] == 2
