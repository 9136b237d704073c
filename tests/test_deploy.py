"""Deploy: Modelfile TEMPLATE vs training prompts, Gemma 4 export branch, the default quantization, ollama
commands, preflight verdicts. Deploying the pipeline's run, releases, delete and rollback: test_pipeline."""
import json
import os
import re
import socket
from pathlib import Path

import pytest

from core import prompt_format, store
from core.deploy import exporter, exports, modelfile, ollama, preflight, preflights, releases
from tests.conftest import OPERATOR, cli, free_port

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


def test_modelfiles_are_read_the_way_ollama_reads_them():
    """Directives in any case, after comments and blank lines; bare, "quoted" and triple-quoted values, the
    last over several lines; the line of anything that is not a directive."""
    text = ('# a comment\n\nfrom /m/a.gguf\ntemplate """{{ if .System }}x\n{{ end }}"""\n'
            'System "một dòng"\nparameter stop "<eos>"\nPARAMETER temperature 0.2\n')
    got = [(c.name, c.parameter, c.args, c.line) for c in modelfile.parse(text)]
    assert got == [("from", None, "/m/a.gguf", 3), ("template", None, "{{ if .System }}x\n{{ end }}", 4),
                   ("system", None, "một dòng", 6), ("parameter", "stop", "<eos>", 7),
                   ("parameter", "temperature", "0.2", 8)]
    with pytest.raises(modelfile.ModelfileError, match="line 2: 'TEMPLAT' is not a Modelfile directive"):
        modelfile.parse("FROM x\nTEMPLAT y\n")
    with pytest.raises(modelfile.ModelfileError, match="line 2: a quoted value is not closed"):
        modelfile.parse('FROM x\nSYSTEM """open\nstill open\n')
    with pytest.raises(modelfile.ModelfileError, match="MESSAGE's role"):
        modelfile.parse("FROM x\nMESSAGE tool hi\n")


def test_an_edited_modelfile_keeps_system_and_parameters_and_nothing_else(tokenizer, tmp_path):
    """What the preflight checks is what `ollama create` gets: an edit may change SYSTEM and PARAMETER
    lines; a later lower-case FROM or TEMPLATE (which Ollama would obey), ADAPTER or MESSAGE is refused
    with its line, and the studio writes FROM and TEMPLATE itself."""
    gguf = tmp_path / "m.gguf"
    built = modelfile.build(gguf, "chat", tokenizer)
    template = preflight.template_of(built)
    edited = built.replace("temperature 0.7", "temperature 0.3") + 'system """Trả lời bằng tiếng Việt."""\n'
    final = modelfile.finalize(edited, built)
    assert final.startswith(f"FROM {gguf.resolve()}\n")
    assert preflight.template_of(final) == template
    assert preflight.system_of(final) == "Trả lời bằng tiếng Việt."
    assert "PARAMETER temperature 0.3" in final.splitlines()
    assert preflight.stops_of(final) == preflight.stops_of(built) == ["<end_of_turn>", "<eos>"]
    assert modelfile.finalize(final, built) == final      # finalizing is stable
    n = built.count("\n") + 1
    refused = {
        built + "from /tmp/other.gguf\n": f"line {n}: FROM must stay",
        built + 'template """{{ .Prompt }}"""\n': f"line {n}: TEMPLATE is the training prompt format",
        built.replace(str(gguf.resolve()), "/tmp/other.gguf"): "line 1: FROM must stay",
        built + "ADAPTER /tmp/lora.gguf\n": f"line {n}: ADAPTER is not allowed",
        built + "MESSAGE user xin chào\n": f"line {n}: MESSAGE is not allowed",
        built + "PARAMETER temprature 0.1\n": f"line {n}: unknown PARAMETER 'temprature'",
        built + "PARAMETER top_k many\n": f"line {n}: PARAMETER top_k takes an integer",
        built + 'SYSTEM """a"""\nSYSTEM """b"""\n': f"line {n + 1}: a second SYSTEM",
        built + 'SYSTEM """ends with a quote\""""\n': "ends with a double quote",
    }
    for text, message in refused.items():
        with pytest.raises(modelfile.ModelfileError, match=re.escape(message)):
            modelfile.finalize(text, built)


# ── export: architectures ────────────────────────────────────────────────────


