import pandas as pd
import streamlit as st

from core import labels, prompt_format
from core.deploy import exporter, exports, modelfile, ollama, preflight, quant_cost, quant_costs, releases
from core.evaluation import gate
from core.jobs import queue
from core.training import runs as train_runs
from pages.common import _, actor, can, fail, flash, label, lang, project, say

ERRORS = (releases.DeployRefused, ollama.OllamaError, modelfile.ModelfileError, exporter.ExportError, queue.JobError,
          preflight.PreflightError, prompt_format.FormatError, quant_cost.QuantCostError, PermissionError)

def record_table(rec: dict) -> list[dict]:
    """The gate's record as rows: each check, its verdict, the evaluation and artifact it read, its reason."""
    here_lang = lang()
    names = {"merged_model": _("merged model (HF, adapter)"), "gguf": _("the shipped GGUF"), "judge": _("LLM judge")}
    rows = []
    for c in rec.get("checks") or []:
        n = c.get("numbers") or {}
        rows.append({_("check"): names.get(c["name"], c["name"]),
                     _("verdict"): _("PASS") if c["passed"] else (_("not judged") if c["passed"] is None else _("FAIL")),
                     _("gates"): _("yes") if c["gates"] else _("no"), _("artifact"): c.get("artifact"),
                     _("evaluation"): c.get("evaluation"),
                     "BLEU": None if n.get("bleu") is None else round(n["bleu"], 4),
                     "ROUGE-L": None if n.get("rouge_l") is None else round(n["rouge_l"], 4), "n": n.get("n"),
                     _("reason"): c["reason"].get(here_lang) or c["reason"].get("en")})
    return rows


def record_summary(rec: dict | None) -> str:
    if not rec:
        return ""
    return ", ".join(f"{c['name']} {_('PASS') if c['passed'] else _('FAIL')}" for c in rec.get("checks") or []) + (
        " · " + _("override") if rec.get("override") else "")


st.title(_("Deploy"))
st.caption(_("Merge the adapter, export GGUF with llama.cpp's own converter and quantizer, write a Modelfile whose "
             "template matches training, check the GGUF on held-out prompts (preflight), `ollama create` it, and "
             "record the release."))
flash()

who, here = actor(), project()
RUNS_SHOWN = 200   # the newest finished runs (any run: `python -m core deploy --run RUN`)
runs = train_runs.list_runs(who, here, state="succeeded", limit=RUNS_SHOWN)
if not ollama.ollama_binary():
    st.info(_("No `ollama` binary on this machine: the studio still exports the GGUF, writes the Modelfile and runs "
              "the preflight, ready to download and `ollama create` where Ollama runs."))

if not runs:
    st.info(_("Train and evaluate a run first."))
