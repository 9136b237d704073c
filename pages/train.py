import streamlit as st

from core import charts, labels, models
from core.datasets import review, rows as pair_rows
from core.jobs import queue, supervisor
from core.training import config, presets, runs as train_runs, vram
from pages.common import (_, actor, can, fail, job_progress, jobs_table, label, live_run, live_runs, live_view, project,
                          refresh_live, say)

RUNS_SHOWN = 50   # the live view offers the newest runs; every run: Evaluate page, `python -m core evaluate list`

st.title(_("Train"))
st.caption(_("LoRA/QLoRA jobs run in worker processes, one per GPU unless a job asks for more (the CPU counts as one), "
             "first come first served. Every browser session sees the same queue, and jobs survive an app restart."))

who, here = actor(), project()
versions = review.list_with_status(who, here)
if not versions:
    st.info(_("Import a dataset version on the Datasets page first."))
else:
    with st.form("train"):
        by_version = {v["id"]: v for v in versions}   # the option values are ids; the display is translated
        c1, c2 = st.columns(2)
        version = c1.selectbox(_("Dataset version"), list(by_version),
                               format_func=lambda i: _("{name} ({id}, {rows} train)").format(
                                   name=by_version[i]["name"], id=i, rows=by_version[i]["rows_train"]))
        preset = c2.selectbox(_("Preset"), list(presets.PRESETS), index=1, format_func=lambda p: label(presets.TITLES, p),
                              help=_("The guide's defaults are r=16, alpha=16, lr 2e-4, 3 epochs, batch 2 × 4, packing. "
                                     "\"Fit to this GPU\" keeps the guide's rows and tokens a step with a bigger batch: about "
                                     "2× the tokens/s on an H200, the same loss per token (docs/performance.md)."))
        bases = models.list_base_models() or [""]
        c3, c4, c5 = st.columns(3)
        base = c3.selectbox(_("Base model"), bases, format_func=lambda b: models.display_name(b) or _("(default)"))
        other = c3.text_input(_("…or another model (local folder or name, e.g. unsloth/gemma-4-E4B-it-unsloth-bnb-4bit)"))
        fmt = c4.selectbox(_("Prompt format"), ["chat", "alpaca-vi"],
                           help=_("chat: the model's own chat template; alpaca-vi: ### Hướng dẫn / ### Đầu vào / ### Phản hồi"))
        max_steps = c5.number_input(_("Max steps (0: use epochs)"), min_value=0, value=0, step=10)
        with st.expander(_("Settings")):
            base_cfg = presets.preset(preset)
            a1, a2, a3, a4 = st.columns(4)
            r = a1.number_input(_("LoRA r"), 1, 256, base_cfg.lora_r)
            alpha = a2.number_input(_("LoRA alpha"), 1, 512, base_cfg.lora_alpha)
            lr = a3.number_input(_("Learning rate"), 1e-6, 1e-2, base_cfg.learning_rate, format="%.6f")
            epochs = a4.number_input(_("Epochs"), 0.1, 50.0, float(base_cfg.num_train_epochs))
            b1, b2, b3, b4 = st.columns(4)
            batch = b1.number_input(_("Batch size"), 1, 128, base_cfg.per_device_train_batch_size)
            accum = b2.number_input(_("Gradient accumulation"), 1, 128, base_cfg.gradient_accumulation_steps)
            seq = b3.number_input(_("Max sequence length"), 32, 32768, base_cfg.max_seq_length)
            packing = b4.checkbox(_("Packing"), base_cfg.packing)
            e1, e2, e3, *__ = st.columns(4)
            save_steps = e1.number_input(_("Checkpoint every N steps"), 1, 100000, base_cfg.save_steps,
                                         help=_("A failed or cancelled job resumes from its last checkpoint."))
            eval_steps = e2.number_input(_("Eval loss every N steps (0: off)"), 0, 100000, base_cfg.eval_steps,
                                         help=_("Loss on the test split; the best checkpoint is kept. "
                                                "Checkpoint steps must be a multiple of it."))
            gpus = e3.number_input(_("GPUs for this job"), 1, config.MAX_GPUS, base_cfg.gpus,
                                   help=_("More than 1: one job across that many GPUs (torchrun, one rank a GPU). The "
                                          "batch size and accumulation are per GPU, so a step takes that many times the "
                                          "rows. The job waits until all of them are free; on a box without a GPU its "
                                          "ranks share the CPU."))
        override = st.text_input(_("Override reason (only to train a version that has not passed its review sample; "
                                   "recorded under your account, {name})").format(name=who.name))
        go = st.form_submit_button(_("Queue training job"), type="primary")
    verdict = by_version[version]["review_status"]
    if verdict["reviewed"]:
        st.caption(_("Review: {reason}").format(reason=say(verdict["reason"])))
    else:
        st.warning(_("Review: {reason}. Review it on the Datasets page, or give an override reason.")
                   .format(reason=say(verdict["reason"])))
    if go:
        try:
            cfg = presets.preset(preset)
            cfg.base_model = other.strip() or base
            cfg.prompt_format = fmt
            cfg.lora_r, cfg.lora_alpha, cfg.learning_rate = int(r), int(alpha), float(lr)
            cfg.num_train_epochs, cfg.per_device_train_batch_size = float(epochs), int(batch)
            cfg.gradient_accumulation_steps, cfg.max_seq_length, cfg.packing = int(accum), int(seq), packing
            cfg.save_steps, cfg.eval_steps = int(save_steps), int(eval_steps)
            cfg.gpus = int(gpus)
            if max_steps:
                cfg.max_steps = int(max_steps)
            job = train_runs.submit_train(by_version[version]["id"], cfg, actor=who, override_review=override)
            refresh_live()
            st.session_state["watch_run"] = job["run_id"]
            st.success(_("Queued job {job} for run {run}.").format(job=job["id"], run=job["run_id"]))
            fit = vram.check(cfg, backend="unsloth" if cfg.backend == "auto" else cfg.backend)
            (st.warning if fit["fits"] is False else st.caption)(fit["message"])
        except (ValueError, queue.JobError, pair_rows.DatasetError, PermissionError) as exc:
            fail(exc)
    st.download_button(_("Download the preset as YAML"), config.to_yaml(presets.preset(preset if versions else "guide (r=16)")),
                       file_name="train.yaml")