@pytest.mark.parametrize("arch,loader", [
    ("Gemma3ForCausalLM", "AutoModelForCausalLM"),
    ("Gemma4ForCausalLM", "AutoModelForCausalLM"),
    ("Gemma4ForConditionalGeneration", "AutoModelForImageTextToText"),
])
def test_export_branches_by_architecture(tmp_path, arch, loader):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": [arch]}))
    assert exporter.architecture(tmp_path) == arch
    assert exporter.loader_for(arch) == loader


def test_the_vendored_converter_knows_both_gemma4_classes():
    """llama.cpp's converter shipped with the project registers both classes for the text model the
    studio exports (tests/test_gemma4_export.py exports tiny random-weight models of both for real)."""
    text = (exporter.converter_script().parent / "conversion" / "gemma.py").read_text()
    assert '@ModelBase.register("Gemma4ForConditionalGeneration", "Gemma4ForCausalLM")' in text


def test_export_explains_a_bad_config(tmp_path):
    with pytest.raises(exporter.ExportError, match="no such file"):
        exporter.architecture(tmp_path)
    (tmp_path / "config.json").write_text("{bad")
    with pytest.raises(exporter.ExportError, match="not valid JSON"):
        exporter.architecture(tmp_path)
    with pytest.raises(exporter.ExportError, match="not one the studio exports"):
        exporter.loader_for("BertModel")


def _tensor_elements(model_dir: Path) -> dict[str, int]:
    """Every tensor of a model folder's safetensors files and its number of elements (headers only)."""
    import math

    from safetensors import safe_open

    counts = {}
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(path), framework="np") as fh:
            for name in fh.keys():
                counts[name] = math.prod(fh.get_slice(name).get_shape())
    return counts


def test_the_parameter_count_is_the_models_weights_less_its_norms(default_model):
    """``exports.parameter_count`` works from config.json (so that it knows a model not downloaded yet) and
    counts on purpose the linear layers and the embeddings only: it must equal the elements of every tensor
    in the model's safetensors except the RMSNorm weights, which are a rounding error (0.02 % of Gemma 3
    270M) for the billion-parameter line it decides on."""
    tensors = _tensor_elements(default_model)
    assert tensors, f"no safetensors in {default_model}"
    norms = sum(n for name, n in tensors.items() if name.endswith("norm.weight"))
    total = sum(tensors.values())
    assert norms and norms < total * 0.001
    assert exports.parameter_count(str(default_model)) == total - norms


def test_default_quantization_is_q8_0_below_a_billion_parameters(default_model, tmp_path):
    assert sum(_tensor_elements(default_model).values()) < exports.SMALL_MODEL_PARAMS
    assert exports.default_quant(str(default_model)) == "q8_0"
    big = {"hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 34, "num_attention_heads": 8,
           "num_key_value_heads": 4, "head_dim": 256, "vocab_size": 262208}  # Gemma 3 4B's text config
    (tmp_path / "config.json").write_text(json.dumps({"text_config": big}))
    assert exports.default_quant(str(tmp_path)) == "q4_k_m" == exports.DEFAULT_QUANT
    assert exports.default_quant("someone/not-downloaded") == "q4_k_m"  # unknown size: the guide's default


def test_default_model_architecture(default_model):
    assert exporter.loader_for(exporter.architecture(default_model)) == "AutoModelForCausalLM"


# ── ollama commands ──────────────────────────────────────────────────────────


def test_create_command_is_an_argument_list_and_quantizes_only_f16(tmp_path):
    mf = tmp_path / "Modelfile"
    assert ollama.create_command("ollama", "vi-cskh:v1", mf, "q4_k_m") == ["ollama", "create", "vi-cskh:v1", "-f",
                                                                          str(mf)]
    assert ollama.create_command("ollama", "vi", mf, "f16", "q4_K_M")[-2:] == ["--quantize", "q4_K_M"]
    with pytest.raises(ollama.OllamaError, match="only quantize an f16 GGUF"):
        ollama.create_command("ollama", "vi", mf, "q8_0", "q4_K_M")
    with pytest.raises(modelfile.ModelfileError, match="not a valid Ollama model name"):
        ollama.create_command("ollama", "vi; rm -rf ~", mf, "f16")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_no_ollama_server_is_explained_in_plain_words():
    if _port_open(11434):
        pytest.skip("an Ollama server answers on this machine")
    problem = ollama.server_problem()  # the real ollama client, against a port where nothing listens
    assert problem.startswith("the Ollama server is not running") and "ollama serve" in problem
    assert "not running" in ollama.explain("Error: could not connect to ollama app, is it running?")


