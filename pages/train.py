import streamlit as st

from core import charts, config, datasets, jobs, models, review, vram
from pages.common import fail, job_progress, jobs_table, user

st.title("Train")
st.caption("LoRA/QLoRA jobs run in worker processes, one per GPU (the CPU counts as one), first come first served. "
           "Every browser session sees the same queue, and jobs survive an app restart.")

versions = datasets.list_versions()
if not versions:
    st.info("Import a dataset version on the Datasets page first.")
else:
    with st.form("train"):
        labels = {f"{v['name']} ({v['id']}, {v['rows_train']} train)": v["id"] for v in versions}
        c1, c2 = st.columns(2)
        version = c1.selectbox("Dataset version", list(labels))
        preset = c2.selectbox("Preset", list(config.PRESETS), index=1,
                              help="The guide's defaults are r=16, alpha=16, lr 2e-4, 3 epochs, batch 2 × 4, packing.")
        bases = models.list_base_models() or [""]
        c3, c4, c5 = st.columns(3)
        base = c3.selectbox("Base model", bases, format_func=lambda b: models.display_name(b) or "(default)")
        other = c3.text_input("…or another model (local folder or name, e.g. unsloth/gemma-4-E4B-it-unsloth-bnb-4bit)")
        fmt = c4.selectbox("Prompt format", ["chat", "alpaca-vi"],
                           help="chat: the model's own chat template; alpaca-vi: ### Hướng dẫn / ### Đầu vào / ### Phản hồi")
        max_steps = c5.number_input("Max steps (0: use epochs)", min_value=0, value=0, step=10)
        with st.expander("Settings"):
            base_cfg = config.preset(preset)
            a1, a2, a3, a4 = st.columns(4)
            r = a1.number_input("LoRA r", 1, 256, base_cfg.lora_r)
            alpha = a2.number_input("LoRA alpha", 1, 512, base_cfg.lora_alpha)
            lr = a3.number_input("Learning rate", 1e-6, 1e-2, base_cfg.learning_rate, format="%.6f")
            epochs = a4.number_input("Epochs", 0.1, 50.0, float(base_cfg.num_train_epochs))
            b1, b2, b3, b4 = st.columns(4)
            batch = b1.number_input("Batch size", 1, 128, base_cfg.per_device_train_batch_size)
            accum = b2.number_input("Gradient accumulation", 1, 128, base_cfg.gradient_accumulation_steps)
            seq = b3.number_input("Max sequence length", 32, 32768, base_cfg.max_seq_length)
            packing = b4.checkbox("Packing", base_cfg.packing)
            e1, e2, _, _ = st.columns(4)
            save_steps = e1.number_input("Checkpoint every N steps", 1, 100000, base_cfg.save_steps,
                                         help="A failed or cancelled job resumes from its last checkpoint.")
            eval_steps = e2.number_input("Eval loss every N steps (0: off)", 0, 100000, base_cfg.eval_steps,
                                         help="Loss on the test split; the best checkpoint is kept. "
                                              "Checkpoint steps must be a multiple of it.")
        override = st.text_input("Override reason (only to train a version that has not passed its review sample; "
                                 "recorded with your name)")
        go = st.form_submit_button("Queue training job", type="primary")
    verdict = review.status(labels[version])
    if verdict["reviewed"]:
        st.caption(f"Review: {verdict['reason']}")
    else:
        st.warning(f"Review: {verdict['reason']}. Review it on the Datasets page, or give an override reason.")
    if go:
        try:
            cfg = config.preset(preset)
            cfg.base_model = other.strip() or base
            cfg.prompt_format = fmt
            cfg.lora_r, cfg.lora_alpha, cfg.learning_rate = int(r), int(alpha), float(lr)
            cfg.num_train_epochs, cfg.per_device_train_batch_size = float(epochs), int(batch)
            cfg.gradient_accumulation_steps, cfg.max_seq_length, cfg.packing = int(accum), int(seq), packing
            cfg.save_steps, cfg.eval_steps = int(save_steps), int(eval_steps)
            if max_steps:
                cfg.max_steps = int(max_steps)
            job = jobs.submit_train(labels[version], cfg.validate(), owner=user(), override_review=override)
            st.session_state["watch_run"] = job["run_id"]
            st.success(f"Queued job {job['id']} for run {job['run_id']}.")
            fit = vram.check(cfg, backend="unsloth" if cfg.backend == "auto" else cfg.backend)
            (st.warning if fit["fits"] is False else st.caption)(fit["message"])
        except (ValueError, jobs.JobError, datasets.DatasetError) as exc:
            fail(exc)
    st.download_button("Download the preset as YAML", config.to_yaml(config.preset(preset if versions else "guide (r=16)")),
                       file_name="train.yaml")


@st.fragment(run_every="2s")
def live() -> None:
    st.subheader("Jobs")
    rows = jobs_table(limit=15)
    for job in [j for j in rows if j["state"] in ("queued", "running")]:
        c1, c2 = st.columns([5, 1])
        with c1:
            job_progress(job)
        if c2.button("Cancel", key=f"cancel-{job['id']}"):
            try:
                jobs.cancel(job["id"], actor=user())
            except jobs.JobError as exc:
                fail(exc)
    runs = jobs.list_runs()
    if not runs:
        return
    ids = [r["id"] for r in runs]
    watch = st.session_state.get("watch_run")
    run_id = st.selectbox("Run", ids, index=ids.index(watch) if watch in ids else 0)
    run = next(r for r in runs if r["id"] == run_id)
    metrics = jobs.run_metrics(run_id)
    note = None
    if "gemma-4" in run["base_model"].lower():
        note = "Gemma 4 E2B/E4B: a loss of 13–15 at the start is normal (Unsloth's Gemma 4 notes)."
    st.plotly_chart(charts.training_dashboard(metrics, f"{run_id} ({run['state']})", note), key=f"loss-{run_id}")
    st.caption(f"Run {run_id}: {run['state']}")
    if len(metrics):
        last = metrics.iloc[-1]
        m1, m2, m3 = st.columns(3)
        m1.metric("step", int(last["step"]))
        m2.metric("loss", f"{last['loss']:.4f}")
        m3.metric("tokens/s", f"{last['tokens_per_s']:.0f}" if last["tokens_per_s"] == last["tokens_per_s"] and last["tokens_per_s"] else "–")
    job = jobs.get_job(run["job_id"])
    if job["state"] in ("failed", "cancelled"):
        found = jobs.checkpoints(run["run_dir"])
        if found and st.button(f"Resume from the checkpoint at step {found[-1][0]}", key=f"resume-{job['id']}"):
            try:
                again = jobs.resume(job["id"], actor=user())
                st.success(f"Queued job {again['id']} for run {run_id}.")
            except jobs.JobError as exc:
                fail(exc)
    with st.expander("Log tail", expanded=job["state"] == "failed"):
        st.code(job["log_tail"] or jobs.log_tail(job) or "(empty)")


live()
