"""Blind preference votes in a real studio database (DuckDB file under the test's VITUNE_HOME): the
migration, who may vote, win rates per pair of models whatever order the answers were shown in, the
CLI, a vote set drawn from the held-out split, and the Evaluate page's win rates beside BLEU/ROUGE-L."""
import json
import random

import pytest

from core import store
from core.access.principal import AccessDenied
from core.evaluation import votes
from tests.conftest import OPERATOR, cli, person

REVIEWER = person("mai", "reviewer")
A, B, C = "run:run-a", "gguf:/models/run-a-q8_0.gguf", "base:/models/gemma-3-270m"


def _vote(a, b, choice, who=REVIEWER, prompt="Xin chào"):
    return votes.record(prompt, a, b, f"đáp án của {a}", f"đáp án của {b}", choice, actor=who)


def test_the_migration_adds_the_votes_table(home):
    assert store.one("SELECT count(*) AS n FROM schema_migrations WHERE version = 8 AND name = '_m008_preference_votes'")["n"] == 1
    assert (home / "studio.duckdb").exists() or list(home.rglob("*.duckdb"))
    cols = {r["column_name"] for r in store.rows("SELECT column_name FROM information_schema.columns "
                                                 "WHERE table_name = 'votes'")}
    assert {"prompt", "model_a", "model_b", "answer_a", "answer_b", "choice", "voter", "created_at"} <= cols


def test_a_reviewer_votes_and_the_voter_is_the_signed_in_principal(home):
    v = _vote(A, B, "a")
    [row] = votes.list_votes(OPERATOR)
    assert row["id"] == v["id"] and row["voter"] == "mai" and row["voter_role"] == "reviewer"
    assert (row["prompt"], row["model_a"], row["model_b"], row["choice"]) == ("Xin chào", A, B, "a")
    assert row["answer_a"] == f"đáp án của {A}" and row["created_at"] is not None
    audit = store.one("SELECT actor, role FROM audit_log WHERE action = 'vote.recorded' AND subject = ?", [v["id"]])
    assert audit == {"actor": "mai", "role": "reviewer"}


def test_a_viewer_may_not_vote_and_a_vote_is_checked(home):
    with pytest.raises(AccessDenied, match="may not votes record: that needs reviewer"):
        _vote(A, B, "a", who=person("khach", "viewer"))
    with pytest.raises(AccessDenied):
        _vote(A, B, "a", who=person("other", "reviewer", projects=["another"]))
    with pytest.raises(votes.VoteError, match="one of a, b, tie"):
        _vote(A, B, "both")
    with pytest.raises(votes.VoteError, match="two different models"):
        _vote(A, A, "a")
    assert votes.list_votes(OPERATOR) == []


def test_win_rates_per_pair_whatever_order_the_answers_were_shown_in(home):
    rng = random.Random(16)
    truth = {(A, B): [], (A, C): []}
    for pair, picks in (((A, B), ["A", "A", "B", "tie", "A"]), ((A, C), ["C", "tie"])):
        for winner in picks:
            first, second = (pair if rng.random() < 0.5 else pair[::-1])
            choice = "tie" if winner == "tie" else ("a" if {"A": A, "B": B, "C": C}[winner] == first else "b")
            _vote(first, second, choice)
            truth[pair].append(winner)
    rates = {(r["model_1"], r["model_2"]): r for r in votes.win_rates(OPERATOR)}
    ab = rates[tuple(sorted((A, B)))]
    wins = {ab["model_1"]: ab["wins_1"], ab["model_2"]: ab["wins_2"]}
    assert ab["votes"] == 5 and wins == {A: 3, B: 1} and ab["ties"] == 1
    rate_a = ab["win_rate_1"] if ab["model_1"] == A else ab["win_rate_2"]
    assert rate_a == round((3 + 0.5) / 5, 4)
    ac = rates[tuple(sorted((A, C)))]
    assert ac["votes"] == 2 and ac["ties"] == 1 and {ac["model_1"]: ac["wins_1"], ac["model_2"]: ac["wins_2"]}[C] == 1
    assert [r["votes"] for r in votes.win_rates(OPERATOR, model=C)] == [2]
    assert votes.win_rates(person("x", "viewer", projects=["another"])) == []