def test_ollama_create_runs_up_to_the_binary(tmp_path):
    mf = tmp_path / "Modelfile"
    mf.write_text("FROM /nowhere.gguf\n")
    with pytest.raises(modelfile.ModelfileError):
        ollama.ollama_create("Bad Name", mf)
    if ollama.ollama_binary() is None:
        assert ollama.ollama_create("vi-test:v1", mf) == (False, ollama.NO_BINARY)
        pytest.skip("no ollama binary here: the name check and the argument list ran; `ollama create` was skipped")
    created, message = ollama.ollama_create("vi-test:v1", mf)
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


HELD = [{"instruction": "Khách hỏi về hoàn tiền", "input": "",
         "output": "Dạ, quý khách được hoàn tiền trong vòng bảy ngày làm việc kể từ khi cửa hàng nhận lại sản phẩm."},
        {"instruction": "Tóm tắt điều khoản", "input": "ĐIỀU 3",
         "output": "Bên B phải hoàn thành dự án trong chín mươi ngày, nếu chậm thì chịu phạt theo điều năm."}]


def test_the_preflight_scores_both_models_against_the_held_out_answers_in_the_gates_terms():
    """The merged model that gives the held-out answers passes the gate; a GGUF cut after four syllables
    does not, and the report flags it. The thresholds are the ones the app side sends."""
    from core.evaluation import scoring

    merged = [p["output"] for p in HELD]
    cut = [" ".join(p["output"].split()[:4]) for p in HELD]
    held = preflight.held_out_scores(HELD, merged, cut)
    assert held["merged"]["bleu"] == pytest.approx(1.0) and held["merged"]["rouge_l"] == pytest.approx(1.0)
    assert held["merged"]["passed"] and not held["gguf"]["passed"]
    assert held["gguf"]["thresholds"] == scoring.DEFAULT_THRESHOLDS
    assert held["gguf"]["rouge_l"] == pytest.approx(scoring.score([p["output"] for p in HELD], cut).rouge_l)
    assert held["gguf_below_gate_where_merged_passes"]
    # a prefix of 4 syllables of 21 and of 19: precision 1, recall 4/21 and 4/19, so F = 8/25 and 8/23
    assert [e["rouge_l"] for e in held["per_example"]] == pytest.approx([8 / 25, 8 / 23])
    # the studio's own thresholds, low enough for the cut answers: nothing to flag
    low = preflight.held_out_scores(HELD, merged, cut, {"bleu": 0.0, "rouge_l": 0.1})
    assert low["gguf"]["passed"] and not low["gguf_below_gate_where_merged_passes"]
    # neither passes: the quantization is not what cost the gate
    neither = preflight.held_out_scores(HELD, cut, cut)
    assert not neither["merged"]["passed"] and not neither["gguf_below_gate_where_merged_passes"]


def test_the_held_out_lines_say_the_scores_and_warn_in_either_language():
    from core import i18n
    from core.i18n import render

    merged = [p["output"] for p in HELD]
    held = preflight.held_out_scores(HELD, merged, [" ".join(p["output"].split()[:4]) for p in HELD])
    held.pop("per_example")
    report = {"max_tokens": 48, "held_out": held}
    first, warning = releases.held_out_lines(report)
    assert first == (f"preflight, against the held-out answers of the same prompts (cut at 48 tokens): GGUF BLEU "
                     f"{held['gguf']['bleu']:.3f}, ROUGE-L {held['gguf']['rouge_l']:.3f}; merged model BLEU 1.000, "
                     f"ROUGE-L 1.000; the gate asks BLEU > 0.35 and ROUGE-L > 0.45")
    assert warning.startswith("warning: on these prompts the merged model passes the gate and the GGUF does not")
    vi = i18n.translations("vi").gettext
    assert "cổng phát hành yêu cầu BLEU > 0.35 và ROUGE-L > 0.45" in render(first, vi)
    assert render(warning, vi).startswith("cảnh báo:")
    # only a q4_k_m GGUF is pointed at q8_0; a q8_0 or f16 one has nothing finer to go to
    assert "--quant q8_0" in releases.held_out_lines(report, "q4_k_m")[1] and "q8_0" not in warning
    assert all("q8_0" not in releases.held_out_lines(report, quant)[1] for quant in ("q8_0", "f16"))
    assert "--quant q8_0" in render(releases.held_out_lines(report, "q4_k_m")[1], vi)
    held["gguf_below_gate_where_merged_passes"] = False
    assert len(releases.held_out_lines(report)) == 1
    assert releases.held_out_lines({"max_tokens": 48}) == []     # a release recorded before these scores