else:
    by_id = {r["id"]: r for r in runs}
    run_id = st.selectbox(_("Run"), list(by_id))
    verdict = gate.verdicts([by_id[run_id]])[run_id]
    if verdict["releasable"]:
        st.success(_("Releasable: {reason}.").format(reason=say(verdict["reason"])))
    else:
        st.warning(_("Not releasable: {reason}. Deploying needs an override reason, recorded under your "
                     "account ({name}).").format(reason=say(verdict["reason"]), name=who.name))

    # the cost of quantization: each GGUF's perplexity on the held-out answers and its KL divergence from f16
    costs = quant_costs.for_run(run_id)
    bound = quant_costs.kl_bound()
    with st.expander(_("Cost of quantization (perplexity, KL divergence from f16)"), expanded=bool(costs)):
        if not costs:
            st.caption(_("Not measured yet: every export measures it (`python -m core quant-cost --run {run}` measures "
                         "the run's newest export).").format(run=run_id))
        else:
            choice, why = quant_costs.recommend(costs, bound)
            st.dataframe([{_("quantization"): q + (" ✓" if q == choice else ""),
                           _("file (MB)"): round((c["file_bytes"] or 0) / 1e6),
                           _("perplexity"): round(c["ppl"], 4),
                           _("PPL / f16"): None if c["ppl_ratio"] is None else round(c["ppl_ratio"], 4),
                           _("mean KL from f16 (nats)"): None if c["kl_mean"] is None else round(c["kl_mean"], 5),
                           _("same top token as f16"): None if c["same_top"] is None else f"{c['same_top']:.1%}",
                           _("Δp RMS"): None if c["dp_rms"] is None else f"{c['dp_rms']:.2%}",
                           _("answer tokens"): c["tokens"], _("export job"): c["export_job_id"]}
                          for q in quant_costs.BY_SIZE[::-1] if (c := costs.get(q))], hide_index=True)
            st.info(_("Choose: {why}.").format(why=say(why)))
            st.caption(_("The rule: the smallest file whose mean KL divergence from f16 is at most the KL bound (or "
                         "{advised} nats when no bound is set). Measured as llama.cpp's `llama-perplexity "
                         "--kl-divergence` does, on llama.cpp's own logits: teacher-forced on the held-out answers in "
                         "the training prompt format, only the answer's tokens scored.").format(
                             advised=quant_costs.ADVISED_KL))
        st.caption(_("KL bound: a release whose mean KL divergence from f16 is above {bound} nats is refused (an "
                     "override reason lets it through, recorded).").format(bound=bound) if bound is not None
                   else _("No KL bound is set: the cost is shown, it does not block a release."))
        if can("gate.thresholds"):
            with st.form("kl-bound"):
                b1, b2 = st.columns(2)
                new_bound = b1.number_input(_("KL bound (nats)"), 0.0, quant_costs.MAX_BOUND,
                                            float(bound if bound is not None else quant_costs.ADVISED_KL), 0.01,
                                            format="%.3f")
                set_it = b2.form_submit_button(_("Set the KL bound"))
                lift_it = b2.form_submit_button(_("Lift the KL bound"))
            try:
                if set_it or lift_it:
                    quant_costs.set_kl_bound(new_bound if set_it else None, actor=who)
                    flash(_("KL bound set to {bound} nats.").format(bound=new_bound) if set_it
                          else _("KL bound lifted."))
                    st.rerun()
            except (ValueError, RuntimeError, PermissionError) as exc:
                fail(exc)

    default_quant = exports.default_quant(by_id[run_id]["base_model"])
    quant = st.selectbox(_("Quantization"), list(exporter.QUANTIZATIONS),
                         index=list(exporter.QUANTIZATIONS).index(default_quant),
                         format_func=lambda q: q if q not in costs else _("{q} · PPL {ppl:.3f} · KL {kl}").format(
                             q=q, ppl=costs[q]["ppl"], kl="-" if costs[q]["kl_mean"] is None
                             else f"{costs[q]['kl_mean']:.4f}"),
                         help=_("q4_k_m (the guide's default) for models of a billion parameters and more; q8_0 "
                                "below that, where q4_k_m loses a short fine-tune and its stop (the preflight "
                                "blocks such a GGUF)."), key="deploy_quant")
    record = gate.record(run_id, quant, actor=who, verdict_of_run=verdict)
    st.markdown(_("**The gate's record** for {quantization}: what a release of this GGUF is judged on")
                .format(quantization=quant))
    st.dataframe(record_table(record), hide_index=True)
    if record["releasable"]:
        st.success(_("A release of {quantization} passes the gate.").format(quantization=quant))
    else:
        st.warning(_("A release of {quantization} is refused as it stands: {reasons}").format(
            quantization=quant, reasons="; ".join(gate.failing(record, lang()))))
    if not record["releasable"] and verdict["releasable"]:
        st.caption(_("A release needs the GGUF's own evaluation on the held-out split to pass too; where it has none, "
                     "step 1 evaluates it (llama.cpp) before judging."))
    with st.form("prepare"):
        name = st.text_input(_("Ollama model name"), "gemma3-vi-cskh:v1")
        system = st.text_area(_("System text"), modelfile.DEFAULT_SYSTEM)
        if not verdict["releasable"]:
            override = st.text_input(_("Override reason (required: the gate has not passed)"))
        elif not record["releasable"]:
            override = st.text_input(_("Override reason (only if the gate refuses the GGUF; recorded)"))
        else:
            override = ""
        go = st.form_submit_button(_("1 · Export and write the Modelfile"), type="primary")

    if go:
        try:
            with st.status(_("Exporting …"), expanded=True) as box:
                prepared = releases.prepare(run_id, name, system=system, quantization=quant,
                                          override_reason=override or None, actor=who, on_progress=lambda m: box.write(say(m)))
                box.update(label=_("GGUF ready: {gguf}").format(gguf=prepared["gguf"]), state="complete")
            st.session_state["prepared"] = prepared
        except ERRORS as exc:
            fail(exc)

    prepared = st.session_state.get("prepared")
    if prepared and prepared["run_id"] == run_id:
        st.subheader("Modelfile")
        st.caption(_("GGUF {gguf} · sha256 {sha256}… · the TEMPLATE renders the prompt format this run was trained "
                     "with. Edit SYSTEM or PARAMETER lines if you need to; FROM and TEMPLATE are checked again by the "
                     "preflight.").format(gguf=prepared["gguf"], sha256=prepared["gguf_sha256"][:16]))
        if prepared.get("quant_cost"):   # the cost of this quantization against the KL bound
            st.caption(_("Quantization cost: {reason}").format(reason=say(prepared["quant_cost"]["reason"])))
        edited = st.text_area(_("Modelfile (editable)"), prepared["modelfile"], height=300, key="modelfile_text")
        st.download_button(_("Download Modelfile"), edited, file_name="Modelfile")
        c1, c2 = st.columns(2)
        golden = c1.number_input(_("Golden held-out prompts in the preflight"), 2, 64, preflight.GOLDEN_SIZE)
        oq = None
        if prepared["quantization"] == "f16":
            choice = c2.selectbox(_("Let Ollama quantize (`ollama create --quantize`)"), ["no", "q4_K_M", "q8_0"],
                                  format_func=lambda o: _("no") if o == "no" else o)
            oq = None if choice == "no" else choice
        if st.button(_("2 · Preflight, create in Ollama and record the release"), type="primary"):
            try:
                with st.status(_("Preflight …"), expanded=True) as box:
                    rel = releases.release(prepared, modelfile_text=edited, ollama_quantize=oq, actor=who,
                                         golden=int(golden), on_progress=lambda m: box.write(say(m)))
                    box.update(label=_("Release {release} recorded").format(release=rel["id"]), state="complete")
                st.session_state["last_release"] = rel["id"]
            except ERRORS as exc:
                fail(exc)