@live_view("the Train page (jobs)")
def jobs_live() -> None:
    """The queue, refreshed every 2 s: the newest jobs, each queued or running one with its progress."""
    st.subheader(_("Jobs"))
    rows = jobs_table(limit=15)
    active = [j for j in rows if j["state"] in ("queued", "running")]
    for job in active:
        c1, c2 = st.columns([5, 1])
        with c1:
            job_progress(job)
        if can("job.cancel") and c2.button(_("Cancel"), key=f"cancel-{job['id']}"):
            try:
                supervisor.cancel(job["id"], actor=who)
                refresh_live()
            except (queue.JobError, PermissionError) as exc:
                fail(exc)
    # The runs below are drawn by the page's own run, and a run's dashboard is refreshed only while it is
    # shown as live. When a refresh finds a live training the page does not show as live (a teammate
    # queued it, or resumed the run shown as ended), the whole page runs again, once for that set: a
    # person's own "Queued job …" stays on screen, since their job is already shown.
    shown = st.session_state.get("train-shown", {})
    unshown = sorted(j["id"] for j in active if j["kind"] == "train" and j["run_id"]
                     and (j["run_id"] not in shown.get("offered", ()) or j["run_id"] == shown.get("ended")))
    if unshown and unshown != st.session_state.get("train-unshown"):
        st.session_state["train-unshown"] = unshown
        refresh_live()   # the runs' cached read may be older than the jobs': the page reads them afresh
        st.rerun()


@live_view("the Train page (run)")
def run_live(run: dict) -> None:
    """A queued or running run's dashboard, refreshed every 2 s until its job ends."""
    run_view(run, live=True)