# ── on the trained default model ─────────────────────────────────────────────


@pytest.mark.slow
def test_preflight_blocks_a_drifted_template(pipeline, monkeypatch):
    """The alpaca-vi TEMPLATE on a chat-trained run renders a different prompt: blocked, with the reason.
    (A passing preflight on the same export: test_pipeline's CLI deploy.)"""
    from core.jobs import supervisor

    monkeypatch.setenv("VITUNE_HOME", str(pipeline["home"]))
    monkeypatch.setenv("VITUNE_SLOTS", "cpu")
    run_id, result = pipeline["run"], pipeline["export"]
    gguf = Path(result["gguf"]["q8_0"])
    drifted = modelfile.build(gguf, "alpaca-vi")
    job = supervisor.wait(preflights.submit(run_id, gguf, result["merged_dir"], drifted, n=2, max_tokens=8, actor=OPERATOR)["id"])
    assert job["state"] == "succeeded" and not job["result"]["passed"]
    assert "renders a different prompt from the one the run was trained with" in job["result"]["reason"]
    assert all(not e["prompt_matches_training"] for e in job["result"]["examples"])
    assert not json.loads((Path(job["job_dir"]) / preflight.REPORT).read_text())["passed"]


# ── Ollama's one name space, shared by every project ─────────────────────────

# what the real CLI prints, with exit code 1, for any command while no server runs (`ollama create`, `ollama rm`)
OLLAMA_CLI_WITHOUT_SERVER = """#!/bin/sh
echo "Error: could not connect to ollama app, is it running?" >&2
exit 1
"""


def _project_run(home, project: str) -> str:
    from core.access import projects
    from core.datasets import importer
    from core.training import presets, runs
    from tests.conftest import tiny_pairs, write_jsonl

    projects.add_project(project, actor=OPERATOR)
    version, _ = importer.import_files([write_jsonl(home / f"{project}.jsonl", tiny_pairs(12))], project,
                                       actor=OPERATOR, project=project)
    job = runs.submit_train(version["id"], presets.preset("quick test (CPU, 20 steps)"), actor=OPERATOR,
                            override_review="a run to release")   # in its version's project
    return job["run_id"]


def _prepared(run_id: str, name: str, gguf: Path) -> dict:
    return {"run_id": run_id, "name": name, "quantization": "q8_0", "gguf": str(gguf),
            "gguf_sha256": exporter.sha256(gguf), "verdict": None, "override_reason": "names test"}


def _active(name: str) -> list[tuple[str, str]]:
    model, _, tag = name.partition(":")
    return [(r["project"], r["id"]) for r in store.rows("SELECT project, id FROM releases WHERE name = ? AND tag = ? "
                                                        "AND state = 'active' ORDER BY created_at", [model, tag])]


