import streamlit as st

from core import charts, labels, models
from core.deploy import exports, releases
from core.evaluation import evaluations, gate, judge, report, retention, votes, words
from core.jobs import queue
from core.training import runs as train_runs
from core.evaluation.inference import Decoding, parse_stop
from pages.common import _, actor, can, fail, job_progress, label, lang, live_jobs, live_view, project, refresh_live, say

RUNS_SHOWN = 200      # finished runs offered for a new evaluation (the newest)
BOARD_ROWS = 50       # leaderboard rows a page
PICKABLE = 200        # evaluations offered in Compare and Examples (the newest; any one: `evaluate show ID`)

st.title(_("Evaluate"))
gate_settings = gate.settings()
th = gate_settings["thresholds"]
st.caption(_("Batched generation on the held-out split (greedy unless you set a temperature), scored on Vietnamese "
             "syllables (BLEU-4 corpus, ROUGE-L F1). Release gate: BLEU > {bleu} and ROUGE-L > {rouge_l}.")
           .format(bleu=th["bleu"], rouge_l=th["rouge_l"]))

who, here = actor(), project()
if can("evaluate.submit"):
    runs = train_runs.list_runs(who, here, state="succeeded", limit=RUNS_SHOWN)
    with st.form("evaluate"):
        options = {_("{run} (tuned)").format(run=r["id"]): r["id"] for r in runs}
        options |= {_("{model} without adapter, on {dataset}").format(model=models.display_name(r["base_model"]),
                                                                     dataset=r["dataset_version_id"]): f"base::{r['id']}"
                    for r in runs[:5]}
        # the shipped artifacts: each exported GGUF (llama.cpp) and each release Ollama serves
        for run_id, quants in exports.exported([r["id"] for r in runs[:20]]).items():
            options |= {_("{run} · {quantization} (the exported GGUF, llama.cpp)").format(run=run_id, quantization=q):
                        f"gguf::{run_id}::{q}" for q in quants}
        options |= {_("{run} · Ollama {model} (the release)").format(run=rel["run_id"], model=f"{rel['name']}:{rel['tag']}"):
                    f"ollama::{rel['run_id']}::{rel['name']}:{rel['tag']}"
                    for rel in releases.list_releases(who, here, include_deleted=False, limit=20)}
        choice = st.selectbox(_("What to evaluate"), list(options) or [_("(no finished runs yet)")])
        c1, c2, c3, c4 = st.columns(4)
        limit = c1.number_input(_("Examples (0: the whole split, which the release gate needs)"), 0, 100000, 0)
        split = c2.selectbox(_("Split"), ["test", "train"], format_func=lambda s: label(labels.SPLITS, s), help=_("Only the held-out test split counts for the release gate."))
        max_new = c3.number_input(_("Max new tokens"), 1, 8192, 96)
        batch = c4.number_input(_("Batch size (0: fit to the GPU)"), 0, 1024, 0,
                                help=_("0 lets the evaluation job choose it from the GPU's free memory (8 on a CPU)."))
        d1, d2, d3 = st.columns([1, 1, 2])
        temperature = d1.number_input(_("Temperature (0: greedy)"), 0.0, 5.0, 0.0, 0.05)
        top_p = d2.number_input("Top-p", 0.01, 1.0, 1.0, 0.05)
        stops = d3.text_area(_("Stop strings (one per line; \\n is a newline)"), "", height=68)
        st.caption(_("An exported GGUF or an Ollama release is decoded like its run's own evaluation (the settings "
                     "above are for a run or a base model); the release gate needs the shipped GGUF's own evaluation."))
        go = st.form_submit_button(_("Queue evaluation"), type="primary", disabled=not runs)
    if go and runs:
        try:
            target = options[choice]
            decoding = Decoding(max_new_tokens=int(max_new), batch_size=int(batch), temperature=float(temperature),
                                top_p=float(top_p), stop=parse_stop(stops))
            if target.startswith(("gguf::", "ollama::")):   # decoded like the run's own evaluation
                kind, run_id, what = target.split("::", 2)
                job = evaluations.submit(run_id, split=split, limit=int(limit) or None, actor=who,
                                         **({"gguf": what} if kind == "gguf" else {"ollama_model": what}))
            elif target.startswith("base::"):
                run = train_runs.get_run(target.split("::", 1)[1], who)
                job = evaluations.submit(None, base_model=run["base_model"], dataset_version_id=run["dataset_version_id"],
                                         split=split, limit=int(limit) or None, decoding=decoding, actor=who,
                                         prompt_format_name=run["prompt_format"])
            else:
                job = evaluations.submit(target, split=split, limit=int(limit) or None, decoding=decoding, actor=who)
            refresh_live()
            st.success(_("Queued evaluation job {job}.").format(job=job["id"]))
        except (ValueError, queue.JobError, PermissionError) as exc:
            fail(exc)