def run_view(run: dict, live: bool = False) -> None:
    view = live_run(run)
    metrics, job = view["metrics"], view["job"]
    if live and job["state"] not in ("queued", "running"):
        st.rerun()   # it has ended: the page draws it once more, as it stays
    run_id = run["id"]
    note = None
    if "gemma-4" in run["base_model"].lower():
        note = _("Gemma 4 E2B/E4B: a loss of 13–15 at the start is normal (Unsloth's Gemma 4 notes).")
    st.plotly_chart(charts.training_dashboard(metrics, f"{run_id} ({label(labels.JOB_STATES, job['state'])})", note, tr=_), key=f"loss-{run_id}")
    st.caption(_("Run {run}: {state}").format(run=run_id, state=label(labels.JOB_STATES, job["state"])))
    if job.get("ray_job"):   # submitted to the Ray cluster (core.jobs.ray_cluster): where it runs
        if job.get("ray_node"):
            st.caption(_("On the Ray cluster: job {ray_job}, node {node}.").format(ray_job=job["ray_job"],
                                                                                   node=job["ray_node"]))
        elif job["state"] == "running":
            st.caption(_("On the Ray cluster: job {ray_job}, waiting for a node with the resources it asks.")
                       .format(ray_job=job["ray_job"]))
    known = queue.status(job)
    if queue.phase(job, known):   # the first step compiles: a phase with its time, not 0 tokens/s
        st.info(queue.describe(job, known, tr=_))
    elif known.get("compile_s"):
        st.caption(_("First step (compile and warm-up): {seconds:.0f} s; tokens/s and the ETA count "
                     "from the step after it.").format(seconds=known["compile_s"]))
    fit = known.get("fit")
    if fit:
        if fit.get("rows"):
            st.caption(_("Fit to this GPU: {reason}; {rows} rows of {tokens} tokens.")
                       .format(reason=fit["reason"], rows=fit["rows"], tokens=fit["row_tokens"]))
        else:
            st.caption(_("Fit to this GPU: {reason}.").format(reason=fit["reason"]))
    if len(metrics):
        last = metrics.iloc[-1]
        m1, m2, m3 = st.columns(3)
        m1.metric(_("step"), int(last["step"]))
        m2.metric(_("loss"), f"{last['loss']:.4f}")
        m3.metric(_("tokens/s"), f"{last['tokens_per_s']:.0f}" if last["tokens_per_s"] == last["tokens_per_s"] and last["tokens_per_s"] else "–")
    if job["state"] in ("failed", "cancelled"):
        found = train_runs.checkpoints(run["run_dir"])
        if found and st.button(_("Resume from the checkpoint at step {step}").format(step=found[-1][0]), key=f"resume-{job['id']}"):
            try:
                again = train_runs.resume(job["id"], actor=who)
                refresh_live()
                st.session_state["watch_run"] = run_id
                st.success(_("Queued job {job} for run {run}.").format(job=again["id"], run=run_id))
            except (queue.JobError, PermissionError) as exc:
                fail(exc)
    # the log is drawn only while its expander is open (a long log is costly to lay out in the browser)
    log = st.expander(_("Log tail"), expanded=job["state"] == "failed", key=f"log-{run_id}", on_change="rerun")
    if log.open:
        with log:
            st.code(job["log_tail"] or queue.log_tail(job) or _("(empty)"), language="text")


jobs_place = st.container()   # the jobs view, drawn above the runs once the page knows what it shows of them
runs = live_runs(RUNS_SHOWN)
ids = [r["id"] for r in runs]
chosen, live = None, False
if runs:
    watch = st.session_state.get("watch_run")
    run_id = st.selectbox(_("Run"), ids, index=ids.index(watch) if watch in ids else 0,
                          help=_("The {count} newest runs of this project.").format(count=RUNS_SHOWN))
    chosen = next(r for r in runs if r["id"] == run_id)
    # the same cached read as the view's own, so a run that has just ended is drawn once, not polled
    live = live_run(chosen)["job"]["state"] in ("queued", "running")
st.session_state["train-shown"] = {"offered": ids, "ended": chosen["id"] if chosen and not live else None}
with jobs_place:
    jobs_live()
if chosen:
    (run_live if live else run_view)(chosen)


# ── sweeps ───────────────────────────────────────────────────────────────────

from core.training import sweeps  # noqa: E402

SWEEP_GRID = ("lora_r", "lora_alpha", "learning_rate", "num_train_epochs", "per_device_train_batch_size")