def test_one_projects_ollama_name_is_not_anothers_to_take_delete_or_roll_back(home, tmp_path, monkeypatch):
    """Project B can neither release under a name project A's active release holds, nor mark A's release
    replaced, nor remove A's model from Ollama by deleting a release of its own of that name; a release
    whose ``ollama create`` failed is not recorded; a deleted release is not rolled back to. (The record
    logic on a real DuckDB home, up to Ollama's boundary: no Ollama server runs here.)"""
    assert ollama.ollama_binary() is None, "this test expects no ollama on PATH"
    run_a, run_b = _project_run(home, "acme"), _project_run(home, "beta")
    gguf = tmp_path / "exports" / "model-q8_0.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF" + bytes(64))
    quiet = {"actor": OPERATOR, "on_progress": lambda m: None}

    # no Ollama on this machine: A's release is recorded (its GGUF and Modelfile, to create where Ollama is)
    a1 = releases.create_and_record(_prepared(run_a, "vi-cskh:v1", gguf), "FROM x\n", None, **quiet)
    assert a1["ollama_status"] == ollama.NO_BINARY and _active("vi-cskh:v1") == [("acme", a1["id"])]
    # B asks for the same name: refused, nothing recorded, A's release stays active
    before = store.one("SELECT count(*) AS n FROM releases")["n"]
    with pytest.raises(releases.DeployRefused, match="vi-cskh:v1 is the name of another project's active release"):
        releases.create_and_record(_prepared(run_b, "vi-cskh:v1", gguf), "FROM x\n", None, **quiet)
    with pytest.raises(releases.DeployRefused, match="another project's active release"):
        releases.prepare(run_b, "vi-cskh:v1", actor=OPERATOR, override_reason="x", on_progress=lambda m: None)
    assert store.one("SELECT count(*) AS n FROM releases")["n"] == before
    assert _active("vi-cskh:v1") == [("acme", a1["id"])]
    # another tag is another name; A releasing the same name again replaces A's own release only
    b1 = releases.create_and_record(_prepared(run_b, "vi-cskh:beta", gguf), "FROM x\n", None, **quiet)
    a2 = releases.create_and_record(_prepared(run_a, "vi-cskh:v1", gguf), "FROM x\n", None, **quiet)
    assert releases.get_release(a1["id"])["state"] == "replaced" and releases.get_release(b1["id"])["state"] == "active"

    # with the ollama CLI on PATH and no server answering, `ollama create` fails: nothing is recorded
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ollama").write_text(OLLAMA_CLI_WITHOUT_SERVER)
    (bin_dir / "ollama").chmod(0o755)
    path = os.environ["PATH"]
    monkeypatch.setenv("PATH", f"{bin_dir}:{path}")
    monkeypatch.setattr(ollama, "OLLAMA_HOST", f"http://127.0.0.1:{free_port()}")   # where nothing listens
    before = store.one("SELECT count(*) AS n FROM releases")["n"]
    with pytest.raises(releases.DeployRefused, match="vi-new:v1 was not released, nothing is recorded: the Ollama "
                                                     "server is not running"):
        releases.create_and_record(_prepared(run_b, "vi-new:v1", gguf), "FROM x\n", None, **quiet)
    with pytest.raises(releases.DeployRefused, match="was not released, nothing is recorded"):
        releases.rollback(b1["id"], **quiet)
    assert store.one("SELECT count(*) AS n FROM releases")["n"] == before

    # a release of A's name in B recorded before names were checked (as the old code did): deleting it
    # leaves Ollama's model alone (it is A's), and A's release stays active
    store.execute("INSERT INTO releases (id, name, tag, run_id, gguf_path, gguf_sha256, quantization, modelfile, "
                  "ollama_status, state, created_by, created_at, project) VALUES ('rel-old-b', 'vi-cskh', 'v1', ?, ?, "
                  "?, 'q8_0', 'FROM x', 'created; smoke test answered: Dạ', 'active', 'nam', ?, 'beta')",
                  [run_b, str(gguf), exporter.sha256(gguf), store.now()])
    gone = releases.delete_release("rel-old-b", actor=OPERATOR)
    assert gone["state"] == "deleted" and "left alone" in gone["ollama_status"]
    assert _active("vi-cskh:v1") == [("acme", a2["id"])]
    # a deleted release is not rolled back to, whoever asks
    with pytest.raises(releases.DeployRefused, match="rel-old-b was deleted"):
        releases.rollback("rel-old-b", **quiet)

    # A deletes its release (it never reached Ollama: only the record changes); the name is free, B takes it;
    # A's older, replaced release of that name is then not A's to roll back to
    monkeypatch.setenv("PATH", path)   # no Ollama again, as on this machine
    assert "left alone" in releases.delete_release(a2["id"], actor=OPERATOR)["ollama_status"]
    b2 = releases.create_and_record(_prepared(run_b, "vi-cskh:v1", gguf), "FROM x\n", None, **quiet)
    with pytest.raises(releases.DeployRefused, match="another project's active release"):
        releases.rollback(a1["id"], **quiet)
    assert _active("vi-cskh:v1") == [("beta", b2["id"])]
    assert releases.get_release(a1["id"])["state"] == "replaced"
