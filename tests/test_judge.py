"""The LLM judge: its rubric's answers parsed, its limits, its agreement with the team, the gate it may
join, and the judge job end to end — against an OpenAI-compatible HTTP server on loopback that this
module starts (a real server and real sockets: it times out, answers garbage or scores out of range on
purpose), and, in the slow test, against the default model served by llama.cpp's OpenAI-compatible
server, judging the pipeline's own evaluation."""
from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path

import pytest

from core import store
from core.access.principal import AccessDenied
from core.evaluation import gate, judge, rubric, votes
from core.jobs import queue, supervisor
from tests.conftest import OPERATOR, REPO, cli, grow_studio, open_tab, person

ENGINEER = person("lan", "engineer")
ADMIN = person("thu", "admin")
REVIEWER = person("mai", "reviewer")


# ── a judge on loopback ─────────────────────────────────────────────────────


class JudgeServer:
    """An OpenAI-compatible ``/v1/chat/completions`` on 127.0.0.1. ``decide(answer, prompt)`` says what to
    do with the answer under judgement: a dict ``{"content": …, "usage": {…}}`` to answer with,
    ``("sleep", seconds)`` to hold the request past the judge's timeout, or ``("http", status, text)`` to
    answer an HTTP error. Every answer it was asked about is in ``seen``, in order."""

    def __init__(self, decide):
        self.decide = decide
        self.seen: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                prompt = body["messages"][-1]["content"]
                answer = prompt.split("CÂU TRẢ LỜI CẦN CHẤM:\n", 1)[1].strip()
                outer.seen.append(answer)
                got = outer.decide(answer, prompt)
                if isinstance(got, tuple) and got[0] == "http":
                    self.send_response(got[1])
                    self.send_header("Content-Length", str(len(got[2].encode())))
                    self.end_headers()
                    self.wfile.write(got[2].encode())
                    return
                if isinstance(got, tuple) and got[0] == "sleep":
                    time.sleep(got[1])
                    got = {"content": '{"reason": "muộn", "score": 5}'}
                data = json.dumps({"choices": [{"message": {"content": got["content"]}}],
                                   "usage": got.get("usage", {"prompt_tokens": 100, "completion_tokens": 20})}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass   # the judge stopped waiting

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def verdict(score, reason="Đúng ý đáp án.", usage=None) -> dict:
    out = {"content": json.dumps({"reason": reason, "score": score}, ensure_ascii=False)}
    if usage:
        out["usage"] = usage
    return out


def configure(home: Path, url: str, name: str = "judge", price_in: float = 0.0, price_out: float = 0.0) -> None:
    path = home / ".streamlit" / "secrets.toml"
    path.parent.mkdir(exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(f'[endpoints.{name}]\nbase_url = "{url}"\nmodel = "judge-model"\n'
                 f'price_in_per_mtok = {price_in}\nprice_out_per_mtok = {price_out}\n\n')


def judged(job: dict, timeout: float = 300) -> dict:
    job = supervisor.wait(job["id"], timeout=timeout, poll=0.3)
    assert job["state"] == "succeeded", job["error"]
    return job


def an_evaluation(home: Path, evaluation_id: str = "eval-j", predictions=None) -> dict:
    from tests.test_evaluate import TUNED_PREDS, store_evaluation

    return store_evaluation(home, evaluation_id, predictions or TUNED_PREDS)


# ── the rubric and its answers ───────────────────────────────────────────────


@pytest.mark.parametrize("answer, score, reason", [
    ('{"reason": "Đúng ý, diễn đạt khác.", "score": 5}', 5, "Đúng ý, diễn đạt khác."),
    ('```json\n{"score": "4/5", "reason": "Thiếu\\nmột ý."}\n```', 4, "Thiếu một ý."),
    ('Đây là đánh giá: {"score": 3.0, "ly_do": "đúng một phần"} xong', 3, "đúng một phần"),
    ("EXPLANATION: Câu trả lời bịa thêm phí.\nSCORE: 2", 2, "Câu trả lời bịa thêm phí."),
    ("**Điểm:** 1\nLý do: lạc đề", 1, "lạc đề"),
    ('{"score": 5}', 5, ""),
], ids=["json", "fenced-fraction", "embedded-vietnamese-key", "explanation-score", "vietnamese-lines", "no-reason"])
def test_a_judges_answer_is_parsed_in_any_of_its_usual_shapes(answer, score, reason):
    assert rubric.parse(answer) == (score, reason)


@pytest.mark.parametrize("answer, message", [
    ('{"reason": "tốt", "score": 7}', "the score 7 is out of range (the rubric's scores are 1 to 5)"),
    ("SCORE: 0", "the score 0 is out of range"),
    ('{"reason": "tốt", "score": 4.5}', "the score 4.5 is not a whole number from 1 to 5"),
    ('{"reason": "tốt", "score": "cao"}', "the score 'cao' is not a number from 1 to 5"),
    ('{"reason": "tốt", "score": true}', "the score is true, not a number from 1 to 5"),
    ('{"reason": "tốt"}', "the judge's JSON has no score (keys: reason)"),
    ("Tôi nghĩ câu trả lời này khá ổn.", "no score in the judge's answer: 'Tôi nghĩ câu trả lời này khá ổn.'"),
    ("   ", "the judge's answer is empty"),
], ids=["seven", "zero", "half", "word", "bool", "no-score-key", "prose", "empty"])
def test_an_answer_without_a_usable_score_is_refused_in_one_line(answer, message):
    with pytest.raises(rubric.JudgeAnswerError) as got:
        rubric.parse(answer)
    assert str(got.value).startswith(message) and "\n" not in str(got.value)


def test_a_reason_is_one_line_and_bounded():
    score, reason = rubric.parse(json.dumps({"reason": "dòng một\n\ndòng   hai " + "x" * 400, "score": 4}))
    assert score == 4 and "\n" not in reason and len(reason) == rubric.MAX_REASON_CHARS and reason.endswith("…")
    assert reason.startswith("dòng một dòng hai x")


def test_the_rubric_is_vietnamese_with_the_reference_and_keeps_the_texts_as_written():
    text = rubric.prompt("Phí {x} là bao nhiêu?", "Miễn phí {0}.", "Không mất phí.")
    for words in ("Đúng", "Đủ", "Không bịa", "Tiếng Việt", "ĐÁP ÁN THAM CHIẾU:\nMiễn phí {0}.",
                  "CÂU HỎI:\nPhí {x} là bao nhiêu?", "CÂU TRẢ LỜI CẦN CHẤM:\nKhông mất phí."):
        assert words in text
    alone = rubric.prompt("Phí là bao nhiêu?", None, "Không mất phí.")
    assert "THAM CHIẾU:" not in alone and "Không có đáp án tham chiếu" in alone
    assert rubric.SCORE_SCHEMA["properties"]["score"]["enum"] == [1, 2, 3, 4, 5]


# ── agreement maths ──────────────────────────────────────────────────────────


def test_vote_agreement_counts_the_judges_preference_against_the_voters():
    pairs = [("a", 5, 3), ("a", 2, 4), ("b", 1, 4), ("tie", 3, 3), ("tie", 4, 2), ("b", 3, 3)]
    got = judge.vote_agreement_of(pairs)
    # judge picks: a, b, b, tie, a, tie → agrees on votes 1, 3, 4: 3 of 6; decisive both: votes 1, 2, 3 → 2 of 3
    assert (got["n"], got["agree"], got["agreement"]) == (6, 3, 0.5)
    assert (got["n_decisive"], got["agreement_decisive"]) == (3, round(2 / 3, 4))
    assert (got["judge_ties"], got["voter_ties"]) == (2, 2)
    from scipy.stats import kendalltau

    tau = kendalltau([1, 1, -1, 0, 0, -1], [2, -2, -3, 0, 2, 0]).statistic
    assert got["kendall_tau"] == round(tau, 4)
    assert got["too_small"] and str(got["note"]) == "n too small to say (n=6, fewer than 20)"
    many = judge.vote_agreement_of([("a", 5, 1)] * 15 + [("b", 1, 5)] * 5)
    assert many["agreement"] == 1.0 and many["kendall_tau"] == 1.0 and not many["too_small"] and many["note"] is None
    assert judge.vote_agreement_of([])["agreement"] is None


def test_review_agreement_is_the_concordance_of_scores_with_decisions():
    items = [("approved", 5), ("approved", 3), ("edited", 3), ("rejected", 1), ("rejected", 4)]
    got = judge.review_agreement_of(items)
    # pairs ranked differently: approved×edited 2, approved×rejected 4, edited×rejected 2 = 8
    # concordant: (5>3)1 (3=3)½ | 5>1 1, 5>4 1, 3>1 1, 3<4 0 | 3>1 1, 3<4 0 → 5.5 of 8
    assert (got["n"], got["pairs"], got["concordance"]) == (5, 8, round(5.5 / 8, 4))
    assert got["mean_by_decision"] == {"approved": 4.0, "edited": 3.0, "rejected": 2.5}
    assert got["count_by_decision"] == {"approved": 2, "edited": 1, "rejected": 2}
    assert got["too_small"] and got["kendall_tau"] is not None
    assert judge.review_agreement_of([("approved", 5), ("approved", 4)])["concordance"] is None   # nothing to order


# ── the judge job against a judge on loopback ───────────────────────────────


def test_a_judge_that_times_out_answers_garbage_or_scores_7_loses_no_score_and_says_why(home):
    """A real worker judges four examples against a real loopback server: the first is scored; the second
    waits past the timeout, the third gets prose, the fourth a 7 — each stored with its own one-line reason.
    A second run (the server mended) asks only those three; the first example's score stays as it was."""
    e = an_evaluation(home)
    judge.set_limits(timeout_s=3, actor=ADMIN)
    refs = [x["prediction"] for x in judge_examples(e["id"])]
    behaviour = {refs[0]: verdict(4), refs[1]: ("sleep", 8), refs[2]: {"content": "Tôi không chắc lắm."},
                 refs[3]: verdict(7)}
    with JudgeServer(lambda answer, _: behaviour[answer]) as srv:
        configure(home, srv.url)
        store.close_idle()
        proc = cli("judge", "run", e["id"], "--endpoint", "judge", "--json", home=home)
        out = json.loads(proc.stdout)
        assert srv.seen == refs
    assert out["state"] == "succeeded" and (out["asked"], out["scored"], out["failed"]) == (4, 1, 3)
    failures = {f["part"]: f["error"] for f in out["failures"]}
    assert failures[1] == f"the judge endpoint failed: {srv.url}/chat/completions did not answer within 3 s (timed out)"
    assert failures[2] == "the judge's answer is not usable: no score in the judge's answer: 'Tôi không chắc lắm.'"
    assert failures[3] == ("the judge's answer is not usable: the score 7 is out of range (the rubric's scores are "
                           "1 to 5)")
    got = judge.verdicts(e["id"])
    assert got[0]["score"] == 4 and got[0]["reason"] == "Đúng ý đáp án." and got[0]["error"] is None
    assert [got[i]["score"] for i in (1, 2, 3)] == [None, None, None]
    assert out["summary"]["mean"] == 4.0 and out["summary"]["n"] == 1 and out["summary"]["failed"] == 3

    # mended: everything scores 2 now. Only the three without a score are asked; example 0 keeps its 4.
    with JudgeServer(lambda answer, _: verdict(2, "Thiếu ý chính.")) as srv2:
        configure(home, srv2.url, name="judge2")
        secrets = home / ".streamlit" / "secrets.toml"
        secrets.write_text(secrets.read_text().replace(srv.url, srv2.url), encoding="utf-8")
        job = judged(judge.submit_evaluation(e["id"], endpoint="judge", actor=ENGINEER))
        assert srv2.seen == refs[1:]
        got = judge.verdicts(e["id"])
        assert [got[i]["score"] for i in range(4)] == [4, 2, 2, 2]
        assert all(got[i]["error"] is None for i in range(4))
        assert judge.run_of(job["id"])["asked"] == 3
        with pytest.raises(judge.JudgeRefused, match="nothing to judge: every one of the 4 answers has a score"):
            judge.submit_evaluation(e["id"], endpoint="judge", actor=ENGINEER)

    # a failed verdict for an answer that has a score (a worker's late line, a re-ingest) changes nothing
    late = Path(job["job_dir"]) / "judgements.jsonl"
    with late.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"kind": "example", "ref": e["id"], "part": 0, "score": None, "reason": None,
                             "error": "the judge endpoint failed: boom"}) + "\n")
    judge._ingested.clear()
    with store.connect() as con:
        judge.ingest_progress(con, queue.get_job(job["id"]))
    assert judge.verdicts(e["id"])[0]["score"] == 4 and judge.verdicts(e["id"])[0]["error"] is None
    assert judge.summary(e["id"])["mean"] == 2.5


