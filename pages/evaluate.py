import streamlit as st

from core import charts, evaluate, jobs, models
from core.inference import Decoding
from pages.common import fail, job_progress, user

st.title("Evaluate")
th = evaluate.thresholds()
st.caption(f"Greedy generation on the held-out split, scored on Vietnamese syllables (BLEU-4 corpus, ROUGE-L F1). "
           f"Release gate: BLEU > {th['bleu']} and ROUGE-L > {th['rouge_l']}.")

runs = [r for r in jobs.list_runs() if r["state"] == "succeeded"]
with st.form("evaluate"):
    options = {f"{r['id']} (tuned)": r["id"] for r in runs}
    options |= {f"{models.display_name(r['base_model'])} without adapter, on {r['dataset_version_id']}": f"base::{r['id']}"
                for r in runs[:5]}
    choice = st.selectbox("What to evaluate", list(options) or ["(no finished runs yet)"])
    c1, c2, c3 = st.columns(3)
    limit = c1.number_input("Examples (0: the whole test split)", 0, 100000, 20)
    max_new = c2.number_input("Max new tokens", 8, 2048, 96)
    batch = c3.number_input("Batch size", 1, 256, 8)
    go = st.form_submit_button("Queue evaluation", type="primary", disabled=not runs)
if go and runs:
    try:
        target = options[choice]
        decoding = Decoding(max_new_tokens=int(max_new), batch_size=int(batch))
        if target.startswith("base::"):
            run = jobs.get_run(target.split("::", 1)[1])
            job = evaluate.submit(None, base_model=run["base_model"], dataset_version_id=run["dataset_version_id"],
                                  limit=int(limit) or None, decoding=decoding, owner=user())
        else:
            job = evaluate.submit(target, limit=int(limit) or None, decoding=decoding, owner=user())
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

st.subheader("Evaluations")
evals = evaluate.list_evaluations()
if not evals:
    st.info("No evaluations yet.")
else:
    st.dataframe(
        [{"evaluation": e["id"], "run": e["run_id"] or "(base model)", "dataset": e["dataset_version_id"],
          "n": e["n"], "BLEU": round(e["bleu"], 4), "ROUGE-L": round(e["rouge_l"], 4),
          "gate": "PASS" if e["passed"] else "FAIL", "when": e["created_at"]} for e in evals],
        hide_index=True,
    )
    chosen = st.selectbox("Details of", [e["id"] for e in evals])
    e = evaluate.get_evaluation(chosen)
    import json

    thresholds = json.loads(e["thresholds"]) if isinstance(e["thresholds"], str) else e["thresholds"]
    c1, c2, c3 = st.columns(3)
    c1.metric("BLEU", f"{e['bleu']:.4f}")
    c2.metric("ROUGE-L", f"{e['rouge_l']:.4f}")
    c3.metric("Gate", "PASS" if e["passed"] else "FAIL")
    examples = evaluate.examples(chosen)
    g1, g2 = st.columns(2)
    g1.plotly_chart(charts.gate_bars(e["bleu"], e["rouge_l"], thresholds))
    g2.plotly_chart(charts.example_scores(examples))
    if e["run_id"]:
        st.plotly_chart(charts.loss_curve(jobs.run_metrics(e["run_id"]), f"Loss of {e['run_id']}"))
    st.dataframe([{k: ex[k] for k in ("idx", "instruction", "input", "reference", "prediction", "bleu", "rouge_l")}
                  for ex in examples], hide_index=True)

with st.expander("Gate thresholds (project settings, recorded in the audit log)"):
    with st.form("thresholds"):
        b = st.number_input("BLEU must exceed", 0.0, 1.0, float(th["bleu"]), 0.01)
        r = st.number_input("ROUGE-L must exceed", 0.0, 1.0, float(th["rouge_l"]), 0.01)
        if st.form_submit_button("Save thresholds"):
            try:
                evaluate.set_thresholds(b, r, actor=user())
                st.success("Saved.")
            except ValueError as exc:
                fail(exc)
