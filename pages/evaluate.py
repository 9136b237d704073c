import streamlit as st

from core import charts, evaluate, jobs, models, report
from core.inference import Decoding, parse_stop
from pages.common import fail, job_progress, user

st.title("Evaluate")
th = evaluate.thresholds()
st.caption(f"Batched generation on the held-out split (greedy unless you set a temperature), scored on Vietnamese "
           f"syllables (BLEU-4 corpus, ROUGE-L F1). Release gate: BLEU > {th['bleu']} and ROUGE-L > {th['rouge_l']}.")

runs = [r for r in jobs.list_runs() if r["state"] == "succeeded"]
with st.form("evaluate"):
    options = {f"{r['id']} (tuned)": r["id"] for r in runs}
    options |= {f"{models.display_name(r['base_model'])} without adapter, on {r['dataset_version_id']}": f"base::{r['id']}"
                for r in runs[:5]}
    choice = st.selectbox("What to evaluate", list(options) or ["(no finished runs yet)"])
    c1, c2, c3, c4 = st.columns(4)
    limit = c1.number_input("Examples (0: the whole split)", 0, 100000, 20)
    split = c2.selectbox("Split", ["test", "train"], help="Only the held-out test split counts for the release gate.")
    max_new = c3.number_input("Max new tokens", 1, 8192, 96)
    batch = c4.number_input("Batch size", 1, 1024, 8)
    d1, d2, d3 = st.columns([1, 1, 2])
    temperature = d1.number_input("Temperature (0: greedy)", 0.0, 5.0, 0.0, 0.05)
    top_p = d2.number_input("Top-p", 0.01, 1.0, 1.0, 0.05)
    stops = d3.text_area("Stop strings (one per line; \\n is a newline)", "", height=68)
    go = st.form_submit_button("Queue evaluation", type="primary", disabled=not runs)
if go and runs:
    try:
        target = options[choice]
        decoding = Decoding(max_new_tokens=int(max_new), batch_size=int(batch), temperature=float(temperature),
                            top_p=float(top_p), stop=parse_stop(stops))
        if target.startswith("base::"):
            run = jobs.get_run(target.split("::", 1)[1])
            job = evaluate.submit(None, base_model=run["base_model"], dataset_version_id=run["dataset_version_id"],
                                  split=split, limit=int(limit) or None, decoding=decoding, owner=user(),
                                  prompt_format_name=run["prompt_format"])
        else:
            job = evaluate.submit(target, split=split, limit=int(limit) or None, decoding=decoding, owner=user())
        st.success(f"Queued evaluation job {job['id']}.")
    except (ValueError, jobs.JobError) as exc:
        fail(exc)


@st.fragment(run_every="2s")
def active() -> None:
    for job in jobs.list_jobs(10, "evaluate"):
        if job["state"] in ("queued", "running"):
            job_progress(job)
        elif job["state"] == "failed":
            st.error(f"Evaluation job {job['id']} failed: {job['error']}")
            break


active()

evals = evaluate.list_evaluations()
if not evals:
    st.info("No evaluations yet.")
labels = {e["id"]: e["label"] for e in evals}
board_tab, compare_tab, drill_tab, gate_tab = st.tabs(["Leaderboard", "Compare", "Examples", "Gate thresholds"])

with board_tab:
    if evals:
        f1, f2 = st.columns(2)
        versions = ["(all)"] + sorted({e["dataset_version_id"] for e in evals})
        bases = ["(all)"] + sorted({e["base_model"] for e in evals})
        version = f1.selectbox("Dataset version", versions)
        base = f2.selectbox("Base model", bases, format_func=lambda b: b if b == "(all)" else models.display_name(b))
        board = evaluate.leaderboard(None if version == "(all)" else version, None if base == "(all)" else base)
        st.dataframe(
            [{"#": e["rank"], "evaluation": e["id"], "run": e["run_id"] or "(base model)",
              "base model": models.display_name(e["base_model"]), "dataset": e["dataset_version_id"],
              "split": e["split"], "n": e["n"], "BLEU": round(e["bleu"], 4), "ROUGE-L": round(e["rouge_l"], 4),
              "gate": "PASS" if e["passed"] else "FAIL",
              "decoding": f"T={e['decoding'].get('temperature', 0)}, max {e['decoding'].get('max_new_tokens')}",
              "examples/s": round(e["examples_per_s"], 2) if e.get("examples_per_s") else None,
              "when": e["created_at"]} for e in board],
            hide_index=True,
        )
        chosen = st.selectbox("Details of", [e["id"] for e in board] or [evals[0]["id"]], format_func=labels.get)
        e = evaluate.get_evaluation(chosen)
        c1, c2, c3, c4 = st.columns(4)
        c1.metric("BLEU", f"{e['bleu']:.4f}")
        c2.metric("ROUGE-L", f"{e['rouge_l']:.4f}")
        c3.metric("Gate", "PASS" if e["passed"] else "FAIL")
        c4.metric("Examples/s", f"{e['examples_per_s']:.2f}" if e.get("examples_per_s") else "–")
        st.caption(f"{e.get('gate_reason') or ''} · thresholds of this verdict: BLEU > {e['thresholds']['bleu']}, "
                   f"ROUGE-L > {e['thresholds']['rouge_l']} · decoding {e['decoding']}")
        g1, g2 = st.columns(2)
        g1.plotly_chart(charts.gate_bars(e["bleu"], e["rouge_l"], e["thresholds"]), key="gate-bars")
        if e["run_id"]:
            g2.plotly_chart(charts.loss_curve(jobs.run_metrics(e["run_id"]), f"Training loss of {e['run_id']}"),
                            key="loss")
        else:
            g2.plotly_chart(charts.example_scores(evaluate.examples(chosen)), key="hist")
        b1, b2 = st.columns(2)
        b1.download_button("Download the report (HTML)", lambda chosen=chosen: evaluate.report_html(chosen),
                           file_name=f"{chosen}-report.html", mime="text/html", on_click="ignore")
        b2.download_button("Download the examples (CSV)", lambda chosen=chosen: evaluate.examples_csv(chosen),
                           file_name=f"{chosen}-examples.csv", mime="text/csv", on_click="ignore")