def judge_examples(evaluation_id: str) -> list[dict]:
    from core.evaluation import evaluations

    return evaluations.examples(evaluation_id)


def test_a_judge_that_refuses_every_request_stops_and_what_it_scored_is_kept(home):
    """An endpoint that starts answering HTTP 401 mid-run: the job stops there (a refused key is no
    per-example failure), fails with the reason when nothing was scored, and keeps what was."""
    e = an_evaluation(home)
    with JudgeServer(lambda answer, _: verdict(5) if len(srv.seen) <= 2 else ("http", 401, "invalid key.")) as srv:
        configure(home, srv.url)
        job = judged(judge.submit_evaluation(e["id"], endpoint="judge", actor=ENGINEER))
        assert len(srv.seen) == 3
    run = judge.run_of(job["id"])
    assert (run["asked"], run["scored"], run["failed"]) == (3, 2, 1)
    assert "HTTP 401" in run["stopped"] and "invalid key." in run["stopped"]
    assert [v["score"] for v in judge.verdicts(e["id"]).values()] == [5, 5, None]


# ── limits ───────────────────────────────────────────────────────────────────


def test_limits_on_count_and_cost_are_checked_before_and_during_and_add_up_per_evaluation(home):
    e = an_evaluation(home)
    with pytest.raises(AccessDenied, match="may not judge gate: that needs admin"):
        judge.set_limits(max_items=2, actor=ENGINEER)
    with pytest.raises(judge.JudgeRefused, match="max_cost must be between 0 and 10000"):
        judge.set_limits(max_cost=-1, actor=ADMIN)
    judge.set_limits(max_items=3, max_cost=0.5, actor=ADMIN)
    assert store.one("SELECT actor FROM audit_log WHERE action = 'setting.changed' AND subject = 'judge_limits'") == \
        {"actor": "thu"}
    # usage as reported: 100,000 prompt tokens an answer at 1.0 per million tokens → 0.1 an answer
    with JudgeServer(lambda a, _: verdict(3, usage={"prompt_tokens": 100_000, "completion_tokens": 0})) as srv:
        configure(home, srv.url, price_in=1.0, price_out=1.0)
        with pytest.raises(judge.JudgeRefused, match="at most 3 answers may be judged per evaluation"):
            judge.submit_evaluation(e["id"], endpoint="judge", max_items=4, actor=ENGINEER)
        with pytest.raises(judge.JudgeRefused, match=r"the judge may spend at most 0.5 per evaluation"):
            judge.submit_evaluation(e["id"], endpoint="judge", max_cost=2, actor=ENGINEER)
        # before: the estimate (the whole prompt and max_tokens an answer, ~0.0009 each) is over the budget
        with pytest.raises(judge.JudgeRefused, match=r"judging 3 answers could cost up to 0\.00\d+ .* over the 0\.0015 "
                                                     r"left to spend on evaluation eval-j: judge at most 1 \(max items\)"):
            judge.submit_evaluation(e["id"], endpoint="judge", max_cost=0.0015, actor=ENGINEER)
        with pytest.raises(judge.JudgeRefused, match=r"over the 0\.0005 left .*: not one answer fits"):
            judge.submit_evaluation(e["id"], endpoint="judge", max_cost=0.0005, actor=ENGINEER)
        # during: the estimate of two answers fits 0.01, but the endpoint reports far more tokens than estimated;
        # after the first answer (0.1 spent) the next request is not sent, and the job keeps what it has
        job = judged(judge.submit_evaluation(e["id"], endpoint="judge", max_cost=0.01, max_items=2, actor=ENGINEER))
        run = judge.run_of(job["id"])
        assert len(srv.seen) == 1 and run["scored"] == 1 and run["cost"] == pytest.approx(0.1)
        assert run["stopped"].startswith("the cost limit would be passed: 0.1000 spent of the 0.0100")
        # per evaluation: a second run has 0.5 - 0.1 left to spend and 3 - 1 examples left to judge
        job = judged(judge.submit_evaluation(e["id"], endpoint="judge", actor=ENGINEER))
        assert judge.run_of(job["id"])["items"] == 2 and judge.summary(e["id"])["n"] == 3
        assert judge.spent("example", e["id"])["cost"] == pytest.approx(0.3)
        with pytest.raises(judge.JudgeRefused, match=r"eval-j has 3 judged answers \(every judge's\), the 3 it may have"):
            judge.submit_evaluation(e["id"], endpoint="judge", actor=ENGINEER)
    with pytest.raises(AccessDenied, match="may not judge run: that needs engineer"):
        judge.submit_evaluation(e["id"], local=True, actor=REVIEWER)
    with pytest.raises(judge.JudgeRefused, match="no generation endpoint named 'nope'"):
        judge.submit_evaluation(e["id"], endpoint="nope", actor=ENGINEER)


