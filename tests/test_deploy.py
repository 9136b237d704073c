"""Deploy: Modelfile TEMPLATE vs training prompts, Gemma 4 export branch, the default quantization, ollama
commands, preflight verdicts. Deploying the pipeline's run, releases, delete and rollback: test_pipeline."""
import json
import re
import socket
from pathlib import Path

import pytest

from core import deploy, export, modelfile, preflight, prompt_format, store
from tests.conftest import cli

SAMPLES = [
    {"instruction": "Khách hàng phàn nàn về hóa đơn sai, phải xử lý thế nào?"},
    {"instruction": "Tóm tắt điều khoản sau.", "input": "ĐIỀU 3: Bên B hoàn thành dự án trong 90 ngày."},
    {"instruction": "  Dòng một\nDòng hai  ", "input": "  "},
]
SYSTEMS = [None, "Bạn là trợ lý CSKH của Sao Việt.\nTrả lời ngắn gọn."]


def go_template(template: str, values: dict) -> str:
    """A tiny Go text/template renderer (``{{ .X }}``, ``{{ if .X }} … {{ end }}``), written apart from
    core's, to check that what Ollama renders is what training used."""
    out, stack = [], [True]
    pos = 0
    for m in re.finditer(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", template, re.S):
        if all(stack):
            out.append(template[pos:m.start()])
        action = m.group(2)
        if action.startswith("if "):
            stack.append(bool(values.get(action[3:].strip().lstrip("."))))
        elif action == "end":
            stack.pop()
        elif action == "else":
            stack[-1] = not stack[-1]
        elif action.startswith("."):
            if all(stack):
                out.append(str(values.get(action[1:], "")))
        else:
            raise ValueError(f"unsupported template action {action!r}")
        pos = m.end()
    out.append(template[pos:])
    assert stack == [True], "unbalanced if/end"
    return "".join(out)


@pytest.mark.parametrize("fmt", prompt_format.FORMATS)
def test_the_modelfile_template_renders_exactly_the_training_prompt(fmt, tokenizer, tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"")
    for system in SYSTEMS:
        text = modelfile.build(gguf, fmt, tokenizer, system=system)
        template = preflight.template_of(text)
        sys_text = preflight.system_of(text)
        assert sys_text == (system.strip() if system else None)
        for pair in SAMPLES:
            rendered = go_template(template, {"System": sys_text or "",
                                              "Prompt": prompt_format.ollama_prompt(pair, fmt)})
            assert rendered == prompt_format.render_prompt(pair, fmt, tokenizer, system=sys_text)
            # core's own renderer (used by the preflight) agrees with the independent one
            assert rendered == prompt_format.render_ollama_template(template, prompt_format.ollama_prompt(pair, fmt),
                                                                    sys_text)


def test_the_modelfile_has_every_parameter(tokenizer, tmp_path):
    text = modelfile.build(tmp_path / "m.gguf", "chat", tokenizer, system="Xin chào",
                           params=modelfile.Parameters(temperature=0.2, top_k=40, top_p=0.95, num_ctx=4096))
    for line in ("PARAMETER temperature 0.2", "PARAMETER top_k 40", "PARAMETER top_p 0.95",
                 "PARAMETER num_ctx 4096", 'PARAMETER stop "<end_of_turn>"'):
        assert line in text.splitlines()
    assert preflight.stops_of(text) == ["<end_of_turn>", "<eos>"]


@pytest.mark.parametrize("system", ['Trả lời ngắn."""', 'a """ b', 'Nói "xin chào"'])
def test_system_text_that_would_break_the_block_is_refused(system):
    with pytest.raises(modelfile.ModelfileError, match='"'):
        modelfile.check_system(system)


def test_an_edited_modelfile_must_keep_from_and_template(tokenizer, tmp_path):
    gguf = tmp_path / "m.gguf"
    text = modelfile.build(gguf, "chat", tokenizer)
    assert modelfile.check_text(text.replace("temperature 0.7", "temperature 0.3"), gguf)
    with pytest.raises(modelfile.ModelfileError, match="FROM must stay"):
        modelfile.check_text(text.replace(str(gguf.resolve()), "/tmp/other.gguf"), gguf)
    with pytest.raises(modelfile.ModelfileError, match="exactly one TEMPLATE"):
        modelfile.check_text(text.replace('TEMPLATE """', 'SYSTEM """'), gguf)


# ── export: architectures ────────────────────────────────────────────────────


@pytest.mark.parametrize("arch,loader", [
    ("Gemma3ForCausalLM", "AutoModelForCausalLM"),
    ("Gemma4ForCausalLM", "AutoModelForCausalLM"),
    ("Gemma4ForConditionalGeneration", "AutoModelForImageTextToText"),
])
def test_export_branches_by_architecture(tmp_path, arch, loader):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": [arch]}))
    assert export.architecture(tmp_path) == arch
    assert export.loader_for(arch) == loader


def test_the_vendored_converter_knows_both_gemma4_classes():
    """llama.cpp's converter shipped with the project registers both classes for the text model the
    studio exports (tests/test_gemma4_export.py exports tiny random-weight models of both for real)."""
    text = (export.converter_script().parent / "conversion" / "gemma.py").read_text()
    assert '@ModelBase.register("Gemma4ForConditionalGeneration", "Gemma4ForCausalLM")' in text


def test_export_explains_a_bad_config(tmp_path):
    with pytest.raises(export.ExportError, match="no such file"):
        export.architecture(tmp_path)
    (tmp_path / "config.json").write_text("{bad")
    with pytest.raises(export.ExportError, match="not valid JSON"):
        export.architecture(tmp_path)
    with pytest.raises(export.ExportError, match="not one the studio exports"):
        export.loader_for("BertModel")


def test_default_quantization_is_q8_0_below_a_billion_parameters(default_model, tmp_path):
    assert export.parameter_count(str(default_model)) == 268_042_240  # Gemma 3 270M, from its config.json
    assert export.default_quant(str(default_model)) == "q8_0"
    big = {"hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 34, "num_attention_heads": 8,
           "num_key_value_heads": 4, "head_dim": 256, "vocab_size": 262208}  # Gemma 3 4B's text config
    (tmp_path / "config.json").write_text(json.dumps({"text_config": big}))
    assert export.default_quant(str(tmp_path)) == "q4_k_m" == export.DEFAULT_QUANT
    assert export.default_quant("someone/not-downloaded") == "q4_k_m"  # unknown size: the guide's default


def test_default_model_architecture(default_model):
    assert export.loader_for(export.architecture(default_model)) == "AutoModelForCausalLM"


# ── ollama commands ──────────────────────────────────────────────────────────


def test_create_command_is_an_argument_list_and_quantizes_only_f16(tmp_path):
    mf = tmp_path / "Modelfile"
    assert deploy.create_command("ollama", "vi-cskh:v1", mf, "q4_k_m") == ["ollama", "create", "vi-cskh:v1", "-f",
                                                                          str(mf)]
    assert deploy.create_command("ollama", "vi", mf, "f16", "q4_K_M")[-2:] == ["--quantize", "q4_K_M"]
    with pytest.raises(deploy.DeployRefused, match="only quantize an f16 GGUF"):
        deploy.create_command("ollama", "vi", mf, "q8_0", "q4_K_M")
    with pytest.raises(modelfile.ModelfileError, match="not a valid Ollama model name"):
        deploy.create_command("ollama", "vi; rm -rf ~", mf, "f16")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_no_ollama_server_is_explained_in_plain_words():
    if _port_open(11434):
        pytest.skip("an Ollama server answers on this machine")
    problem = deploy.server_problem()  # the real ollama client, against a port where nothing listens
    assert problem.startswith("the Ollama server is not running") and "ollama serve" in problem
    assert "not running" in deploy.explain("Error: could not connect to ollama app, is it running?")


def test_ollama_create_runs_up_to_the_binary(tmp_path):
    mf = tmp_path / "Modelfile"
    mf.write_text("FROM /nowhere.gguf\n")
    with pytest.raises(modelfile.ModelfileError):
        deploy.ollama_create("Bad Name", mf)
    if deploy.ollama_binary() is None:
        assert deploy.ollama_create("vi-test:v1", mf) == (False, deploy.NO_BINARY)
        pytest.skip("no ollama binary here: the name check and the argument list ran; `ollama create` was skipped")
    created, message = deploy.ollama_create("vi-test:v1", mf)
    assert not created and message  # the GGUF does not exist: ollama refuses, in words


# ── preflight verdicts ───────────────────────────────────────────────────────


def _ex(answer="Dạ, vâng.", ref="Dạ, vâng.", matches=True, gh=False, rh=False):
    return {"prompt_matches_training": matches, "first_difference": -1 if matches else 12, "gguf_answer": answer,
            "reference_answer": ref, "gguf_hit_max": gh, "reference_hit_max": rh}


def test_preflight_judge():
    assert preflight.judge([_ex()] * 4, 48)[0]
    ok, why = preflight.judge([_ex(matches=False)] + [_ex()] * 3, 48)
    assert not ok and "different prompt" in why and "character 12" in why
    ok, why = preflight.judge([_ex(answer="")] * 3 + [_ex()], 48)
    assert not ok and "empty answer on 3/4" in why
    ok, why = preflight.judge([_ex(gh=True)] * 3 + [_ex()], 48)
    assert not ok and "48-token limit" in why
    # running long where the merged model runs long too is not the template's fault
    assert preflight.judge([_ex(gh=True, rh=True)] * 4, 48)[0]


# ── on the trained default model ─────────────────────────────────────────────


@pytest.mark.slow
def test_preflight_blocks_a_drifted_template(pipeline, monkeypatch):
    """The alpaca-vi TEMPLATE on a chat-trained run renders a different prompt: blocked, with the reason.
    (A passing preflight on the same export: test_pipeline's CLI deploy.)"""
    from core import jobs

    monkeypatch.setenv("VITUNE_HOME", str(pipeline["home"]))
    monkeypatch.setenv("VITUNE_SLOTS", "cpu")
    run_id, result = pipeline["run"], pipeline["export"]
    gguf = Path(result["gguf"]["q8_0"])
    drifted = modelfile.build(gguf, "alpaca-vi")
    job = jobs.wait(preflight.submit(run_id, gguf, result["merged_dir"], drifted, n=2, max_tokens=8)["id"])
    assert job["state"] == "succeeded" and not job["result"]["passed"]
    assert "renders a different prompt from the one the run was trained with" in job["result"]["reason"]
    assert all(not e["prompt_matches_training"] for e in job["result"]["examples"])
    assert not json.loads((Path(job["job_dir"]) / preflight.REPORT).read_text())["passed"]
