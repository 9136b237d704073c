"""Streaming chat in the playground, with a real inference worker on the default model: the answer comes
piece by piece (the first before the generation ends), a conversation's earlier turns are in the prompt
the worker renders through core.prompt_format, closing the stream stops the generation, and a model
that cannot load is a clear error at the first piece."""
import json
import urllib.request
from pathlib import Path

import pytest

from core import paths, prompt_format
from core.access.principal import AccessDenied
from core.evaluation import inference
from core.playground import playground
from core.evaluation.inference import Decoding
from tests.conftest import OPERATOR, person

pytestmark = pytest.mark.slow
Q1 = "Khách hàng phàn nàn về hóa đơn sai, phải xử lý thế nào?"
Q2 = "Viết lại câu trả lời trên ngắn gọn hơn."


def _health(job: dict) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{job['server']['port']}/health",
                                 headers={"Authorization": f"Bearer {job['config']['token']}"})
    return json.loads(urllib.request.urlopen(req, timeout=30).read())


def _turn(base: str, messages: list[dict], decoding: Decoding) -> tuple[list[str], dict, list[bool]]:
    info: dict = {}
    pieces, done_when_seen = [], []
    for piece in playground.ask_stream(base, None, "chat", messages, decoding=decoding, actor=OPERATOR, info=info):
        pieces.append(piece)
        done_when_seen.append(bool(info))   # info fills only when the worker's last line (done) is read
    return pieces, info, done_when_seen


def test_a_two_turn_conversation_streams_piece_by_piece(home, default_model, tokenizer):
    base, decoding = str(default_model), Decoding(max_new_tokens=40)
    first = [{"role": "user", "content": Q1}]
    pieces, info, seen = _turn(base, first, decoding)
    assert len(pieces) >= 3 and all(pieces), pieces
    assert seen == [False] * len(pieces)                     # every piece arrived before the answer was done
    assert info["first_piece_tokens"] < info["new_tokens"]   # the first piece left while tokens were still coming
    assert info["pieces"] == len(pieces)
    assert info["prompt"] == prompt_format.render_messages(first, "chat", tokenizer)
    answer = "".join(pieces)
    [job] = playground.servers()
    # the pieces join into exactly the batch path's answer for that prompt (same worker, greedy)
    assert playground._post(job, "/generate", {"prompts": [info["prompt"]], "decoding": decoding.to_dict()},
                            600)["answers"] == [answer]

    second = first + [{"role": "assistant", "content": answer}, {"role": "user", "content": Q2}]
    pieces2, info2, seen2 = _turn(base, second, decoding)
    assert len(pieces2) >= 3 and seen2 == [False] * len(pieces2)
    assert info2["prompt"] == prompt_format.render_messages(second, "chat", tokenizer)
    assert info2["prompt"].startswith(info["prompt"]) and answer in info2["prompt"] and Q1 in info2["prompt"]
    assert info2["prompt"].endswith(prompt_format.render_messages([{"role": "user", "content": Q2}], "chat",
                                                                  tokenizer))
    assert info2["prompt_tokens"] > info["prompt_tokens"] + info["new_tokens"] // 2
    assert len(playground.servers()) == 1                    # both turns from one worker
    playground.stop(job["id"], actor=OPERATOR)


def test_closing_the_stream_stops_the_generation_and_the_worker_answers_again(home, default_model):
    base = str(default_model)
    stream = playground.ask_stream(base, None, "chat", [{"role": "user", "content": Q1}],
                                   decoding=Decoding(max_new_tokens=400), actor=OPERATOR)
    assert next(stream)
    stream.close()                                            # the page's stop button
    info: dict = {}
    again = "".join(playground.ask_stream(base, None, "chat", [{"role": "user", "content": "Xin chào"}],
                                          decoding=Decoding(max_new_tokens=8), actor=OPERATOR, info=info))
    assert again and info["new_tokens"] <= 8
    [job] = playground.servers()
    assert _health(job)["requests"] == 2
    log = (Path(job["job_dir"]) / "worker.log").read_text()
    stopped = [line for line in log.splitlines() if "stopped by the client" in line]
    assert len(stopped) == 1 and int(stopped[0].split("after ")[1].split()[0]) < 400, log[-2000:]
    playground.stop(job["id"], actor=OPERATOR)