def test_the_cli_lists_votes_and_win_rates(home):
    _vote(A, B, "b")
    _vote(B, A, "b")
    store.close_idle()
    out = json.loads(cli("votes", "winrate", "--json", home=home).stdout)
    assert len(out) == 1 and out[0]["votes"] == 2
    assert {out[0]["model_1"]: out[0]["win_rate_1"], out[0]["model_2"]: out[0]["win_rate_2"]} == {A: 0.5, B: 0.5}
    listed = cli("votes", "list", home=home).stdout.splitlines()
    assert len(listed) == 2 and all("mai" in line for line in listed)
    assert "1–1, 0 tie(s)" in cli("votes", "winrate", home=home).stdout


def test_a_vote_set_is_drawn_from_the_held_out_split(home):
    from core.datasets import importer
    from tests.conftest import tiny_pairs, write_jsonl

    version, _ = importer.import_files([write_jsonl(home / "p.jsonl", tiny_pairs(30))], "p", actor=OPERATOR)
    drawn = votes.held_out_prompts(version["id"], 3, seed=1, actor=REVIEWER)
    from core.datasets import versions

    test_rows = versions.load_rows(version["id"], "test")
    assert len(drawn) == 3 and len({d["source"] for d in drawn}) == 3
    for d in drawn:
        idx = int(d["source"].rsplit("#", 1)[1])
        assert d["source"].startswith(f"held-out:{version['id']}#") and test_rows[idx]["instruction"] in d["prompt"]
    assert votes.held_out_prompts(version["id"], 3, seed=1, actor=REVIEWER) == drawn


def test_the_evaluate_page_shows_win_rates_beside_bleu_and_rouge_l(home):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import REPO, open_tab
    from tests.test_evaluate import TUNED_PREDS, store_evaluation

    e = store_evaluation(home, "eval-tuned", TUNED_PREDS, run_id="run-a")
    _vote(A, B, "a")
    _vote(A, B, "tie")
    at = AppTest.from_file(str(REPO / "pages" / "evaluate.py"), default_timeout=120)
    at.session_state["principal"] = OPERATOR
    open_tab(at.run(), "evaluate-tab", "Preference votes")
    assert not at.exception, [x.value for x in at.exception]
    table = next(d.value for d in at.dataframe if "win rate" in d.value.columns)
    row = table.iloc[0]
    assert row["model"] == A and row["against"] == B and row["votes"] == 2 and row["win rate"] == 0.75
    assert row["BLEU"] == round(e["bleu"], 4) and row["ROUGE-L"] == round(e["rouge_l"], 4)


@pytest.mark.slow
def test_the_playground_records_a_blind_vote_between_two_real_models(home, default_model):
    """The page's Blind vote mode on an empty studio: the default model and its GGUF answer, the two answers
    are shown unlabelled, the pick is stored with the model that was shown first as model_a."""
    from streamlit.testing.v1 import AppTest

    from core.playground import playground
    from tests.conftest import REPO

    at = AppTest.from_file(str(REPO / "pages" / "playground.py"), default_timeout=600)
    at.session_state["principal"] = REVIEWER
    at.run()
    at.radio(key="mode").set_value("Blind vote").run()
    at.slider(key="max_new").set_value(24)
    next(b for b in at.button if b.label == "Get two unlabelled answers").click().run()
    assert not at.exception and not at.error, [x.value for x in [*at.exception, *at.error]]
    shown = [t.value for t in at.text]
    assert len(shown) == 2 and [m.value for m in at.markdown if m.value.startswith("**Answer")] == \
        ["**Answer 1**", "**Answer 2**"]
    pending = at.session_state["blind"]
    assert sorted(pending["order"]) == [0, 1] and sorted(pending["models"]) == sorted([at.session_state["blind_a"],
                                                                                       at.session_state["blind_b"]])
    next(b for b in at.button if b.label == "Answer 2 is better").click().run()
    assert not at.exception and not at.error
    [vote] = votes.list_votes(OPERATOR)
    assert vote["voter"] == "mai" and vote["choice"] == "b"
    assert vote["model_a"] == pending["models"][pending["order"][0]]
    assert [vote["answer_a"] or "(empty answer)", vote["answer_b"] or "(empty answer)"] == shown
    assert at.success[0].value.startswith("Vote recorded. Answer 1 was ")
    [rate] = votes.win_rates(OPERATOR)
    assert rate["votes"] == 1 and {rate["model_1"]: rate["win_rate_1"], rate["model_2"]: rate["win_rate_2"]}[
        vote["model_b"]] == 1.0
    for job in playground.servers():
        playground.stop(job["id"], actor=OPERATOR)
