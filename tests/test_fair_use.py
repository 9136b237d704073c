"""One asker cannot hold the models for everyone (issue 24, item 8): a question and a system text have a
length limit in core (the pages' inputs stop there too), a conversation is cut to the model's context in
the worker (``server.fit``, with the default model's real tokenizer here), and each principal, a demo
link's visitors together, may ask so many questions a minute and have so many answers under way. (That
``ensure`` waits for a loading worker without ticking the supervisor: test_playground.py, with a real
worker.)"""
from __future__ import annotations

import pytest

from core import prompt_format, store
from core.access.principal import Principal
from core.models import load_tokenizer
from core.playground import playground, server
from tests.conftest import OPERATOR, person

LONG = "Khách hàng phàn nàn về hóa đơn sai, phải xử lý thế nào? "   # 56 characters


def test_a_question_or_a_system_text_beyond_the_limit_is_refused_before_any_worker_starts(home, default_model):
    too_long = [{"role": "user", "content": "x" * (playground.MAX_QUESTION_CHARS + 1)}]
    with pytest.raises(playground.PlaygroundError, match=f"the question is {playground.MAX_QUESTION_CHARS + 1} "
                                                         f"characters long; at most {playground.MAX_QUESTION_CHARS}"):
        next(playground.ask_stream(str(default_model), None, "chat", too_long, actor=OPERATOR))
    with pytest.raises(playground.PlaygroundError, match="the system text is"):
        next(playground.ask_stream(str(default_model), None, "chat", [{"role": "user", "content": "Xin chào"}],
                                   system="s" * (playground.MAX_SYSTEM_CHARS + 1), actor=OPERATOR))
    with pytest.raises(playground.PlaygroundError, match="the question is"):
        playground.ask(str(default_model), None, "chat", "Xin chào", context="y" * playground.MAX_QUESTION_CHARS,
                       actor=OPERATOR)
    assert store.one("SELECT count(*) AS n FROM jobs")["n"] == 0   # no worker was asked to load anything
    # a long conversation loses its oldest turns, never its question
    history = [{"role": r, "content": LONG * 60} for _ in range(20) for r in ("user", "assistant")]
    kept = playground.check_prompt(history[:-1], None)
    assert kept[-1] == history[-2] and kept[0]["role"] == "user" and len(kept) < len(history) - 1
    assert sum(len(t["content"]) for t in kept) <= playground.MAX_CONVERSATION_CHARS


def test_the_worker_cuts_a_conversation_to_the_models_context(default_model):
    tok = load_tokenizer(str(default_model))
    count = lambda text: len(tok(text, add_special_tokens=True)["input_ids"])  # noqa: E731  (as the worker counts)
    history = [{"role": r, "content": f"[{n}] " + LONG * 4} for n in range(12) for r in ("user", "assistant")]
    question = history[:-1]
    prompt, room, cut = server.fit(question, None, "chat", tok, count, context=512, max_new_tokens=128)
    assert count(prompt) + room <= 512 and room == 128
    assert cut["turns_dropped"] > 0 and cut["chars_cut"] == 0
    assert prompt.rstrip().endswith(prompt_format.render_messages(question[-1:], "chat", tok).rstrip())
    assert f"{question[-1]['content'].strip()}" in prompt and "[0] " not in prompt   # the oldest went first
    # one question longer than the context: its beginning is kept, as much as fits
    one = [{"role": "user", "content": "Câu hỏi: " + LONG * 200}]
    prompt, room, cut = server.fit(one, "Bạn là trợ lý.", "chat", tok, count, context=512, max_new_tokens=1000)
    assert room == 256 and count(prompt) + room <= 512 and cut["chars_cut"] > 0 and "Câu hỏi: " in prompt
    assert count(prompt) > 512 - 256 - 40   # cut no more than it must
    with pytest.raises(prompt_format.FormatError, match="the system text alone is more than"):
        server.fit(one, LONG * 100, "chat", tok, count, context=512, max_new_tokens=128)


def test_each_principal_has_its_rate_and_a_demo_links_visitors_share_theirs():
    nam, chi = person("nam-rate"), person("chi-rate")
    for _ in range(playground.RATE_PER_MINUTE):
        with playground.turn(nam):
            pass
    with pytest.raises(playground.PlaygroundError, match=f"too many questions: at most "
                                                         f"{playground.RATE_PER_MINUTE} a minute"):
        with playground.turn(nam):
            pass
    with playground.turn(chi):   # another principal asks as before
        pass
    # a demo link is one principal, whichever browser asks through it
    visitors = [Principal(name="demo:link-rate", role="demo", kind="demo", grant={"project": "default"})
                for _ in range(2)]
    held = [playground.turn(visitors[n % 2]) for n in range(playground.AT_ONCE)]
    for h in held:
        h.__enter__()
    with pytest.raises(playground.PlaygroundError, match="answers are being generated for you already"):
        with playground.turn(visitors[0]):
            pass
    held.pop().__exit__(None, None, None)   # one answer ends: the next may start
    with playground.turn(visitors[1]):
        pass
    for h in held:
        h.__exit__(None, None, None)