def test_access_and_the_conversation_are_checked_before_anything_is_generated(home, default_model):
    outsider = person("outsider", "viewer", projects=["another"])
    with pytest.raises(AccessDenied):
        playground.ask_stream(str(default_model), None, "chat", [{"role": "user", "content": Q1}], actor=outsider,
                              project="default")
    with pytest.raises(playground.PlaygroundError, match="turn 2 is 'user', expected 'assistant'"):
        next(playground.ask_stream(str(default_model), None, "chat", [{"role": "user", "content": "a"}] * 2,
                                   actor=OPERATOR))
    assert playground.servers() == []                         # no worker was started for either


def test_a_model_that_cannot_load_is_a_clear_error_at_the_first_piece(home, tmp_path):
    model = paths.base_models_dir() / "not-a-model"  # a model folder by its config, without tokenizer or weights
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "gemma3_text"}')
    stream = playground.ask_stream(str(model), None, "chat", [{"role": "user", "content": Q1}],
                                   actor=OPERATOR)
    with pytest.raises(playground.PlaygroundError, match=r"the model could not be served \(inference job \d+ failed\)"):
        next(stream)


def test_the_stream_filter_holds_back_stop_strings_and_white_space():
    f = inference.StopFilter(["### Hướng dẫn:"])
    out = [f.feed(p) for p in ["  \n", "Dạ,", " em ", "xin", " chào.\n\n#", "## Hướng", " dẫn:", " thêm"]]
    assert out == ["", "Dạ,", " em", " xin", " chào.", "", "", ""] and f.stopped and f.finish() == ""
    g = inference.StopFilter([])
    assert [g.feed("a "), g.feed(" b\n"), g.finish()] == ["a", "  b", ""]


def test_a_conversation_renders_as_training_renders_a_pair(tokenizer):
    pair = {"instruction": "Hỏi", "input": "ngữ cảnh", "output": "Đáp"}
    for fmt in prompt_format.FORMATS:
        turns = [{"role": "user", "content": "Hỏi", "input": "ngữ cảnh"}, {"role": "assistant", "content": "Đáp"}]
        assert prompt_format.render_messages(turns, fmt, tokenizer, add_generation_prompt=False) == \
            prompt_format.render_training_text(pair, fmt, tokenizer)
        two = prompt_format.render_messages(turns + [{"role": "user", "content": "Tiếp"}], fmt, tokenizer)
        assert two.startswith(prompt_format.render_training_text(pair, fmt, tokenizer)) and "Tiếp" in two
    with pytest.raises(prompt_format.FormatError, match="end with a user turn"):
        prompt_format.render_messages(turns, "chat", tokenizer)


def test_the_playground_page_chats_two_turns_with_the_default_model(home, default_model):
    """The page in Streamlit's AppTest, on an empty studio: the default model is offered, two turns go
    through st.chat_input, and the history keeps both turns (what the worker saw: the tests above)."""
    from streamlit.testing.v1 import AppTest

    from tests.conftest import REPO

    at = AppTest.from_file(str(REPO / "pages" / "playground.py"), default_timeout=600)
    at.session_state["principal"] = OPERATOR
    at.run()
    assert not at.exception and at.selectbox[0].value.startswith("base:")
    at.slider(key="max_new").set_value(32)
    at.chat_input[0].set_value(Q1).run()
    assert not at.exception, [e.value for e in at.exception]
    at.chat_input[0].set_value(Q2).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    [history] = at.session_state["chats"].values()
    assert [t["role"] for t in history] == ["user", "assistant", "user", "assistant"]
    assert history[0]["content"] == Q1 and history[2]["content"] == Q2 and history[1]["content"]
    assert len(at.chat_message) == 4
    [job] = playground.servers()
    playground.stop(job["id"], actor=OPERATOR)


