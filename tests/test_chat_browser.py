"""The playground in real Chromium against the real server (scripts/serve.py), on the default pipeline's
studio (tests/conftest.py's ``pipeline``: the default model tuned 40 steps, evaluated, exported to GGUF):

- a two-turn conversation with the default model, whose answers are seen on screen while they grow (a
  first, partial text shows while the Stop button is still there, before the answer has ended);
- side by side, the tuned run (transformers) and its q8_0 export (llama.cpp) on one prompt: at the moment
  the later column drew its first piece, both columns showed text and neither had drawn its last;
- a blind vote between the same two, stored in the votes table with the prompt, both models and the voter;
  ``python -m core votes winrate`` and the Evaluate page's Preference votes tab (in the browser) give the
  pair's win rates.

The times (to the first piece on screen, to the end) are printed, never asserted. Labels are read in
English (tests/conftest.py sets VITUNE_LANGUAGE=en); elements are found by data-testid and widget key
(``.st-key-KEY``) where Streamlit gives them. The vote and the inference jobs stay in the pipeline's
home (the session's other tests that share it do not count votes)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.conftest import settled as _idle, studio_home as _home, OPERATOR, cli, free_port, start_studio, choose

pytestmark = [pytest.mark.slow, pytest.mark.extended]

TURNS = ["Khách hàng phàn nàn về hóa đơn sai, phải xử lý thế nào?", "Viết lại câu trả lời trên ngắn gọn hơn."]
SIDE_Q = "Khách hàng phàn nàn về hóa đơn sai, phải xử lý thế nào?"   # the page's own default question
VOTE_Q = "Tôi muốn đổi địa chỉ giao hàng cho đơn đã đặt, phải làm sao?"
EXCEPTION = '[data-testid="stException"]'
ERROR = '[data-testid="stAlertContentError"]'
POLL_MS = 30
ANSWER_LIMIT_S = 900   # a first question starts its model's inference worker, on 2 shared cores

# the answer's text in an element: the markdown the model's pieces were drawn into, not the Stop button's
# label, the spinner's words or a column's bold title
_ANSWER = """(el) => Array.from(el.querySelectorAll('[data-testid="stMarkdownContainer"]'))
    .filter(n => !n.closest('button, [data-testid="stSpinner"]') && !n.querySelector('strong'))
    .map(n => n.innerText).join(' ')"""
# one look at the page a poll (one round trip, so that polling costs the 2 cores little): the script's
# state, the Stop button, the chat messages' answers or the side-by-side columns' answers, and any error
_SNAPSHOT_JS = """() => {
    const answer = """ + _ANSWER + """;
    const app = document.querySelector('[data-testid="stApp"]');
    const error = document.querySelector('[data-testid="stException"], [data-testid="stAlertContentError"]');
    return {state: app ? app.getAttribute('data-test-script-state') : null,
            stop: document.querySelector('.st-key-stop') !== null,
            messages: Array.from(document.querySelectorAll('[data-testid="stChatMessage"]')).map(answer),
            columns: Array.from(document.querySelectorAll('[data-testid="stColumn"]'))
                .filter(c => c.querySelector('strong')).map(answer),
            error: error ? error.innerText : null};
}"""


@pytest.fixture(scope="module")
def studio(pipeline, default_model):
    """The studio's server on the pipeline's home (operator mode on loopback), and the two models the test
    puts side by side: the tuned run and its q8_0 export (the quantization test_pipeline keeps the stop of)."""
    from core.playground import playground

    proc = start_studio(pipeline["home"], port := free_port())
    with _home(pipeline["home"]):
        offered = playground.models_for(OPERATOR)
        targets = playground.targets_for(OPERATOR, None, offered, [])
        scores = next(m for m in offered if m["run_id"] == pipeline["run"])   # its gate verdict's evaluation
        run = next(t for t in targets if t["id"] == f"run:{pipeline['run']}")
        [export] = [t for t in targets if t["kind"] == "gguf" and t.get("run_id") == pipeline["run"]
                    and " q8_0 " in t["label"]]
        base = next(t for t in targets if t["kind"] == "base")   # the default model alone (transformers)
        yield {"url": f"http://127.0.0.1:{port}", "home": pipeline["home"], "pipeline": pipeline, "run": run,
               "export": export, "scores": scores, "base": base}
        proc.terminate()
        proc.wait(20)
        for job in playground.servers():   # the inference workers end with the test, not a minute later
            playground.stop(job["id"], actor=OPERATOR)


@pytest.fixture
def page(chromium):
    """A tab of its own (a browser context: a Streamlit session of its own)."""
    context = chromium.new_context(viewport={"width": 1500, "height": 1400})
    p = context.new_page()
    p.set_default_timeout(120_000)
    yield p
    context.close()


def _norm(text: str) -> str:
    return " ".join(text.split())


def _clean(page) -> None:
    assert page.locator(EXCEPTION).count() == 0, page.locator(EXCEPTION).first.inner_text()
    assert page.locator(ERROR).count() == 0, page.locator(ERROR).all_inner_texts()
    body = page.inner_text("body")
    assert "Traceback" not in body and "an unexpected error" not in body, body[-3000:]


def _open_playground(page, url: str) -> None:
    page.goto(f"{url}/playground")
    page.get_by_role("heading", name="Playground").first.wait_for()
    page.locator('[data-testid="stChatInputTextArea"]').wait_for()
    _idle(page)
    _clean(page)


def _mode(page, name: str) -> None:
    page.locator(".st-key-mode").get_by_text(name, exact=True).click()
    _idle(page)


def _selected(page, key: str) -> str:
    """What the selectbox of widget key ``key`` shows (its combobox's text)."""
    return page.locator(f".st-key-{key}").get_by_role("combobox").input_value()


def _choose(page, key: str, label: str) -> None:
    """Pick ``label`` in the selectbox of widget key ``key``, as a person would: open its list, click it."""
    if _selected(page, key) == label:
        return
    choose(page, key, label)
    _idle(page)
    assert _selected(page, key) == label, _selected(page, key)


_CELLS_JS = """(el) => ({
    header: Array.from(el.querySelectorAll('table[role="grid"] th[aria-colindex]'))
        .map(th => [th.getAttribute('aria-colindex'), th.innerText]),
    cells: Array.from(el.querySelectorAll('table[role="grid"] td[data-testid^="glide-cell-"]'))
        .map(td => [td.getAttribute('data-testid'), td.getAttribute('aria-colindex'), td.innerText])})"""


def _dataframe(page, frame) -> list[dict]:
    """The rows of an st.dataframe as it shows them, read from the grid's accessibility table (only the
    columns in view are in it: the grid is scrolled sideways until every column has been seen)."""
    frame.locator('table[role="grid"] td').first.wait_for(state="attached")
    header, cells = {}, {}
    scroller = frame.locator(".dvn-scroller").first
    for _ in range(40):
        got = frame.evaluate(_CELLS_JS)
        header.update({int(i): _norm(t) for i, t in got["header"]})
        for testid, col, text in got["cells"]:
            cells[(int(testid.rsplit("-", 1)[1]), int(col))] = _norm(text)
        if scroller.count() == 0 or scroller.evaluate(
                "s => { const was = s.scrollLeft; s.scrollLeft = was + s.clientWidth / 2; return s.scrollLeft === was; }"):
            break
        page.wait_for_timeout(300)
    rows = sorted({r for r, _ in cells})
    return [{header.get(c, str(c)): cells[(r, c)] for (rr, c) in sorted(cells) if rr == r} for r in rows]


def _snapshot(page) -> dict:
    got = page.evaluate(_SNAPSHOT_JS)
    assert got["error"] is None, got["error"]   # no exception box, no error message, at any moment
    got["messages"] = [_norm(t) for t in got["messages"]]
    got["columns"] = [_norm(t) for t in got["columns"]]
    return got


def _watch_turn(page, index: int) -> dict:
    """Poll the chat message at ``index`` (the assistant's answer) from the moment the question was sent:
    when its text first is non-empty, and when the Stop button detaches (the answer is done and the page
    reruns with it in the history); the distinct texts seen while Stop was attached."""
    t0 = time.perf_counter()
    seen, first, stop_seen, ended = [], None, None, None
    while time.perf_counter() - t0 < ANSWER_LIMIT_S:
        now = _snapshot(page)
        at = time.perf_counter() - t0
        if now["stop"] and stop_seen is None:
            stop_seen = at
        text = now["messages"][index] if len(now["messages"]) > index else ""
        if text and now["stop"] and (not seen or seen[-1][1] != text):
            seen.append((at, text))
            first = first if first is not None else at
        if stop_seen is not None and not now["stop"]:
            ended = at
            break
        page.wait_for_timeout(POLL_MS)
    assert ended is not None, f"the answer did not end within {ANSWER_LIMIT_S} s (texts seen: {seen[-3:]})"
    _idle(page)
    final = _snapshot(page)["messages"][index]
    return {"seen": seen, "first": first, "stop_seen": stop_seen, "ended": ended, "final": final}


def test_a_two_turn_conversation_streams_on_screen(studio, page):
    _open_playground(page, studio["url"])
    run = studio["run"]
    assert _selected(page, "chat_model") == run["label"]   # the tuned run is the chat's default
    # the chat is with the default model itself: the run, tuned 40 steps on single-turn pairs, answers any
    # second turn with nothing (its first token ends the turn; seen with two different second questions)
    _choose(page, "chat_model", studio["base"]["label"])
    box = page.locator('[data-testid="stChatInputTextArea"]')
    turns = []
    for n, question in enumerate(TURNS):
        box.fill(question)
        box.press("Enter")
        turn = _watch_turn(page, 2 * n + 1)
        turns.append(turn)
        _clean(page)
        assert turn["final"], (f"turn {n + 1}: an empty answer", turn,
                               page.locator('[data-testid="stChatMessage"]').all_inner_texts())
        assert turn["first"] is not None, f"turn {n + 1}: no text seen while the answer streamed"
        # a first, partial text was on screen before the answer ended: shorter than the answer and its start
        partial = [t for _, t in turn["seen"] if len(t) < len(turn["final"]) and turn["final"].startswith(t)]
        assert partial, (turn["seen"], turn["final"])
        print(f"\nchat turn {n + 1}: first piece on screen after {turn['first']:.2f} s, the answer ended (Stop "
              f"detached) after {turn['ended']:.2f} s; {len(turn['seen'])} distinct texts seen while it streamed, "
              f"{len(partial)} of them partial; {len(turn['final'])} characters"
              + (" (includes the inference worker's start)" if n == 0 else ""))
    messages = page.locator('[data-testid="stChatMessage"]')
    assert messages.count() == 4
    texts = [_norm(messages.nth(i).inner_text()) for i in range(4)]
    assert TURNS[0] in texts[0] and TURNS[1] in texts[2]
    # the first answer stays where it was, the second comes after the second question
    answers = _snapshot(page)["messages"]
    assert answers[1] == turns[0]["final"] and answers[3] == turns[1]["final"] and answers[3]
    assert page.locator('[data-testid="stChatMessageAvatarAssistant"]').count() == 2
    _clean(page)


def _ask_both(page) -> tuple[dict[str, list[tuple[float, str]]], float]:
    """Click "Ask both" and watch the two columns until the page's run ends: each column's texts with
    the seconds after the click at which they were drawn, and the run's whole time."""
    t0 = time.perf_counter()
    page.get_by_role("button", name="Ask both").click()
    seen: dict[str, list[tuple[float, str]]] = {"left": [], "right": []}
    running_seen, state = False, None
    while time.perf_counter() - t0 < ANSWER_LIMIT_S:
        now = _snapshot(page)
        at, state = time.perf_counter() - t0, now["state"]
        running_seen = running_seen or state == "running"
        if len(now["columns"]) == 2:
            for name, text in zip(("left", "right"), now["columns"]):
                if text and (not seen[name] or seen[name][-1][1] != text):
                    seen[name].append((at, text))
        if running_seen and state == "notRunning":
            break
        page.wait_for_timeout(POLL_MS)
    assert running_seen and state == "notRunning", f"the page did not finish within {ANSWER_LIMIT_S} s"
    return seen, time.perf_counter() - t0


def test_side_by_side_both_columns_grow_at_once(studio, page):
    run, export = studio["run"], studio["export"]
    _open_playground(page, studio["url"])
    _mode(page, "Side by side")
    _choose(page, "side_a", run["label"])
    _choose(page, "side_b", export["label"])
    assert _norm(page.locator(".st-key-side_q textarea").input_value()) == SIDE_Q
    # a first question starts both models' inference workers, one sooner than the other (a load, not a
    # stream): asked once to start them, then the question that is watched, with both workers up
    _ask_both(page)
    seen, total = _ask_both(page)
    _clean(page)
    columns = page.locator('[data-testid="stColumn"]').filter(has=page.locator("strong"))
    assert columns.count() == 2
    titles = [columns.nth(i).locator("strong").first.inner_text() for i in (0, 1)]
    assert titles == [run["label"], export["label"]], titles
    final = dict(zip(("left", "right"), _snapshot(page)["columns"]))
    first = {name: seen[name][0][0] if seen[name] else None for name in seen}
    last = {name: seen[name][-1][0] if seen[name] else None for name in seen}   # when its last piece was drawn
    for name in ("left", "right"):
        assert final[name] and seen[name] and seen[name][-1][1] == final[name], (name, seen[name][-3:], final[name])
        partial = [t for _, t in seen[name][:-1] if final[name].startswith(t) and len(t) < len(final[name])]
        assert partial, f"the {name} column was never seen partial: {seen[name]}"
    # both at once: at the moment the later of the two first pieces was drawn, both columns showed text and
    # neither had drawn its last piece yet (each grew after it)
    both_at = max(first.values())
    assert both_at < min(last.values()), (first, last)
    both_growing = [t for t, _ in seen["left"] + seen["right"] if both_at <= t < min(last.values())]
    print(f"\nside by side: left (run, transformers) first piece after {first['left']:.2f} s, last after "
          f"{last['left']:.2f} s, {len(seen['left'])} texts; right (q8_0 GGUF, llama.cpp) first piece after "
          f"{first['right']:.2f} s, last after {last['right']:.2f} s, {len(seen['right'])} texts; the page's run "
          f"ended after {total:.2f} s (both workers up); both columns showed text and were still "
          f"growing from {both_at:.2f} s to {min(last.values()):.2f} s ({len(both_growing)} texts drawn meanwhile)")


def test_a_blind_vote_is_stored_and_the_evaluate_page_shows_the_win_rate(studio, page):
    from core import store
    from core.evaluation import votes

    run, export = studio["run"], studio["export"]
    with _home(studio["home"]):
        before = {v["id"] for v in votes.list_votes(OPERATOR)}
        before_pair = sum(1 for v in votes.list_votes(OPERATOR)
                          if {v["model_a"], v["model_b"]} == {run["id"], export["id"]})
    _open_playground(page, studio["url"])
    _mode(page, "Blind vote")
    _choose(page, "blind_a", run["label"])
    _choose(page, "blind_b", export["label"])
    page.locator(".st-key-blind_q textarea").fill(VOTE_Q)
    page.locator(".st-key-blind_q textarea").press("Tab")   # the text area's value goes to the server
    _idle(page)
    t0 = time.perf_counter()
    page.get_by_role("button", name="Get two unlabelled answers").click()
    page.get_by_text("Answer 1", exact=True).wait_for(timeout=ANSWER_LIMIT_S * 1000)
    _idle(page)
    print(f"\nblind vote: both answers shown after {time.perf_counter() - t0:.2f} s")
    _clean(page)
    assert page.get_by_text("Answer 2", exact=True).count() == 1
    shown = page.locator('[data-testid="stText"]').all_inner_texts()
    assert len(shown) == 2 and all(s.strip() for s in shown), shown
    answers_area = page.locator('[data-testid="stColumn"]').filter(has=page.get_by_text("Answer 1", exact=True))
    for label in (run["label"], export["label"], run["run_id"], "GGUF"):   # unlabelled: no model's name shown
        assert label not in answers_area.first.inner_text()
    page.get_by_role("button", name="Answer 1 is better").click()
    success = page.locator('[data-testid="stAlertContentSuccess"]').filter(has_text="Vote recorded")
    success.wait_for()
    _clean(page)
    message = _norm(success.inner_text())

    with _home(studio["home"]):
        [vote] = [v for v in votes.list_votes(OPERATOR) if v["id"] not in before]
        [row] = store.rows("SELECT prompt, model_a, model_b, answer_a, answer_b, choice, voter, voter_role, source "
                           "FROM votes WHERE id = ?", [vote["id"]])
        rates = votes.win_rates(OPERATOR, model=row["model_a"])
    assert row["prompt"] == VOTE_Q and row["choice"] == "a" and row["source"] == "typed"
    assert {row["model_a"], row["model_b"]} == {run["id"], export["id"]}
    assert row["voter"] == OPERATOR.name and row["voter_role"] == "admin"
    assert [row["answer_a"] or "(empty answer)", row["answer_b"] or "(empty answer)"] == shown
    labels = {run["id"]: run["label"], export["id"]: export["label"]}
    assert message.startswith(_norm(f"Vote recorded. Answer 1 was {labels[row['model_a']]}; answer 2 was "
                                    f"{labels[row['model_b']]}.")), message
    [pair] = [r for r in rates if {r["model_1"], r["model_2"]} == {run["id"], export["id"]}]
    expected = {pair["model_1"]: pair["win_rate_1"], pair["model_2"]: pair["win_rate_2"]}
    assert pair["votes"] == before_pair + 1
    if not before_pair:   # the only vote of the pair: answer 1's model won it
        assert expected == {row["model_a"]: 1.0, row["model_b"]: 0.0}
    # the CLI (python -m core votes winrate) and the Evaluate page say what the store says
    cli_rates = json.loads(cli("votes", "winrate", "--json", home=studio["home"]).stdout)
    assert any({r["model_1"]: r["win_rate_1"], r["model_2"]: r["win_rate_2"]} == expected for r in cli_rates)

    # the Evaluate page in the browser: the Preference votes tab, a row per model of the pair
    page.goto(f"{studio['url']}/evaluate")
    page.get_by_role("heading", name="Evaluate").first.wait_for()
    _idle(page)
    _clean(page)
    page.locator('[data-testid="stTab"]').filter(has_text="Preference votes").click()
    _idle(page)   # the tabs run lazily: picking one runs the page again with that tab's content
    frame = page.locator('[data-testid="stTabPanel"]:visible [data-testid="stDataFrame"]')
    table = _dataframe(page, frame)
    print(f"Evaluate → Preference votes: {table}")
    for me, other in ((row["model_a"], row["model_b"]), (row["model_b"], row["model_a"])):
        [shown_row] = [r for r in table if r.get("model") == me and r.get("against") == other]
        assert float(shown_row["win rate"]) == pytest.approx(expected[me], abs=1e-4), shown_row
        assert int(shown_row["votes"]) == pair["votes"]
    run_row = next(r for r in table if r.get("model") == run["id"])
    assert float(run_row["BLEU"]) == pytest.approx(studio["scores"]["bleu"], abs=1e-4)
    assert float(run_row["ROUGE-L"]) == pytest.approx(studio["scores"]["rouge_l"], abs=1e-4)
