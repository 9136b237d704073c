"""The whole default pipeline on the embedded model, through the CLI (see the ``pipeline`` fixture)."""
import json
import re
from pathlib import Path

import pytest
import torch

from core import deploy, export, prompt_format, store
from tests.conftest import cli

pytestmark = pytest.mark.slow

PROMPTS = [
    {"instruction": "Khách hàng phàn nàn về hóa đơn sai, phải xử lý thế nào?"},
    {"instruction": "Tóm tắt điều khoản quan trọng trong hợp đồng sau.",
     "input": "ĐIỀU 3: Bên B cam kết hoàn thành dự án trong vòng 90 ngày kể từ ngày ký kết."},
    {"instruction": "Thủ đô của Việt Nam là gì?"},
]


def test_training_ran_twenty_steps_and_the_loss_fell(pipeline, monkeypatch):
    monkeypatch.setenv("VITUNE_HOME", str(pipeline["home"]))
    assert pipeline["train"]["state"] == "succeeded" and pipeline["train"]["result"]["steps"] == 20
    losses = [r["loss"] for r in store.rows("SELECT loss FROM metrics WHERE run_id = ? ORDER BY step",
                                            [pipeline["run"]])]
    assert len(losses) == 20
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5


def test_evaluation_is_stored_with_every_example(pipeline, monkeypatch):
    monkeypatch.setenv("VITUNE_HOME", str(pipeline["home"]))
    ev = pipeline["evaluation"]
    assert ev["n"] == 20 and 0 <= ev["bleu"] <= 1 and 0 <= ev["rouge_l"] <= 1
    row = store.one("SELECT * FROM evaluations WHERE id = ?", [ev["evaluation"]])
    assert row["run_id"] == pipeline["run"] and row["passed"] == ev["passed"]
    assert json.loads(row["thresholds"]) == {"bleu": 0.35, "rouge_l": 0.45}
    examples = store.rows("SELECT * FROM evaluation_examples WHERE evaluation_id = ?", [ev["evaluation"]])
    assert len(examples) == 20 and all(e["reference"] for e in examples)
    assert sum(bool(e["prediction"]) for e in examples) >= 15
    gate = cli("gate", "--run", pipeline["run"], home=pipeline["home"], check=False)
    assert gate.returncode == (0 if ev["passed"] else 1)
    assert json.loads(gate.stdout)["releasable"] == ev["passed"]


VIETNAMESE = re.compile(r"[àáảãạăắằẳẵặâấầẩẫậđèéẻẽẹêếềểễệìíỉĩịòóỏõọôốồổỗộơớờởỡợùúủũụưứừửữựỳýỷỹỵ]", re.I)


def test_f16_q8_0_and_q4_k_m_ggufs_answer_in_llama_cpp(pipeline):
    """f16 equals the merged model token for token; q8_0 and q4_k_m start the same way and answer in
    Vietnamese."""
    from core import inference

    files = pipeline["export"]["gguf"]
    merged = inference.load(pipeline["export"]["merged_dir"], None, "chat", dtype=torch.float32)
    tok = merged.tokenizer
    prompts = [prompt_format.render_prompt(p, "chat", tok) for p in PROMPTS]
    eos = prompt_format.stop_token_ids("chat", tok)
    expected = []
    for prompt in prompts:
        ids = tok(prompt, return_tensors="pt")
        out = merged.model.generate(**ids, max_new_tokens=24, do_sample=False, eos_token_id=eos)[0]
        new = out[ids["input_ids"].shape[1]:].tolist()
        expected.append(new[: next((i for i, t in enumerate(new) if t in eos), len(new))])
    assert export.llama_generate(Path(files["f16"]), prompts, max_tokens=24) == expected
    q8 = export.llama_generate(Path(files["q8_0"]), prompts, max_tokens=24)
    q4 = export.llama_generate(Path(files["q4_k_m"]), prompts, max_tokens=24)
    assert [a[:1] for a in q8] == [e[:1] for e in expected]  # 8-bit: the first token always agrees
    assert sum(a[:1] == e[:1] for a, e in zip(q4, expected)) >= 2
    for answers in (q8, q4):
        texts = [tok.decode(a, skip_special_tokens=True) for a in answers]
        assert all(t.strip() for t in texts), texts
        assert sum(bool(VIETNAMESE.search(t)) for t in texts) >= 2, texts
    sizes = {q: Path(files[q]).stat().st_size for q in ("f16", "q8_0", "q4_k_m")}
    assert sizes["q4_k_m"] < sizes["q8_0"] < sizes["f16"] and sizes["q8_0"] < sizes["f16"] * 0.6


def test_deploy_refuses_without_gate_then_records_an_override(pipeline, monkeypatch):
    monkeypatch.setenv("VITUNE_HOME", str(pipeline["home"]))
    home = pipeline["home"]
    if pipeline["evaluation"]["passed"]:
        pytest.skip("this run passed the gate; the refusal path needs a failing run")
    refused = cli("deploy", "--run", pipeline["run"], "--name", "vi-cskh:v1", home=home, check=False)
    assert refused.returncode == 1 and "not releasable" in refused.stderr
    bad = cli("deploy", "--run", pipeline["run"], "--name", "Bad Name", "--override-reason", "demo", home=home,
              check=False)
    assert bad.returncode == 1 and "not a valid Ollama model name" in bad.stderr
    done = cli("deploy", "--run", pipeline["run"], "--name", "vi-cskh:v1", "--quant", "q8_0", "--golden", "3",
               "--override-reason", "client demo only, not production", "--json", home=home)
    release = json.loads(done.stdout)
    modelfile_text = Path(release["modelfile_path"]).read_text()
    assert modelfile_text.startswith(f"FROM {release['gguf_path']}") and "<start_of_turn>" in modelfile_text
    row = store.one("SELECT * FROM releases WHERE id = ?", [release["id"]])
    assert row["override_reason"] == "client demo only, not production" and row["tag"] == "v1"
    assert row["gguf_sha256"] == export.sha256(Path(release["gguf_path"]))
    preflight = json.loads(row["preflight"])
    assert preflight["passed"] and release["preflight"]["exact_match_rate"] == preflight["exact_match_rate"]
    assert len(preflight["examples"]) == 3 and all(e["prompt_matches_training"] for e in preflight["examples"])
    audit = store.rows("SELECT action FROM audit_log WHERE subject = ?", [pipeline["run"]])
    assert {"action": "gate.override"} in audit
    if deploy.ollama_binary() is None:
        assert row["ollama_status"].startswith("ollama is not installed")
        pytest.skip("no ollama binary here: everything up to `ollama create` ran; the call itself was skipped")
