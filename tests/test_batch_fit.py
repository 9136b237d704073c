"""Issue 15 on the CPU: the "fit to this GPU" batch (the guide's tokens per optimizer step), rows packed to
one length, and the first step as a phase — written by a real worker training the default model,
shown by the Train page and the CLI while the worker is in it (the worker is paused there with SIGSTOP,
so the test does not race it)."""
import json
import os
import signal
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import paths
from core.datasets import importer
from core.jobs import compile_cache, queue, supervisor
from core.jobs.files import Status
from core.training import batch_fit, presets, runs, vram
from tests.conftest import OPERATOR, REPO, approve_review, tiny_pairs, write_jsonl


def test_the_fit_keeps_the_rows_a_step_and_moves_them_into_the_batch_while_they_fit():
    cfg = presets.preset(presets.FIT_PRESET)   # the guide's 2 × 4 at 2048 tokens, on the default model's shape
    assert cfg.fit_to_gpu and (cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps) == (2, 4)
    big = batch_fit.choose(cfg, free_gib=139.0)
    assert (big.batch, big.accumulation, big.tokens_per_step) == (8, 1, 8 * 2048)
    need = {b: vram.estimate(presets.preset(presets.FIT_PRESET, per_device_train_batch_size=b,
                                            gradient_accumulation_steps=8 // b))["total_gib"] for b in (8, 4, 2, 1)}
    assert big.estimate_gib == need[8] and "fits in 60% of the 139.0 GiB free" in big.reason
    # where 8 rows do not fit but 4 do: 4 × 2, the same 8 rows a step
    free = (need[4] + need[8]) / 2 / batch_fit.MEMORY_SHARE
    mid = batch_fit.choose(cfg, free_gib=free)
    assert (mid.batch, mid.accumulation, mid.tokens_per_step) == (4, 2, 8 * 2048)
    tiny = batch_fit.choose(cfg, free_gib=0.01)   # nothing fits: one row a micro-step, said so
    assert (tiny.batch, tiny.accumulation) == (1, 8) and "even so" in tiny.reason
    none = batch_fit.choose(cfg, free_gib=None)
    assert (none.batch, none.accumulation) == (2, 4) and none.reason.startswith("no GPU here")


def test_compile_caches_go_under_the_home_unless_the_environment_names_them(home):
    env = {"TRITON_CACHE_DIR": "/srv/triton"}   # an operator's choice stays
    chosen = compile_cache.use("/models/google/gemma-4-E4B-it", env)
    root = home / "data" / "cache" / "compile" / "google--gemma-4-E4B-it"
    assert chosen == {"TORCHINDUCTOR_CACHE_DIR": str(root / "inductor"), "UNSLOTH_COMPILE_LOCATION": str(root / "unsloth")}
    assert env["TRITON_CACHE_DIR"] == "/srv/triton" and (root / "inductor").is_dir()
    assert compile_cache.model_key("unsloth/gemma-3-1b-it") == "unsloth--gemma-3-1b-it"
    assert compile_cache.model_key("../../etc") == "etc" and compile_cache.model_key("") == "unknown"


def test_whole_texts_are_packed_best_fit_and_padded_to_one_length():
    texts = [[1, 5, 6], [1], [1, 8, 9, 10], [2], [1, 3, 4, 5, 6, 7, 8, 9]]   # 2 is the end-of-sequence token
    # whole texts, an end token added where one lacks it, best fit decreasing; a text longer than a row is cut
    assert batch_fit.pack_rows(texts, 6, eos_id=2) == [
        {"input_ids": [1, 3, 4, 5, 6, 7], "seq_lengths": [6]},
        {"input_ids": [1, 8, 9, 10, 2, 2], "seq_lengths": [5, 1]},
        {"input_ids": [1, 5, 6, 2, 1, 2], "seq_lengths": [4, 2]}]
    assert batch_fit.real_tokens(batch_fit.pack_rows(texts, 6, eos_id=2)) == 18
    assert batch_fit.pack_rows([], 4, eos_id=2) == []
    batch = batch_fit.FixedRows(6, pad_id=0)([{"input_ids": [1, 5, 6, 2, 1, 3], "seq_lengths": [4, 2]},
                                              {"input_ids": [1, 7, 2], "seq_lengths": [3]},
                                              {"input_ids": [1, 9, 9]}])   # an evaluation text: one text
    assert set(batch) == {"input_ids", "position_ids", "labels"}   # no attention mask: the texts stay apart
    assert batch["input_ids"].tolist() == [[1, 5, 6, 2, 1, 3], [1, 7, 2, 0, 0, 0], [1, 9, 9, 0, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1], [0, 1, 2, 0, 1, 2], [0, 1, 2, 0, 1, 2]]
    # no target at a text's first token (it would be predicted from the text before) nor on padding
    assert batch["labels"].tolist() == [[-100, 5, 6, 2, -100, 3], [-100, 7, 2, -100, -100, -100],
                                        [-100, 9, 9, -100, -100, -100]]
    with pytest.raises(ValueError, match="a packed row of 3 tokens says its texts have 4"):
        batch_fit.FixedRows(6, pad_id=0)([{"input_ids": [1, 2, 3], "seq_lengths": [4]}])


def test_a_packed_row_gives_each_text_what_it_gives_alone(default_model, tokenizer):
    """The default model, for real: the second text of a packed row gets the logits it gets alone, so
    neither its positions nor its attention reach into the text before it."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(default_model), dtype=torch.float32)
    model.train()   # as the trainer runs it (the default model has no dropout to make a pass random)
    first = tokenizer("Hợp đồng này có hiệu lực từ ngày ký.")["input_ids"]
    second = tokenizer("Khách hàng hỏi về phí chuyển khoản.")["input_ids"]
    row = {"input_ids": first + second, "seq_lengths": [len(first), len(second)]}
    batch = batch_fit.FixedRows(len(first) + len(second) + 3, pad_id=tokenizer.pad_token_id)([row])
    span = slice(len(first), len(first) + len(second))
    with torch.no_grad():
        alone = model(input_ids=torch.tensor([second])).logits[0]
        joined = model(input_ids=torch.tensor([first + second])).logits[0]   # rows cut end to end
        assert model.config.use_cache   # on by default: the forward builds a cache, and the texts mix
        cached = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        batch_fit.for_packed_rows(model)
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
    assert torch.allclose(packed[span], alone, atol=1e-3), (packed[span] - alone).abs().max()
    assert not torch.allclose(joined[span], alone, atol=1e-1)
    assert not torch.allclose(cached[span], alone, atol=1e-1)


def test_a_cuda_phase_reads_as_compiling_with_its_time_and_no_eta(tmp_path):
    job = {"id": 7, "kind": "train", "state": "running", "job_dir": str(tmp_path)}
    Status(tmp_path).update(phase="compiling", phase_started=1000.0, progress={"done": 0, "total": 40, "label": "steps"})
    assert queue.phase(job, now=1034.5) == {"phase": "compiling", "elapsed_s": 34.5}
    assert queue.describe(job, now=1034.5) == "train job 7: running — compiling (the first step), 34 s so far"
    assert queue.describe(job, now=1034.5, every_s=10) == "train job 7: running — compiling (the first step), 30 s so far"
    Status(tmp_path).update(phase="training", compile_s=61.0, progress={"done": 10, "total": 40, "label": "steps",
                                                                        "per_s": 2.0})
    assert queue.phase(job) is None
    assert queue.describe(job) == ("train job 7: running — 10/40 steps (2.00/s), about 0 min 15 s left; "
                                   "compile 61 s")


@pytest.fixture
def version(home, default_model):
    v, _ = importer.import_files([write_jsonl(home / "d.jsonl", tiny_pairs(24))], "tiny", actor=OPERATOR)
    assert approve_review(v["id"])["reviewed"]
    return v["id"]


def _train_page() -> AppTest:
    import streamlit as st

    st.cache_data.clear()
    at = AppTest.from_file(str(REPO / "pages" / "train.py"), default_timeout=120)
    at.session_state["principal"] = OPERATOR
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_a_real_worker_reports_its_first_step_as_a_phase_and_trains_on_packed_rows(home, version, monkeypatch):
    # torch names its Inductor cache in os.environ when it first looks for one (packing imports it in this
    # process): a worker started from here would inherit that as an operator's choice
    for variable in compile_cache.VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    cfg = presets.preset(presets.FIT_PRESET, max_steps=4, max_seq_length=64, learning_rate=5e-4, packing=False,
                         optim="adamw_torch")
    job = runs.submit_train(version, cfg, actor=OPERATOR)
    folder = Path(job["job_dir"])
    deadline = time.monotonic() + 600
    status = {}
    while time.monotonic() < deadline:
        supervisor.tick()
        status = json.loads((folder / "status.json").read_text()) if (folder / "status.json").exists() else {}
        if status.get("phase") or status.get("state") in ("succeeded", "failed"):
            break
        time.sleep(0.02)
    assert status.get("phase") == "first step", status   # caught before the first step ends
    os.kill(status["pid"], signal.SIGSTOP)   # hold the worker in its first step
    try:
        running = queue.get_job(job["id"])
        assert queue.phase(running)["phase"] == "first step"
        at = _train_page()
        shown = [x.value for x in at.info]
        assert any(v.startswith(f"training job {job['id']}: running — first step, ") and v.endswith(" s so far")
                   for v in shown), shown
        bars = [b.proto.text for b in at.get("progress")]
        assert any("first step" in t and "/s" not in t and "left" not in t for t in bars), bars   # no pace, no ETA
    finally:
        os.kill(status["pid"], signal.SIGCONT)
    done = supervisor.wait(job["id"], timeout=900)
    assert done["state"] == "succeeded", done["error"]
    final = queue.status(done)
    assert final["phase"] == "training" and final["compile_s"] > 0
    fit = final["fit"]
    assert fit["reason"].startswith("no GPU here") and fit["row_tokens"] == 64 and fit["rows"] >= 4
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    # the first step's pace is not recorded (it is the compile's); the others are, at 2 rows × 64 tokens a micro-step
    assert metrics[0]["tokens_per_s"] is None and all(m["tokens_per_s"] > 0 for m in metrics[1:])
    result = done["result"] if isinstance(done["result"], dict) else json.loads(done["result"])
    assert (result["per_device_train_batch_size"], result["gradient_accumulation_steps"]) == (2, 4)
    assert result["fit"] == fit and 0 < fit["fill"] <= 1   # the run's result says it too (the CLI prints it)
    # the worker kept its compilers' caches under the studio's home, one folder for the base model
    cache = home / "data" / "cache" / "compile" / compile_cache.model_key(str(paths.default_base_model_dir()))
    assert f"compile caches under {cache}" in queue.log_tail(done, 200)
    assert sorted(p.name for p in cache.iterdir()) == ["inductor", "triton", "unsloth"]
    at = _train_page()
    assert any(c.value.startswith("First step (compile and warm-up): ") for c in at.caption)
    assert any(c.value.startswith("Fit to this GPU: no GPU here: batch 2 × accumulation 4 kept") for c in at.caption)