# ── agreement with the team, from the store ─────────────────────────────────


def _held_out_votes(home: Path, n: int) -> list[dict]:
    """``n`` blind votes on held-out prompts: the voter prefers the answer that says "đúng" (right), except
    on every fifth vote, where they call it a tie."""
    from core.datasets import importer
    from tests.conftest import tiny_pairs, write_jsonl

    version, _ = importer.import_files([write_jsonl(home / "v.jsonl", tiny_pairs(300))], "v", actor=OPERATOR)
    drawn = votes.held_out_prompts(version["id"], n, seed=3, actor=REVIEWER)
    out = []
    for i, d in enumerate(drawn):
        good, bad = f"Trả lời đúng {i}.", f"Trả lời sai {i}."
        first_good = i % 2 == 0
        a, b = (good, bad) if first_good else (bad, good)
        choice = "tie" if i % 5 == 4 else ("a" if first_good else "b")
        out.append(votes.record(d["prompt"], "run:x", "run:y", a, b, choice, actor=REVIEWER, source=d["source"]))
    votes.record("Một câu gõ tay", "run:x", "run:y", "đúng", "sai", "a", actor=REVIEWER)   # no reference: not judged
    return out


def test_the_judges_agreement_with_blind_votes_and_with_reviewers(home):
    cast = _held_out_votes(home, 25)
    with JudgeServer(lambda answer, _: verdict(5 if "đúng" in answer else 2)) as srv:
        configure(home, srv.url)
        job = judged(judge.submit_votes(endpoint="judge", actor=ENGINEER))
        assert len(srv.seen) == 50 and judge.run_of(job["id"])["items"] == 50   # both answers of 25 votes
        name = job["config"]["judge"]
        assert name == "endpoint:judge:judge-model"
        got = judge.agreement(name, actor=OPERATOR)["votes"]
        # the judge prefers the "đúng" answer every time: it agrees with the 20 decisive votes, not the 5 ties
        assert (got["n"], got["agree"], got["n_decisive"], got["agreement_decisive"]) == (25, 20, 20, 1.0)
        assert got["agreement"] == 0.8 and not got["too_small"] and got["note"] is None

        # reviews: approved answers say "đúng", rejected ones "sai"
        from core.datasets import importer, review
        from tests.conftest import tiny_pairs, write_jsonl

        rows = [{**p, "output": f"Trả lời {'đúng' if i % 3 else 'sai'} {i}."} for i, p in enumerate(tiny_pairs(40))]
        version, _ = importer.import_files([write_jsonl(home / "r.jsonl", rows)], "r", actor=OPERATOR)
        review.start(version["id"], actor=REVIEWER)
        while (item := review.next_item(version["id"])) is not None:
            review.decide(version["id"], item["idx"], "approved" if "đúng" in item["output"] else "rejected",
                          actor=REVIEWER)
        judged(judge.submit_reviews(endpoint="judge", actor=ENGINEER))
    r = judge.agreement(name, actor=OPERATOR)["reviews"]
    assert r["n"] == 4 and r["concordance"] == 1.0 and r["too_small"]
    assert r["mean_by_decision"] == {"approved": 5.0, "rejected": 2.0}
    # the typed vote has no reference: it was not sent; an answer of a vote is judged against the held-out pair
    assert not any(v["prompt"] == "Một câu gõ tay" for v in cast)
    assert store.one("SELECT count(*) AS n FROM judgements WHERE kind = 'vote'")["n"] == 50
    out = json.loads(cli("judge", "agreement", name, "--json", home=home).stdout)
    assert out[0]["votes"]["agreement_decisive"] == 1.0 and out[0]["reviews"]["concordance"] == 1.0