def test_side_by_side_streams_the_default_model_and_its_gguf_at_once(home, default_model, tokenizer):
    """Two models on one conversation, their streams consumed at once (threads, one queue): the default
    model in transformers and its own GGUF in llama.cpp (an inference worker of the GGUF kind), each
    rendering the same prompt through core.prompt_format."""
    targets = {t["kind"]: t for t in playground.targets_for(OPERATOR, "default", [], [])}
    hf, gguf = targets["base"], targets["gguf"]
    for t in (hf, gguf):
        playground.prepare(t, actor=OPERATOR, project="default")
    messages = [{"role": "user", "content": Q1}]
    infos: dict = {"hf": {}, "gguf": {}}
    events = list(playground.side_by_side({
        name: playground.stream_target(t, messages, decoding=Decoding(max_new_tokens=48), actor=OPERATOR,
                                       project="default", info=infos[name])
        for name, t in (("hf", hf), ("gguf", gguf))}))
    assert [e for e in events if e[2] is not None] == []
    for name in ("hf", "gguf"):
        pieces = [p for n, p, _ in events if n == name and p is not None]
        assert len(pieces) >= 2 and infos[name]["pieces"] == len(pieces)
        assert [n for n, p, _ in events if p is None].count(name) == 1 and events.index((name, None, None)) > \
            events.index((name, pieces[0], None))
        assert infos[name]["prompt"] == prompt_format.render_messages(messages, "chat", tokenizer)
    # the two generations overlapped: each began before the other ended
    assert infos["hf"]["started_at"] < infos["gguf"]["ended_at"] and infos["gguf"]["started_at"] < infos["hf"]["ended_at"]
    jobs = {j["config"].get("gguf") or "hf": j for j in playground.servers()}
    assert set(jobs) == {"hf", gguf["gguf"]} and jobs[gguf["gguf"]]["server"]["weights_gib"] > 0.1
    for job in jobs.values():
        playground.stop(job["id"], actor=OPERATOR)


def test_an_ollama_tag_is_offered_when_a_server_answers_and_is_a_clear_error_otherwise(home):
    from core.deploy import ollama

    problem = ollama.server_problem()
    assert problem, "an Ollama server answers here: this test covers the machine without one"
    assert not [t for t in playground.targets_for(OPERATOR, "default", []) if t["kind"] == "ollama"]
    [tagged] = [t for t in playground.targets_for(OPERATOR, "default", [], [("sao-viet:v1", "chat")])
                if t["kind"] == "ollama"]
    stream = playground.stream_target(tagged, [{"role": "user", "content": Q1}], actor=OPERATOR, project="default")
    with pytest.raises(playground.PlaygroundError, match=r"^Ollama tag sao-viet:v1: the Ollama server is not running"):
        next(stream)


def test_the_playground_page_streams_two_models_side_by_side(home, default_model):
    """The page's side-by-side mode in AppTest on an empty studio: the default model against its own GGUF
    (the right column's default), both answers drawn into their columns."""
    from streamlit.testing.v1 import AppTest

    from tests.conftest import REPO

    at = AppTest.from_file(str(REPO / "pages" / "playground.py"), default_timeout=600)
    at.session_state["principal"] = OPERATOR
    at.run()
    at.radio(key="mode").set_value("Side by side").run()
    assert at.selectbox(key="side_a").value.startswith("base:") and at.selectbox(key="side_b").value.startswith("gguf:")
    at.slider(key="max_new").set_value(32)
    next(b for b in at.button if b.label == "Ask both").click().run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    last = at.session_state["side_last"]
    assert last["a_answer"] and last["b_answer"]
    shown = [m.value for m in at.markdown]
    assert playground_md(last["a_answer"]) in shown and playground_md(last["b_answer"]) in shown
    for job in playground.servers():
        playground.stop(job["id"], actor=OPERATOR)


def playground_md(text: str) -> str:
    from pages.common import md

    return md(text)
