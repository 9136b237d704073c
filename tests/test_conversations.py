"""Saved conversations: kept with their turns (engineers and above, audited), refused with the turn that is
wrong, offered by a demo link as its prompts, and replayed against a model on the default model through a
real inference worker (each answer streamed and carried into the next turn's history)."""
import json

import pytest

from core import store
from core.access.principal import AccessDenied
from core.playground import conversations as convs
from core.evaluation.inference import Decoding
from tests.conftest import OPERATOR, cli, person

Q1 = "Khách hàng phàn nàn về hóa đơn sai, phải xử lý thế nào?"
Q2 = "Viết lại câu trả lời trên ngắn gọn hơn."
TURNS = [{"role": "user", "content": Q1}, {"role": "assistant", "content": "Dạ, em xin lỗi anh/chị…"},
         {"role": "user", "content": Q2}]


def test_a_conversation_is_saved_listed_and_deleted_by_engineers(home):
    lan = person("lan", "engineer")
    conv = convs.save("Hóa đơn sai — CSKH", TURNS, model="run:run-x", system="Bạn là trợ lý CSKH.", actor=lan)
    assert conv["turns"] == TURNS and convs.questions(conv) == [Q1, Q2]
    assert [c["id"] for c in convs.list_saved(lan)] == [conv["id"]]
    assert convs.get(conv["id"], person("viewer-vy", "viewer"))["title"] == "Hóa đơn sai — CSKH"   # viewers read it
    with pytest.raises(AccessDenied):
        convs.save("x", TURNS, actor=person("vy", "viewer"))
    other = person("an", "engineer", projects=["khach-khac"])
    assert convs.list_saved(other) == []
    with pytest.raises(convs.ConversationError, match="no saved conversation"):
        convs.get(conv["id"], other)
    convs.delete(conv["id"], actor=lan)
    assert convs.list_saved(lan) == []
    assert [r["action"] for r in store.rows("SELECT action FROM audit_log WHERE subject = ? ORDER BY id", [conv["id"]])] \
        == ["conversation.saved", "conversation.deleted"]


@pytest.mark.parametrize("turns, says", [
    ([], "at least one turn"),
    ([{"role": "assistant", "content": "Chào"}], "turn 1: a conversation starts with the user's question"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "turn 2: two user turns in a row"),
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], "turn 2: the role is user or assistant"),
    ([{"role": "user", "content": "  "}], "turn 1: the user's text is empty"),
    ([{"role": "user", "content": "a", "extra": 1}], "turn 1: a turn is"),
    ([{"role": "user", "content": "x" * 8001}], "turn 1: 8,001 characters, more than 8,000"),
    ([{"role": "user" if i % 2 == 0 else "assistant", "content": "a"} for i in range(41)], "at most 40 turns"),
])
def test_a_bad_conversation_is_refused_with_the_turn_that_is_wrong(home, turns, says):
    with pytest.raises(convs.ConversationError, match=says.replace("(", r"\(").replace(")", r"\)")):
        convs.save("t", turns, actor=OPERATOR)
    assert convs.list_saved(OPERATOR) == []


def test_the_cli_saves_lists_and_a_demo_link_offers_the_questions(home, tmp_path):
    f = tmp_path / "conv.json"
    f.write_text(json.dumps(TURNS, ensure_ascii=False), encoding="utf-8")
    made = json.loads(cli("conversations", "save", "--title", "Hóa đơn sai", "--file", str(f), "--json", home=home).stdout)
    assert made["turns"] == 3
    listed = json.loads(cli("conversations", "list", "--json", home=home).stdout)
    assert [c["id"] for c in listed] == [made["id"]] and listed[0]["turns"] == TURNS
    bad = tmp_path / "bad.json"
    bad.write_text('[{"role": "user",\n "content": }]', encoding="utf-8")
    got = cli("conversations", "save", "--title", "x", "--file", str(bad), home=home, check=False)
    assert got.returncode == 2 and f"{bad}: line 2, column 13: not JSON" in got.stderr and "Traceback" not in got.stderr
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps([{"role": "assistant", "content": "a"}]), encoding="utf-8")
    got = cli("conversations", "save", "--title", "x", "--file", str(wrong), home=home, check=False)
    assert got.returncode == 2 and "turn 1: a conversation starts with the user's question" in got.stderr
    got = cli("conversations", "replay", made["id"], "--model", "gguf:/etc/passwd", home=home, check=False)
    assert got.returncode == 2 and "the playground offers no model 'gguf:/etc/passwd'" in got.stderr   # no path typed in


@pytest.mark.slow   # a real inference worker on the default model
def test_a_replay_asks_the_questions_again_and_carries_each_answer_on(home, default_model):
    from core.playground import playground

    conv = convs.save("Hóa đơn sai", TURNS, actor=OPERATOR)
    target = convs.target(f"base:{default_model}", actor=OPERATOR)
    infos: list = []
    answers = []
    for n, question, pieces in convs.replay(conv, target, actor=OPERATOR, decoding=Decoding(max_new_tokens=24),
                                           infos=infos):
        got = list(pieces)
        assert len(got) >= 2, got   # streamed in pieces
        answers.append((n, question, "".join(got)))
    assert [(n, q) for n, q, _ in answers] == [(1, Q1), (2, Q2)] and all(a for _, _, a in answers)
    # turn 2's prompt holds this replay's answer to turn 1, not the saved one
    assert answers[0][2] in infos[1]["prompt"] and TURNS[1]["content"] not in infos[1]["prompt"]
    assert len(playground.servers()) == 1


def _playground(state: dict | None = None):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import REPO

    at = AppTest.from_file(str(REPO / "pages" / "playground.py"), default_timeout=600)
    at.session_state["principal"] = OPERATOR
    for k, v in (state or {}).items():
        at.session_state[k] = v
    return at.run()


def test_the_playground_saves_the_conversation_on_screen(home, default_model):
    target = f"base:{default_model}"
    at = _playground({"chats": {target: [dict(t) for t in TURNS[:2]]}, "chat_model": target})
    assert not at.exception, [e.value for e in at.exception]
    at.text_input(key="conv-title").input("Hóa đơn sai").run()
    at.button(key="conv-save").click().run()
    [conv] = convs.list_saved(OPERATOR)
    assert conv["title"] == "Hóa đơn sai" and conv["turns"] == TURNS[:2] and conv["model"] == target
    assert any(conv["id"] in s.value for s in at.success)
    assert at.selectbox(key="conv-pick").options[0].startswith("Hóa đơn sai (1 questions")


@pytest.mark.slow   # a real inference worker on the default model
def test_the_playground_replays_a_saved_conversation_with_the_chosen_model(home, default_model):
    conv = convs.save("Hóa đơn sai", TURNS, actor=OPERATOR)
    target = f"base:{default_model}"
    at = _playground({"chat_model": target, "max_new": 16})
    at.button(key="conv-replay").click().run()
    assert not at.exception, [e.value for e in at.exception]
    history = at.session_state["chats"][target]
    assert [t["role"] for t in history] == ["user", "assistant", "user", "assistant"]
    assert [t["content"] for t in history[::2]] == convs.questions(conv) and all(t["content"] for t in history[1::2])


def test_an_empty_answer_in_the_history_is_said_not_an_empty_bubble(home, default_model):
    target = f"base:{default_model}"
    at = _playground({"chats": {target: [{"role": "user", "content": Q1}, {"role": "assistant", "content": ""}]},
                      "chat_model": target})
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.text] == ["(empty answer)"]