# ── the gate, both ways ─────────────────────────────────────────────────────


def test_the_judges_mean_gates_a_release_only_when_an_admin_lets_it(home):
    grow_studio(home, 1, runs_each=1)
    [run] = store.rows("SELECT id FROM runs")
    before = gate.verdict(run["id"])
    assert before["releasable"] and before["judge"]["n"] == 0 and not before["judge"]["gating"]
    e = before["evaluation"]["id"]
    with JudgeServer(lambda answer, _: verdict(1, "Sai ý.")) as srv:
        configure(home, srv.url)
        judged(judge.submit_evaluation(e, endpoint="judge", actor=ENGINEER))
    name = "endpoint:judge:judge-model"

    # off: the mean is shown, and does not block
    off = gate.verdict(run["id"])
    assert off["releasable"] and off["judge"]["mean"] == 1.0 and off["judge"]["n"] == 4
    assert not off["judge"]["blocks"] and off["judge"]["passes"] is False
    assert str(off["judge"]["reason"]) == (f"the judge {name}: mean 1.00 over 4 examples (below the minimum 3.5); "
                                           "shown, it does not gate (an admin can let it)")
    v = judge.verdict_of(e)
    assert (v["mean"], v["may_gate"], v["gating"], v["blocks"]) == (1.0, False, False, False)
    assert v["agreement"]["votes"]["n"] == 0 and v["agreement"]["votes"]["too_small"]

    # only an admin may let it gate; a judge unchecked against the team needs an override reason
    with pytest.raises(AccessDenied, match="may not judge gate: that needs admin"):
        judge.set_gate(True, judge=name, actor=ENGINEER)
    with pytest.raises(judge.JudgeRefused, match=r"may not gate yet: its agreement with the team's blind votes is too "
                                                 r"small to say \(n=0, fewer than 20\)"):
        judge.set_gate(True, judge=name, actor=ADMIN)
    assert not gate.judge_gate()["enabled"]
    judge.set_gate(True, judge=name, min_mean=3.5, actor=ADMIN, override_reason="thử nghiệm với khách hàng A")
    cfg = gate.judge_gate()
    assert cfg == {"enabled": True, "judge": name, "rubric_version": rubric.RUBRIC_VERSION, "min_mean": 3.5,
                   "min_share": 0.8}
    audited = store.one("SELECT actor, detail FROM audit_log WHERE action = 'judge.gate_override'")
    assert audited["actor"] == "thu" and json.loads(audited["detail"])["reason"] == "thử nghiệm với khách hàng A"
    changed = json.loads(store.one("SELECT detail FROM audit_log WHERE action = 'setting.changed' AND subject = "
                                   "'judge_gate' ORDER BY id DESC LIMIT 1")["detail"])
    assert changed["new"]["enabled"] and changed["override_reason"] and changed["agreement"]["votes"]["n"] == 0

    # on: the low mean blocks the release, the deploy path and the CLI say why
    on = gate.verdict(run["id"])
    assert not on["releasable"] and on["judge"]["blocks"]
    assert str(on["reason"]) == (f"evaluation {e} passed BLEU and ROUGE-L, but the LLM judge gates and refuses it: the "
                                 f"judge {name}: mean 1.00 over 4 examples (below the minimum 3.5)")
    assert judge.verdict_of(e)["may_gate"] and judge.verdict_of(e)["blocks"]
    store.close_idle()
    proc = cli("gate", "--run", run["id"], home=home, check=False)
    assert proc.returncode == 1 and json.loads(proc.stdout)["judge"]["blocks"]
    from core.deploy import releases

    with pytest.raises(releases.DeployRefused, match="the LLM judge gates and refuses it"):
        releases.prepare(run["id"], "vitune-judge", actor=OPERATOR)

    # a mean at the minimum passes; another judge's scores do not count for the gate
    judge.set_gate(True, min_mean=1.0, actor=ADMIN, override_reason="ngưỡng thấp để thử")
    assert gate.verdict(run["id"])["releasable"]
    judge.set_gate(True, judge="endpoint:other:m", actor=ADMIN, override_reason="thử giám khảo khác")
    other = gate.verdict(run["id"])
    assert not other["releasable"] and "endpoint:other:m (rubric vi-1), which has not judged this evaluation" in \
        str(other["reason"])
    # off again: shown, not blocking
    judge.set_gate(False, actor=ADMIN)
    assert gate.verdict(run["id"])["releasable"]
    out = json.loads(cli("judge", "gate", home=home).stdout)
    assert out["enabled"] is False