with compare_tab:
    if len(evals) < 2:
        st.info("Two evaluations are needed for a comparison (e.g. the base model without adapter and a tuned run).")
    else:
        ids = [e["id"] for e in evals]
        tuned = next((e for e in evals if e["run_id"]), evals[0])
        counterpart = evaluate.base_counterpart(tuned["id"]) or next(e for e in evals if e["id"] != tuned["id"])
        a1, a2 = st.columns(2)
        a = a1.selectbox("A (before)", ids, index=ids.index(counterpart["id"]), format_func=labels.get)
        b = a2.selectbox("B (after)", ids, index=ids.index(tuned["id"]), format_func=labels.get)
        c = evaluate.compare(a, b)
        sh = c["shared"]
        if not sh["n"]:
            st.warning("These two evaluations share no example (different dataset versions or splits).")
        else:
            m1, m2, m3, m4 = st.columns(4)
            m1.metric("BLEU (shared)", f"{sh['b']['bleu']:.4f}", f"{sh['delta']['bleu']:+.4f}")
            m2.metric("ROUGE-L (shared)", f"{sh['b']['rouge_l']:.4f}", f"{sh['delta']['rouge_l']:+.4f}")
            m3.metric("Better examples", c["counts"]["better"])
            m4.metric("Worse examples", c["counts"]["worse"], delta_color="inverse")
            st.caption(f"On the {sh['n']} examples both evaluated (matched by instruction, input and reference). "
                       f"Whole evaluations: BLEU {c['a']['bleu']:.4f} → {c['b']['bleu']:.4f}, ROUGE-L "
                       f"{c['a']['rouge_l']:.4f} → {c['b']['rouge_l']:.4f}.")
            st.plotly_chart(charts.rouge_scatter(c), key="scatter")
            cols = lambda items: [{"#": p["idx_b"], "ROUGE-L A": round(p["rouge_l_a"], 3),
                                   "ROUGE-L B": round(p["rouge_l_b"], 3), "Δ": round(p["delta_rouge_l"], 3),
                                   "instruction": p["instruction"], "reference": p["reference"],
                                   "A": p["prediction_a"], "B": p["prediction_b"]} for p in items]
            w1, w2 = st.columns(2)
            w1.markdown(f"**Got better ({c['counts']['better']})**")
            w1.dataframe(cols(c["better"]), hide_index=True)
            w2.markdown(f"**Got worse ({c['counts']['worse']})**")
            w2.dataframe(cols(c["worse"]), hide_index=True)
            st.download_button("Download the report of B compared with A (HTML)",
                               lambda a=a, b=b: evaluate.report_html(b, compare_with=a), file_name=f"{b}-vs-{a}.html",
                               mime="text/html", on_click="ignore")

with drill_tab:
    if evals:
        pick = st.selectbox("Evaluation", [e["id"] for e in evals], format_func=labels.get, key="drill-eval")
        exs = sorted(evaluate.examples(pick), key=lambda x: (x["rouge_l"], x["idx"]))
        if exs:
            idx = st.selectbox("Example (lowest ROUGE-L first)", [x["idx"] for x in exs],
                               format_func=lambda i: next(f"#{x['idx']} · ROUGE-L {x['rouge_l']:.3f} · "
                                                          f"{(x['instruction'] or '')[:70]}" for x in exs if x["idx"] == i))
            ex = next(x for x in exs if x["idx"] == idx)
            st.markdown(f"**{ex['instruction']}**")
            if ex["input"]:
                st.caption(ex["input"])
            d = evaluate.word_diff(ex["reference"], ex["prediction"])
            r1, r2 = st.columns(2)
            r1.markdown("**Reference**")
            r1.html(report.DIFF_STYLE + report.diff_html(d["reference"], "ref"))
            r2.markdown(f"**Prediction** — BLEU {ex['bleu']:.3f}, ROUGE-L {ex['rouge_l']:.3f}")
            r2.html(report.DIFF_STYLE + report.diff_html(d["prediction"], "pred"))
            st.caption(f"{d['same_words']} words in common; differing words are highlighted.")

with gate_tab:
    st.caption("Project settings; every change is recorded in the audit log, and every evaluation keeps the "
               "thresholds its verdict used.")
    with st.form("thresholds"):
        min_bleu = st.number_input("BLEU must exceed", 0.0, 1.0, float(th["bleu"]), 0.01)
        min_rouge = st.number_input("ROUGE-L must exceed", 0.0, 1.0, float(th["rouge_l"]), 0.01)
        if st.form_submit_button("Save thresholds"):
            try:
                evaluate.set_thresholds(min_bleu, min_rouge, actor=user())
                st.success("Saved.")
            except ValueError as exc:
                fail(exc)