def sweep_spec(values: dict) -> dict:
    """The form's boxes as a spec (core parses and checks them); a YAML spec, when given, instead."""
    if values["yaml"].strip():
        spec = sweeps.load(values["yaml"], "YAML")
        if not spec.get("dataset"):
            spec["dataset"] = values["version"]
        return spec
    grid = {field: values[field] for field in SWEEP_GRID}
    if values["models"]:
        grid["base_model"] = values["models"]
    if values["presets"]:
        grid["preset"] = values["presets"]
    settings = {"max_steps": int(values["max_steps"])} if values["max_steps"] else {}
    return sweeps.from_options(preset=values["preset"], grid=grid, settings=settings, dataset=values["version"],
                               name=values["name"].strip() or None,
                               evaluate={"limit": int(values["limit"]) or None,
                                         "max_new_tokens": int(values["max_new_tokens"])})


def sweep_form() -> None:
    with st.expander(_("New sweep: many runs over a grid of settings, each evaluated on its held-out split"),
                     expanded=False):
        by_version = {v["id"]: v for v in versions}
        with st.form("sweep"):
            c1, c2 = st.columns(2)
            values = {"version": c1.selectbox(_("Version to sweep on"), list(by_version),
                                              format_func=lambda i: f"{by_version[i]['name']} ({i})", key="sweep-version"),
                      "preset": c2.selectbox(_("Every run starts from"), list(presets.PRESETS), index=1,
                                             format_func=lambda p: label(presets.TITLES, p), key="sweep-preset")}
            titles = {"lora_r": _("LoRA r values"), "lora_alpha": _("LoRA alpha values"),
                      "learning_rate": _("Learning rates"), "num_train_epochs": _("Epoch counts"),
                      "per_device_train_batch_size": _("Batch sizes")}
            for col, field in zip(st.columns(len(SWEEP_GRID)), SWEEP_GRID):
                values[field] = col.text_input(titles[field], key=f"sweep-{field}",
                                               help=_("Values separated by commas, e.g. 8, 16, 32; empty: the preset's."))
            d1, d2 = st.columns(2)
            values["models"] = d1.multiselect(_("Models to compare (empty: the preset's)"),
                                              models.list_base_models(), format_func=models.display_name,
                                              key="sweep-models")
            values["presets"] = d2.multiselect(_("Presets to compare"), list(presets.PRESETS),
                                               format_func=lambda p: label(presets.TITLES, p), key="sweep-presets")
            e1, e2, e3, e4 = st.columns(4)
            values["max_steps"] = e1.number_input(_("Steps per sweep run (0: by epochs)"), min_value=0, value=0, step=10,
                                                  key="sweep-max-steps")
            values["limit"] = e2.number_input(_("Held-out pairs evaluated (0: all, as the gate needs)"), min_value=0,
                                              value=0, key="sweep-limit")
            values["max_new_tokens"] = e3.number_input(_("Answer length in the evaluation (tokens)"), min_value=1,
                                                       max_value=8192, value=128, key="sweep-tokens")
            values["name"] = e4.text_input(_("Sweep name"), key="sweep-name")
            values["yaml"] = st.text_area(_("…or a YAML sweep spec (grid, runs, settings, evaluate: docs/training.md)"),
                                          key="sweep-yaml", height=120)
            b1, b2 = st.columns(2)
            estimate = b1.form_submit_button(_("Count the runs and estimate the time"))
            go = b2.form_submit_button(_("Queue the sweep"), type="primary")
        if estimate or go:
            try:
                planned = sweeps.plan(sweep_spec(values), actor=who)
                st.info(say(planned["estimate"]["message"]))
                if go:
                    started = sweeps.submit(planned["spec"], actor=who)
                    refresh_live()
                    _sweep_view.clear()
                    st.session_state["watch_sweep"] = started["id"]
                    st.success(_("Queued sweep {sweep}: {n} training jobs, each evaluated when it has trained.")
                               .format(sweep=started["id"], n=len(started["runs"])))
                else:
                    st.table([{_("run"): i, _("settings"): sweeps.describe(r["params"])}
                              for i, r in enumerate(planned["runs"], start=1)], hide_index=True)
            except sweeps.SweepError as exc:
                st.error(say(exc.args[0]))
            except (ValueError, queue.JobError, PermissionError) as exc:
                fail(exc)