def test_a_judge_that_agrees_with_the_team_may_gate_without_an_override(home):
    _held_out_votes(home, 20)
    with JudgeServer(lambda answer, _: verdict(5 if "đúng" in answer else 1)) as srv:
        configure(home, srv.url)
        judged(judge.submit_votes(endpoint="judge", actor=ENGINEER))
    cfg = judge.set_gate(True, judge="endpoint:judge:judge-model", actor=ADMIN)
    assert cfg["enabled"] and store.one("SELECT count(*) AS n FROM audit_log WHERE action = 'judge.gate_override'")["n"] == 0


# ── the page ─────────────────────────────────────────────────────────────────


def test_the_evaluate_page_shows_the_judges_mean_distribution_agreement_and_reasons(home):
    from streamlit.testing.v1 import AppTest

    e = an_evaluation(home)
    scores = {x["prediction"]: s for x, s in zip(judge_examples(e["id"]), [5, 4, 4, 2])}
    with JudgeServer(lambda answer, _: verdict(scores[answer], f"Lý do **{scores[answer]}**")
                     if scores[answer] != 2 else {"content": "không rõ"}) as srv:
        configure(home, srv.url)
        judged(judge.submit_evaluation(e["id"], endpoint="judge", actor=ENGINEER))
    at = AppTest.from_file(str(REPO / "pages" / "evaluate.py"), default_timeout=120)
    at.session_state["principal"] = ADMIN
    open_tab(at.run(), "evaluate-tab", "LLM judge")
    assert not at.exception and not at.error, [x.value for x in [*at.exception, *at.error]]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Judge's mean (1–5)"] == "4.33" and metrics["Judged"] == "3 / 4" and metrics["Failed"] == "1"
    [chart] = at.get("plotly_chart")
    bars = json.loads(chart.proto.spec)["data"][0]
    assert bars["x"] == [1, 2, 3, 4, 5] and bars["y"] == [0, 0, 0, 2, 1]
    agreement = next(d.value for d in at.dataframe if "checked against" in d.value.columns)
    assert list(agreement["n"]) == [0, 0] and set(agreement["note"]) == {"n too small to say (n=0, fewer than 20)"}
    failed = next(d.value for d in at.dataframe if "why" in d.value.columns)
    assert list(failed["#"]) == [3] and failed["why"][0].startswith("the judge's answer is not usable: no score")
    assert any(b.label == "Queue the judge" for b in at.button)
    # the gate's tab: an admin may let the judge's mean gate
    open_tab(at, "evaluate-tab", "Gate thresholds")
    assert any(c.label == "Let the judge's mean gate a release" for c in at.checkbox)
    assert "The judge's mean is shown beside the gate; it does not gate." in " ".join(c.value for c in at.caption)
    # the drill-down: the example's score and reason, the reason as text
    open_tab(at, "evaluate-tab", "Examples")
    next(s for s in at.selectbox if s.label == "Example (lowest ROUGE-L first)").set_value(0).run()
    assert not at.exception
    assert any(m.value.startswith("**LLM judge: 5/5** (endpoint:judge:judge-model, rubric vi-1)") for m in at.markdown)
    assert "Lý do **5**" in [t.value for t in at.text]
    # an engineer sees the setting and may not change it
    at = AppTest.from_file(str(REPO / "pages" / "evaluate.py"), default_timeout=120)
    at.session_state["principal"] = ENGINEER
    open_tab(at.run(), "evaluate-tab", "Gate thresholds")
    assert not any(c.label == "Let the judge's mean gate a release" for c in at.checkbox)