@live_view("the Evaluate page (running jobs)")
def active() -> None:
    for job in live_jobs(10, "evaluate"):
        if job["state"] in ("queued", "running"):
            job_progress(job)
        elif job["state"] == "failed":
            st.error(_("Evaluation job {job} failed: {error}").format(job=job["id"], error=job["error"]))
            break


active()

filters = evaluations.board_filters(who, here)
evals = evaluations.list_evaluations(who, project=here, limit=PICKABLE) if filters["n"] else []
if not evals:
    st.info(_("No evaluations yet."))
eval_labels = {e["id"]: say(e["label"]) for e in evals}
board_tab, compare_tab, drill_tab, votes_tab, judge_tab, gate_tab, kept_tab = st.tabs(
    [_("Leaderboard"), _("Compare"), _("Examples"), _("Preference votes"), _("LLM judge"), _("Gate thresholds"),
     _("General Vietnamese kept")],
    key="evaluate-tab", on_change="rerun")

with board_tab:
    if board_tab.open:   # only the open tab runs (the tabs rerun the page when one is picked)
        if evals:
            f1, f2, f3 = st.columns([2, 2, 1])
            versions = ["(all)"] + filters["versions"]
            bases = ["(all)"] + filters["bases"]
            version = f1.selectbox(_("Dataset version"), versions, format_func=lambda v: _("(all)") if v == "(all)" else v)
            base = f2.selectbox(_("Base model"), bases,
                                format_func=lambda b: _("(all)") if b == "(all)" else models.display_name(b))
            pages = max(1, (filters["n"] + BOARD_ROWS - 1) // BOARD_ROWS)
            page = f3.number_input(_("Page"), 1, pages, 1, help=_("{n} evaluations a page, best first").format(n=BOARD_ROWS)) if pages > 1 else 1
            board = evaluations.leaderboard(who, None if version == "(all)" else version, None if base == "(all)" else base,
                                            project=here, limit=BOARD_ROWS, offset=(page - 1) * BOARD_ROWS)
            st.dataframe(
                [{"#": e["rank"], _("evaluation"): e["id"], _("run"): say(e["artifact"]) if e["run_id"] else _("(base model)"),
                  _("base model"): models.display_name(e["base_model"]), _("dataset"): e["dataset_version_id"],
                  _("split"): label(labels.SPLITS, e["split"]), "n": e["n"], "BLEU": round(e["bleu"], 4), "ROUGE-L": round(e["rouge_l"], 4),
                  _("BLEU (words)"): None if e.get("bleu_words") is None else round(e["bleu_words"], 4),
                  _("ROUGE-L (words)"): None if e.get("rouge_l_words") is None else round(e["rouge_l_words"], 4),
                  _("gate"): _("PASS") if e["passed"] else _("FAIL"),
                  _("decoding"): _("T={temperature}, max {max_new_tokens}").format(
                      temperature=e["decoding"].get("temperature", 0), max_new_tokens=e["decoding"].get("max_new_tokens")),
                  _("examples/s"): round(e["examples_per_s"], 2) if e.get("examples_per_s") else None,
                  _("backend"): say(evaluations.backend_text(e)),
                  _("when"): e["created_at"]} for e in board],
                hide_index=True,
            )
            st.caption(_("BLEU (words), ROUGE-L (words): word-level (pyvi segmentation): a second view; the gate uses "
                         "syllables.") if not words.unavailable() else
                       _("Word-level scores are not available: the word segmenter (pyvi) is not installed; the gate uses "
                         "syllables."))
            shown = {e["id"]: e for e in board} or {evals[0]["id"]: evals[0]}
            chosen = st.selectbox(_("Details of"), list(shown), format_func=lambda i: say(shown[i]["label"]))
            e = shown[chosen]
            c1, c2, c3, c4 = st.columns(4)
            c1.metric("BLEU", f"{e['bleu']:.4f}")
            c2.metric("ROUGE-L", f"{e['rouge_l']:.4f}")
            c3.metric(_("Gate"), _("PASS") if e["passed"] else _("FAIL"))
            c4.metric(_("Examples/s"), f"{e['examples_per_s']:.2f}" if e.get("examples_per_s") else "–")
            st.caption(_("{reason} · thresholds of this verdict: BLEU > {bleu}, ROUGE-L > {rouge_l} · decoding {decoding}")
                       .format(reason=e.get("gate_reason") or "", bleu=e["thresholds"]["bleu"],
                               rouge_l=e["thresholds"]["rouge_l"], decoding=e["decoding"]))
            if e.get("backend"):
                st.caption(_("Ran on: {backend}").format(backend=say(evaluations.backend_text(e))))
            g1, g2 = st.columns(2)
            g1.plotly_chart(charts.gate_bars(e["bleu"], e["rouge_l"], e["thresholds"], tr=_), key="gate-bars")
            if e["run_id"]:
                g2.plotly_chart(charts.loss_curve(train_runs.run_metrics(e["run_id"]),
                                                  _("Training loss of {run}").format(run=e["run_id"]), tr=_), key="loss")
            else:
                g2.plotly_chart(charts.example_scores(evaluations.examples(chosen), tr=_), key="hist")
            b1, b2 = st.columns(2)
            b1.download_button(_("Download the report (HTML)"), lambda chosen=chosen, lg=lang(): report.build(chosen, actor=who, lang=lg),
                               file_name=f"{chosen}-report.html", mime="text/html", on_click="ignore")
            b2.download_button(_("Download the examples (CSV)"), lambda chosen=chosen: evaluations.examples_csv(chosen, who),
                               file_name=f"{chosen}-examples.csv", mime="text/csv", on_click="ignore")

with votes_tab:
    if votes_tab.open:
        rates = votes.win_rates(who, here)
        if not rates:
            st.info(_("No blind preference votes yet: reviewers record them in the Playground's Blind vote mode."))
        else:
            latest = {}
            for ev in evals:   # newest first: a run's latest evaluation
                if (ev.get("target") or "adapter") == "adapter":   # the run itself, not one of its GGUFs
                    latest.setdefault(ev["run_id"], ev)

            def _scores(model: str) -> tuple:
                kind, __, ref = model.partition(":")
                ev = latest.get(ref) if kind == "run" else None
                return (round(ev["bleu"], 4), round(ev["rouge_l"], 4)) if ev else (None, None)

            rows = []
            for r in rates:
                for me, other, rate, won, lost in (("model_1", "model_2", "win_rate_1", "wins_1", "wins_2"),
                                                    ("model_2", "model_1", "win_rate_2", "wins_2", "wins_1")):
                    bleu, rouge = _scores(r[me])
                    rows.append({_("model"): r[me], _("against"): r[other], _("votes"): r["votes"], _("won"): r[won],
                                 _("lost"): r[lost], _("ties"): r["ties"], _("win rate"): r[rate], "BLEU": bleu,
                                 "ROUGE-L": rouge})
            rows.sort(key=lambda x: (-x[_("votes")], -x[_("win rate")], x[_("model")]))
            st.caption(_("Win rate of a model against another on the same prompts, from blind votes (a tie counts half); "
                         "BLEU and ROUGE-L of a run's latest evaluation beside it."))
            st.dataframe(rows, hide_index=True)

with compare_tab:
    if compare_tab.open:
        if len(evals) < 2:
            st.info(_("Two evaluations are needed for a comparison (e.g. the base model without adapter and a tuned run)."))
        else:
            ids = [e["id"] for e in evals]
            tuned = next((e for e in evals if e["run_id"]), evals[0])
            counterpart = evaluations.base_counterpart(tuned, who) or next(e for e in evals if e["id"] != tuned["id"])
            if counterpart["id"] not in eval_labels:   # an older base evaluation than the newest offered
                evals.append(counterpart)
                ids.append(counterpart["id"])
                eval_labels[counterpart["id"]] = say(counterpart["label"])
            a1, a2 = st.columns(2)
            a = a1.selectbox(_("A (before)"), ids, index=ids.index(counterpart["id"]), format_func=eval_labels.get)
            b = a2.selectbox(_("B (after)"), ids, index=ids.index(tuned["id"]), format_func=eval_labels.get)
            c = evaluations.compare(a, b, who)
            sh = c["shared"]
            if not sh["n"]:
                st.warning(_("These two evaluations share no example (different dataset versions or splits)."))
            else:
                m1, m2, m3, m4 = st.columns(4)
                m1.metric(_("BLEU (shared)"), f"{sh['b']['bleu']:.4f}", f"{sh['delta']['bleu']:+.4f}")
                m2.metric(_("ROUGE-L (shared)"), f"{sh['b']['rouge_l']:.4f}", f"{sh['delta']['rouge_l']:+.4f}")
                m3.metric(_("Better examples"), c["counts"]["better"])
                m4.metric(_("Worse examples"), c["counts"]["worse"], delta_color="inverse")
                st.caption(_("On the {n} examples both evaluated (matched by instruction, input and reference). "
                             "Whole evaluations: BLEU {bleu_a:.4f} → {bleu_b:.4f}, ROUGE-L "
                             "{rouge_l_a:.4f} → {rouge_l_b:.4f}.")
                           .format(n=sh["n"], bleu_a=c["a"]["bleu"], bleu_b=c["b"]["bleu"],
                                   rouge_l_a=c["a"]["rouge_l"], rouge_l_b=c["b"]["rouge_l"]))
                st.plotly_chart(charts.rouge_scatter(c, tr=_), key="scatter")
                cols = lambda items: [{"#": p["idx_b"], "ROUGE-L A": round(p["rouge_l_a"], 3),
                                       "ROUGE-L B": round(p["rouge_l_b"], 3), "Δ": round(p["delta_rouge_l"], 3),
                                       _("instruction"): p["instruction"], _("reference"): p["reference"],
                                       "A": p["prediction_a"], "B": p["prediction_b"]} for p in items]
                w1, w2 = st.columns(2)
                w1.markdown(_("**Got better ({n})**").format(n=c["counts"]["better"]))
                w1.dataframe(cols(c["better"]), hide_index=True)
                w2.markdown(_("**Got worse ({n})**").format(n=c["counts"]["worse"]))
                w2.dataframe(cols(c["worse"]), hide_index=True)
                st.download_button(_("Download the report of B compared with A (HTML)"),
                                   lambda a=a, b=b, lg=lang(): report.build(b, compare_with=a, actor=who, lang=lg), file_name=f"{b}-vs-{a}.html",
                                   mime="text/html", on_click="ignore")

with drill_tab:
    if drill_tab.open:
        if evals:
            pick = st.selectbox(_("Evaluation"), [e["id"] for e in evals], format_func=eval_labels.get, key="drill-eval")
            exs = sorted(evaluations.examples(pick), key=lambda x: (x["rouge_l"], x["idx"]))
            if exs:
                idx = st.selectbox(_("Example (lowest ROUGE-L first)"), [x["idx"] for x in exs],
                                   format_func=lambda i: next(f"#{x['idx']} · ROUGE-L {x['rouge_l']:.3f} · "
                                                              f"{(x['instruction'] or '')[:70]}" for x in exs if x["idx"] == i))
                ex = next(x for x in exs if x["idx"] == idx)
                st.text(ex["instruction"] or "")   # data shows as text, never as markdown
                if ex["input"]:
                    st.text(ex["input"])
                d = evaluations.word_diff(ex["reference"], ex["prediction"])
                r1, r2 = st.columns(2)
                r1.markdown(_("**Reference**"))
                r1.html(report.DIFF_STYLE + report.diff_html(d["reference"], "ref"))
                r2.markdown(_("**Prediction** — BLEU {bleu:.3f}, ROUGE-L {rouge_l:.3f}").format(bleu=ex["bleu"], rouge_l=ex["rouge_l"]))
                r2.html(report.DIFF_STYLE + report.diff_html(d["prediction"], "pred"))
                st.caption(_("{n} words in common; differing words are highlighted.").format(n=d["same_words"]))
                verdict = judge.verdicts(pick).get(idx)
                if verdict:
                    if verdict["score"] is not None:
                        st.markdown(_("**LLM judge: {score}/5** ({judge}, rubric {rubric})").format(
                            score=verdict["score"], judge=verdict["judge"], rubric=verdict["rubric_version"]))
                        st.text(verdict["reason"] or _("(no reason given)"))   # the judge's words, as text
                    else:
                        st.markdown(_("**LLM judge: no score** ({judge})").format(judge=verdict["judge"]))
                        st.text(verdict["error"] or "")

def _agreement_rows(ag: dict) -> list[dict]:
    v, r = ag["votes"], ag["reviews"]
    share = lambda x: "–" if x is None else f"{x:.0%}"
    return [{_("checked against"): _("blind preference votes"), "n": v["n"],
             _("agreement"): _("{share} of votes; {decisive} of the {n} decisive ones").format(
                 share=share(v["agreement"]), decisive=share(v["agreement_decisive"]), n=v["n_decisive"]),
             "Kendall τ": v["kendall_tau"], _("note"): say(v["note"]) if v["note"] else ""},
            {_("checked against"): _("reviewers' decisions"), "n": r["n"],
             _("agreement"): _("concordance {share} over {pairs} pairs").format(share=share(r["concordance"]),
                                                                              pairs=r["pairs"]),
             "Kendall τ": r["kendall_tau"], _("note"): say(r["note"]) if r["note"] else ""}]


with judge_tab:
    if judge_tab.open:
        st.caption(_("An LLM reads each answer with a written Vietnamese rubric (correct against the reference, "
                     "complete, nothing invented, in Vietnamese) and gives a 1–5 score with a one-line reason: a "
                     "judge of meaning beside BLEU and ROUGE-L, which count shared syllables. It is checked against "
                     "the team's blind votes and reviewers' decisions before it may gate."))
        pick = None
        if evals:
            pick = st.selectbox(_("Evaluation"), [e["id"] for e in evals], format_func=eval_labels.get, key="judge-eval")
            sm = judge.summary(pick, who)
            shown = judge.verdict_of(pick, who)
            j1, j2, j3, j4 = st.columns(4)
            j1.metric(_("Judge's mean (1–5)"), f"{sm['mean']:.2f}" if sm["mean"] is not None else "–")
            j2.metric(_("Judged"), f"{sm['n']} / {sm['examples']}")
            j3.metric(_("Failed"), sm["failed"])
            j4.metric(_("Cost"), f"{sm['cost']:.4f}")
            if sm["judge"]:
                st.caption(_("Judge {judge}, rubric {rubric}. {reason}").format(
                    judge=sm["judge"], rubric=sm["rubric_version"], reason=say(shown["reason"])))
                st.plotly_chart(charts.judge_scores(sm["distribution"], sm["mean"], tr=_), key="judge-scores")
                st.markdown(_("**Agreement with the team** (n below {few}: too small to say)").format(few=judge.TOO_FEW))
                st.dataframe(_agreement_rows(judge.agreement(sm["judge"], sm["rubric_version"], actor=who)),
                             hide_index=True)
                failed = [v for v in judge.verdicts(pick, sm["judge"], sm["rubric_version"]).values()
                          if v["score"] is None]
                if failed:
                    st.markdown(_("**Examples the judge could not score** (a re-run asks them again)"))
                    st.dataframe([{"#": v["idx"], _("why"): v["error"]} for v in failed], hide_index=True)
                if len(sm["judges"]) > 1:
                    st.dataframe([{_("judge"): j["judge"], _("rubric"): j["rubric_version"], "n": j["n"],
                                   _("mean"): None if j["mean"] is None else round(j["mean"], 3)} for j in sm["judges"]],
                                 hide_index=True)
            else:
                st.info(_("No LLM judge has scored this evaluation yet."))
        if can("judge.run"):
            lim = judge.limits()
            with st.form("judge-run"):
                k1, k2 = st.columns(2)
                judge_choice = k1.selectbox(_("Judge"), judge.judge_options(),
                                            format_func=lambda o: _("the default model (local, llama.cpp)")
                                            if o == "local" else o)
                what = k2.radio(_("What to judge"), ["evaluation", "votes", "reviews"], horizontal=True,
                                format_func=lambda w: {"evaluation": _("this evaluation's examples"),
                                                       "votes": _("the blind votes' answers"),
                                                       "reviews": _("the reviewed pairs")}[w])
                k3, k4 = st.columns(2)
                most = k3.number_input(_("Answers at most"), 1, int(lim["max_items"]), int(lim["max_items"]))
                spend = k4.number_input(_("Cost at most (the endpoint's prices; the evaluation's earlier runs count)"),
                                        0.0, float(lim["max_cost"]), float(lim["max_cost"]))
                go_judge = st.form_submit_button(_("Queue the judge"))
            if go_judge:
                try:
                    common = dict(endpoint=None if judge_choice == "local" else judge_choice.split(":", 1)[1],
                                  local=judge_choice == "local", max_items=int(most), max_cost=float(spend), actor=who)
                    if what == "evaluation":
                        if pick is None:
                            raise ValueError(_("No evaluations yet."))
                        job = judge.submit_evaluation(pick, **common)
                    elif what == "votes":
                        job = judge.submit_votes(**common, project=here)
                    else:
                        job = judge.submit_reviews(**common, project=here)
                    refresh_live()
                    st.success(_("Queued judge job {job} ({n} answers).").format(job=job["id"], n=job["config"]["items"]))
                except (ValueError, queue.JobError, PermissionError) as exc:
                    fail(exc)
        for job in live_jobs(10, "judge"):
            if job["state"] in ("queued", "running"):
                job_progress(job)


with gate_tab:
    if gate_tab.open:
        st.caption(_("Studio settings; every change is recorded in the audit log, and every evaluation keeps the "
                     "thresholds its verdict used. A run is releasable on its latest evaluation of the whole held-out "
                     "split (at least {share:.0%} of it).").format(share=gate_settings["min_share"])
                   + ("" if can("gate.thresholds") else " " + _("Changing them needs an admin.")))
        if not can("gate.thresholds"):
            t1, t2 = st.columns(2)
            t1.metric(_("BLEU must exceed"), th["bleu"])
            t2.metric(_("ROUGE-L must exceed"), th["rouge_l"])
        else:
            with st.form("thresholds"):
                min_bleu = st.number_input(_("BLEU must exceed"), 0.0, 1.0, float(th["bleu"]), 0.01)
                min_rouge = st.number_input(_("ROUGE-L must exceed"), 0.0, 1.0, float(th["rouge_l"]), 0.01)
                reason = st.text_input(_("Reason, to go below the floor (BLEU {bleu}, ROUGE-L {rouge_l}; recorded)")
                                       .format(bleu=gate.FLOOR["bleu"], rouge_l=gate.FLOOR["rouge_l"]))
                if st.form_submit_button(_("Save thresholds")):
                    try:
                        gate.set_thresholds(min_bleu, min_rouge, actor=who, override_reason=reason or None)
                        st.success(_("Saved."))
                    except (ValueError, PermissionError) as exc:
                        fail(exc)
        jc = gate.judge_gate()
        st.markdown(_("**The LLM judge**"))
        st.caption((_("The judge {judge} (rubric {rubric}) gates: its mean must be at least {min_mean} over at least "
                      "{min_share:.0%} of the evaluation.").format(judge=jc["judge"], rubric=jc["rubric_version"],
                                                                   min_mean=jc["min_mean"], min_share=jc["min_share"])
                    if jc["enabled"] else _("The judge's mean is shown beside the gate; it does not gate."))
                   + ("" if can("judge.gate") else " " + _("Changing it needs an admin.")))
        if can("judge.gate"):
            known = list(dict.fromkeys([j["judge"] for j in judge.judges(who)] + ([jc["judge"]] if jc["judge"] else [])))
            with st.form("judge-gate"):
                let = st.checkbox(_("Let the judge's mean gate a release"), value=bool(jc["enabled"]))
                gating_judge = st.selectbox(_("The judge whose mean gates"), known or [""],
                                            index=known.index(jc["judge"]) if jc["judge"] in known else 0)
                g1, g2 = st.columns(2)
                judge_min = g1.number_input(_("The judge's mean must be at least (1–5)"), 1.0, 5.0,
                                            float(jc["min_mean"]), 0.1)
                judge_share = g2.number_input(_("Share of an evaluation the judge must have scored"), 0.1, 1.0,
                                              float(jc["min_share"]), 0.05)
                judge_reason = st.text_input(_("Reason, when the judge's agreement with the team is too small to say "
                                               "or too low (recorded)"))
                if st.form_submit_button(_("Save the judge's gate")):
                    try:
                        judge.set_gate(let, judge=gating_judge or None, min_mean=judge_min, min_share=judge_share,
                                       actor=who, override_reason=judge_reason or None)
                        st.success(_("Saved."))
                    except (ValueError, PermissionError) as exc:
                        fail(exc)


with kept_tab:
    if kept_tab.open:
        rc = retention.settings()
        st.caption(_("Does tuning keep general Vietnamese? The base model and a tuned run answer general Vietnamese — "
                     "the test split of the general data mixed into the run's version, and the studio's own general "
                     "set — scored like an evaluation, with the perplexity of the reference answers. The gate asks "
                     "that the tuned ROUGE-L stay at least the base's − {drop} and its perplexity at most the base's "
                     "× {ratio}.").format(drop=rc["rouge_l_drop"], ratio=rc["perplexity_ratio"])
                   + " " + (_("A run without the check is not releasable.") if rc["required"]
                            else _("It gates where measured.")))
        done_runs = train_runs.list_runs(who, here, state="succeeded", limit=RUNS_SHOWN)
        if not done_runs:
            st.info(_("No finished runs yet."))
        else:
            kept_run = st.selectbox(_("Run"), [r["id"] for r in done_runs], key="kept-run")
            shown = retention.summary(kept_run, who)
            c = shown["check_obj"]
            verdict = {True: _("kept"), False: _("not kept"), None: _("not measured")}[c.passed]
            (st.success if c.passed else st.error if c.passed is False else st.info)(
                _("General Vietnamese: {verdict}.").format(verdict=verdict) + " " + say(c.reason))
            table = []
            for name, s in c.numbers["sets"].items():
                for who_key, who_name in (("base", _("base")), ("tuned", _("tuned"))):
                    got = s.get(who_key)
                    if got:
                        table.append({_("set"): say(retention.SET_LABELS.get(name, name)), _("model"): who_name,
                                      "n": s["n"], "BLEU": round(got["bleu"], 4), "ROUGE-L": round(got["rouge_l"], 4),
                                      _("perplexity"): None if got["perplexity"] is None else round(got["perplexity"], 3)})
            if table:
                st.dataframe(table, hide_index=True)
            if any(s.get("base") for s in c.numbers["sets"].values()):
                st.plotly_chart(charts.retention_bars(c.numbers, {k: say(v) for k, v in retention.SET_LABELS.items()},
                                                      tr=_), key="retention-bars")
                measured = [n for n, s in c.numbers["sets"].items() if s.get("base_id")]
                kept_set = st.selectbox(_("Examples of"), measured, key="kept-set",
                                        format_func=lambda n: say(retention.SET_LABELS.get(n, n)))
                s = c.numbers["sets"][kept_set]
                rows = retention.drilldown(s["tuned_id"], s["base_id"], who)
                pick = st.selectbox(_("Example (largest ROUGE-L loss first)"), [r["idx"] for r in rows], key="kept-ex",
                                    format_func=lambda i: next(f"#{r['idx']} · ROUGE-L {r['base_rouge_l']:.3f} → "
                                                               f"{r['tuned_rouge_l']:.3f} · {(r['instruction'] or '')[:60]}"
                                                               for r in rows if r["idx"] == i))
                ex = next(r for r in rows if r["idx"] == pick)
                st.text(ex["instruction"] or "")   # data shows as text, never as markdown
                if ex["input"]:
                    st.text(ex["input"])
                st.markdown(_("**Reference**"))
                st.text(ex["reference"] or "")
                e1, e2 = st.columns(2)
                e1.markdown(_("**Base** — ROUGE-L {rouge_l:.3f}, NLL {nll}").format(
                    rouge_l=ex["base_rouge_l"], nll="–" if ex["base_nll"] is None else f"{ex['base_nll']:.3f}"))
                e1.text(ex["base"] or "")
                e2.markdown(_("**Tuned** — ROUGE-L {rouge_l:.3f}, NLL {nll}").format(
                    rouge_l=ex["tuned_rouge_l"], nll="–" if ex["tuned_nll"] is None else f"{ex['tuned_nll']:.3f}"))
                e2.text(ex["tuned"] or "")
            if can("evaluate.submit"):
                with st.form("retention-run"):
                    k1, k2, k3 = st.columns(3)
                    kept_limit = k1.number_input(_("Pairs of each set (0: all)"), 0, 100000, 0)
                    kept_tokens = k2.number_input(_("Max new tokens"), 1, 8192, 128, key="kept-tokens")
                    kept_quant = k3.selectbox(_("Also its GGUF"), ["", "f16", "q8_0", "q4_k_m"],
                                              format_func=lambda q: q or _("(no)"))
                    go_kept = st.form_submit_button(_("Queue the retention check"))
                if go_kept:
                    try:
                        job = retention.submit(kept_run, actor=who, quant=kept_quant or None,
                                               limit=int(kept_limit) or None, max_new_tokens=int(kept_tokens))
                        refresh_live()
                        st.success(_("Queued retention job {job}.").format(job=job["id"]))
                    except (ValueError, queue.JobError, PermissionError) as exc:
                        fail(exc)
        for job in live_jobs(10, "retention"):
            if job["state"] in ("queued", "running"):
                job_progress(job)
        if can("gate.thresholds"):
            with st.form("retention-settings"):
                s1, s2 = st.columns(2)
                drop = s1.number_input(_("ROUGE-L the tuned run may lose"), 0.0, 1.0, float(rc["rouge_l_drop"]), 0.01)
                ratio = s2.number_input(_("Perplexity at most the base's ×"), 1.0, 100.0, float(rc["perplexity_ratio"]),
                                        0.05)
                required = st.checkbox(_("Required: a run without the check is not releasable"), value=rc["required"])
                why = st.text_input(_("Reason, to loosen the check beyond its defaults (recorded)"))
                if st.form_submit_button(_("Save the check's bounds")):
                    try:
                        retention.set_settings(actor=who, rouge_l_drop=drop, perplexity_ratio=ratio, required=required,
                                               override_reason=why or None)
                        st.success(_("Saved."))
                    except (ValueError, PermissionError) as exc:
                        fail(exc)