@st.cache_data(ttl=2.0, show_spinner=False, max_entries=100)
def _sweep_view(home: str, sweep_id: str, scope: str, _who) -> dict:
    return sweeps.view(sweep_id, _who)


@live_view("the Train page (sweep)")
def sweep_live(sweep_id: str) -> None:
    """A running sweep, refreshed every 2 s until it has finished."""
    sweep_view(sweep_id, live=True)


def sweep_view(sweep_id: str, live: bool = False) -> None:
    from core import paths
    from core.access import projects as access_projects

    v = _sweep_view(str(paths.home()), sweep_id, repr(access_projects.where(who, here)), who)
    if live and v["state"] != "running":
        st.rerun()
    s, c = v["sweep"], v["counts"]
    st.subheader(_("Sweep {name}").format(name=s["name"]))
    st.caption(_("{state}: {trained} of {runs} runs trained, {evaluated} evaluated, {failed} failed. Estimate when it "
                 "started: {estimate}").format(state=say(sweeps.STATES[v["state"]]), trained=c["trained"],
                                                runs=c["runs"], evaluated=c["evaluated"], failed=c["failed"],
                                                estimate=say(sweeps.message(s["estimate"])) if s.get("estimate") else "–"))
    best = next((r for r in v["runs"] if r["best"]), None)
    if best:
        st.success(_("Best run: {run} ({settings}): BLEU {bleu:.3f}, ROUGE-L {rouge:.3f} on {n} held-out pairs.")
                   .format(run=best["run_id"], settings=best["label"], bleu=best["bleu"], rouge=best["rouge_l"], n=best["n"]))
    # a plain table, not a data grid: a sweep has at most 64 runs, and a running one is redrawn every 2 s
    st.table([{_("best"): "★" if r["best"] else "", _("rank"): r["rank"], _("run"): r["run_id"],
                   _("settings"): r["label"], _("LoRA r"): r["config"]["lora_r"], _("LoRA alpha"): r["config"]["lora_alpha"],
                   _("Learning rate"): r["config"]["learning_rate"], _("Epochs"): r["config"]["num_train_epochs"],
                   _("Batch size"): r["config"]["per_device_train_batch_size"],
                   _("Base model"): models.display_name(r["base_model"]),
                   _("training"): label(labels.JOB_STATES, r["train_state"]),
                   _("evaluation"): label(labels.JOB_STATES, r["eval_state"]) if r["eval_state"] else "–",
                   "BLEU": r["bleu"], "ROUGE-L": r["rouge_l"], "n": r["n"],
                   _("gate"): (_("releasable") if r["releasable"] else _("not releasable")) if r["evaluation"] else "–",
                   _("why"): say(r["reason"]) if r["reason"] else (r["error"] or "")} for r in v["runs"]],
             hide_index=True, border="horizontal")
    st.plotly_chart(charts.sweep_losses(v["metrics"], {r["run_id"]: r["label"] for r in v["runs"]}, v["best"], tr=_),
                    key=f"sweep-loss-{sweep_id}")
    if v["state"] == "running" and can("job.cancel"):
        if st.button(_("Cancel the sweep"), key=f"sweep-cancel-{sweep_id}"):
            try:
                done = sweeps.cancel(sweep_id, actor=who)
                _sweep_view.clear()
                refresh_live()
                st.success(_("Sweep {sweep} cancelled: {n} jobs stopped.").format(sweep=sweep_id, n=len(done["cancelled"])))
            except (queue.JobError, PermissionError, ValueError) as exc:
                fail(exc)


st.header(_("Sweeps"))
if versions and can("train.submit"):
    sweep_form()
all_sweeps = sweeps.list_sweeps(who, here, limit=30)
if all_sweeps:
    ids = [s["id"] for s in all_sweeps]
    by_id = {s["id"]: s for s in all_sweeps}
    watch = st.session_state.get("watch_sweep")
    picked = st.selectbox(_("Sweep"), ids, index=ids.index(watch) if watch in ids else 0, key="sweep-pick",
                          format_func=lambda i: f"{by_id[i]['name']} · {say(sweeps.STATES[by_id[i]['state']])} · "
                                                f"{by_id[i]['n_runs']}")
    (sweep_live if by_id[picked]["state"] == "running" else sweep_view)(picked)
else:
    st.caption(_("No sweeps yet."))