# ── the judge is the default model, served by llama.cpp on loopback ─────────


@pytest.mark.slow
def test_the_default_model_judges_the_pipelines_evaluation_through_llama_cpps_server(pipeline, monkeypatch, worker_env):
    """The judge job starts llama.cpp's OpenAI-compatible server on loopback with the default model's GGUF and
    judges three examples of the pipeline's real evaluation; the grammar of the score's schema holds the
    model to a 1–5 score and a reason. Scores, the summary and the agreement are then shown."""
    from tests.conftest import worker_pythons

    monkeypatch.setenv("VITUNE_HOME", str(pipeline["home"]))
    evaluation = pipeline["evaluation"]["evaluation"]
    proc = cli("judge", "run", evaluation, "--local", "--max-items", "3", "--json", home=pipeline["home"],
               timeout=900)
    out = json.loads(proc.stdout)
    assert out["state"] == "succeeded" and out["asked"] == 3, out
    assert out["judge"] == "local:gemma-3-270m" and out["tokens_in"] > 0
    assert (Path(queue.get_job(out["job"])["job_dir"]) / "llama-server.log").exists()
    got = judge.verdicts(evaluation, "local:gemma-3-270m", rubric.RUBRIC_VERSION)
    assert sorted(got) == [0, 1, 2]
    for v in got.values():   # each is a score with its reason, or the one-line reason there is none
        assert (v["score"] in (1, 2, 3, 4, 5) and v["reason"] is not None) or (v["score"] is None and v["error"])
    assert out["scored"] >= 1, out["failures"]
    summary = judge.summary(evaluation)
    assert summary["n"] == out["scored"] and 1 <= summary["mean"] <= 5
    assert summary["share"] == out["scored"] / pipeline["evaluation"]["n"]
    shown = judge.verdict_of(evaluation)
    assert shown["agreement"]["votes"]["too_small"] and not shown["gating"] and not shown["blocks"]
    assert worker_pythons(pipeline["home"])["judge"] == {str(worker_env)}
    print("local judge:", {k: out[k] for k in ("scored", "failed", "tokens_in", "tokens_out")}, summary["distribution"],
          [v["reason"] for v in got.values()])


def test_the_judges_tab_reads_in_vietnamese(home, monkeypatch):
    """The LLM judge's tab, its chart and its agreement table in Vietnamese: nothing of it is left in English
    but the judge's name, the rubric's version and the judge's own words."""
    from tests.test_i18n import _english_left, _everything_shown, _every_tab

    monkeypatch.delenv("VITUNE_LANGUAGE", raising=False)
    e = an_evaluation(home)
    with JudgeServer(lambda answer, _: verdict(4, "Đúng ý nhưng thiếu thời hạn.")) as srv:
        configure(home, srv.url)
        judged(judge.submit_evaluation(e["id"], endpoint="judge", actor=ENGINEER))
    texts = [t for at in _every_tab("evaluate") for t in _everything_shown(at)]
    assert "Điểm trung bình của giám khảo (1–5)" in texts and "đối chiếu với" in texts
    data = sorted({"endpoint:judge:judge-model", "endpoint:judge", "vi-1", "models/base/gemma-3-270m", "gemma-3-270m",
                   "lan", OPERATOR.name, "chat", "Kendall τ", "ds-x", e["id"]}, key=len, reverse=True)
    assert _english_left(texts, data) == []