last = st.session_state.get("last_release")
if last:
    rel = releases.get_release(last, who)
    pf = rel["preflight"] or {}
    st.subheader(_("Release {release}: {name}:{tag}").format(release=rel["id"], name=rel["name"], tag=rel["tag"]))
    if rel.get("gate_record"):
        st.markdown(_("**Judged on** (the gate's record of this release)"))
        st.dataframe(record_table(rel["gate_record"]), hide_index=True)
        if rel["gate_record"].get("override"):
            st.warning(_("Released over the gate by {who}: {reason}").format(
                who=rel["gate_record"]["override"]["by"], reason=rel["gate_record"]["override"]["reason"]))
    c1, c2, c3 = st.columns(3)
    c1.metric(_("Preflight"), _("passed") if pf.get("passed") else _("blocked"))
    c2.metric(_("Exact match vs merged model"), f"{pf.get('exact_match_rate', 0):.0%}")
    c3.metric(_("ROUGE-L vs merged model"), f"{pf.get('rouge_l', 0):.3f}")
    held = pf.get("held_out")
    if held:   # both models against the held-out answers, in the gate's terms
        d1, d2 = st.columns(2)
        d1.metric(_("GGUF vs held-out answers: BLEU / ROUGE-L"),
                  f"{held['gguf']['bleu']:.3f} / {held['gguf']['rouge_l']:.3f}")
        d2.metric(_("Merged model vs held-out answers: BLEU / ROUGE-L"),
                  f"{held['merged']['bleu']:.3f} / {held['merged']['rouge_l']:.3f}")
        lines = releases.held_out_lines(pf, rel["quantization"])
        st.caption(say(lines[0]))
        if held["gguf_below_gate_where_merged_passes"]:
            st.warning(say(lines[1]))
    st.caption(_("Ollama: {status}").format(status=rel["ollama_status"]))
    if pf.get("examples"):
        st.dataframe(pd.DataFrame([{_("instruction"): e["instruction"], _("reference_answer"): e["reference_answer"],
                                    _("gguf_answer"): e["gguf_answer"], _("exact_match"): e["exact_match"],
                                    _("rouge_l"): e["rouge_l"], _("held-out answer"): e.get("held_out_answer", ""),
                                    _("ROUGE-L vs held-out"): e.get("gguf_rouge_l_vs_held_out")}
                                   for e in pf["examples"]]),
                     hide_index=True)

st.subheader(_("Releases"))
listed = releases.list_releases(who, here)
if not listed:
    st.caption(_("No releases yet."))
else:
    st.dataframe([{_("release"): r["id"], _("name"): f"{r['name']}:{r['tag']}", _("state"): label(labels.RELEASE_STATES, r["state"]),
                   _("run"): r["run_id"], _("quant"): r["quantization"], _("evaluation"): r["evaluation_id"],
                   _("judged on"): record_summary(r.get("gate_record")),
                   _("preflight"): (r["preflight"] or {}).get("reason"), _("override"): r["override_reason"],
                   _("rollback of"): r["rollback_of"], _("ollama"): r["ollama_status"], _("by"): r["created_by"],
                   _("when"): r["created_at"]} for r in listed], hide_index=True)
    with st.form("manage"):
        chosen = st.selectbox(_("Release"), [r["id"] for r in listed])
        c1, c2 = st.columns(2)
        delete = c1.form_submit_button(_("Delete (ollama rm; the record is kept)"), disabled=not can("release.delete"),
                                       help=None if can("release.delete") else _("Deleting a release needs an admin."))
        back = c2.form_submit_button(_("Roll back to this release"))
    if delete or back:
        try:
            if delete:
                done = releases.delete_release(chosen, actor=who)
                flash(_("Release {release} deleted: {status}").format(release=chosen, status=done["ollama_status"]))
            else:
                with st.status(_("Rolling back …"), expanded=True) as box:
                    done = releases.rollback(chosen, actor=who, on_progress=lambda m: box.write(say(m)))
                flash(_("Rolled back to {chosen} as release {release}: {status}").format(chosen=chosen, release=done["id"],
                                                                                       status=done["ollama_status"]))
            st.rerun()
        except ERRORS as exc:
            fail(exc)
