import pandas as pd
import streamlit as st

from core import deploy, evaluate, export, jobs, modelfile, preflight, prompt_format
from pages.common import fail, flash, user

ERRORS = (deploy.DeployRefused, modelfile.ModelfileError, export.ExportError, jobs.JobError,
          preflight.PreflightError, prompt_format.FormatError)

st.title("Deploy")
st.caption("Merge the adapter, export GGUF with llama.cpp's own converter and quantizer, write a Modelfile whose "
           "template matches training, check the GGUF on held-out prompts (preflight), `ollama create` it, and "
           "record the release.")
flash()

runs = [r for r in jobs.list_runs() if r["state"] == "succeeded"]
if not deploy.ollama_binary():
    st.info("No `ollama` binary on this machine: the studio still exports the GGUF, writes the Modelfile and runs "
            "the preflight, ready to download and `ollama create` where Ollama runs.")

if not runs:
    st.info("Train and evaluate a run first.")
else:
    run_id = st.selectbox("Run", [r["id"] for r in runs])
    verdict = evaluate.verdict(run_id)
    if verdict["releasable"]:
        st.success(f"Releasable: {verdict['reason']}.")
    else:
        st.warning(f"Not releasable: {verdict['reason']}. Deploying needs an override reason, which is recorded.")

    with st.form("prepare"):
        c1, c2 = st.columns(2)
        name = c1.text_input("Ollama model name", "gemma3-vi-cskh:v1")
        default_quant = export.default_quant_for_run(run_id)
        quant = c2.selectbox("Quantization", list(export.QUANTIZATIONS),
                             index=list(export.QUANTIZATIONS).index(default_quant),
                             help="q4_k_m (the guide's default) for models of a billion parameters and more; q8_0 "
                                  "below that, where q4_k_m loses a short fine-tune and its stop (the preflight "
                                  "blocks such a GGUF).")
        system = st.text_area("System text", modelfile.DEFAULT_SYSTEM)
        override = "" if verdict["releasable"] else st.text_input("Override reason (required: the gate has not passed)")
        go = st.form_submit_button("1 · Export and write the Modelfile", type="primary")

    if go:
        try:
            with st.status("Exporting …", expanded=True) as box:
                prepared = deploy.prepare(run_id, name, system=system, quantization=quant,
                                          override_reason=override or None, actor=user(), on_progress=box.write)
                box.update(label=f"GGUF ready: {prepared['gguf']}", state="complete")
            st.session_state["prepared"] = prepared
        except ERRORS as exc:
            fail(exc)

    prepared = st.session_state.get("prepared")
    if prepared and prepared["run_id"] == run_id:
        st.subheader("Modelfile")
        st.caption(f"GGUF {prepared['gguf']} · sha256 {prepared['gguf_sha256'][:16]}… · the TEMPLATE renders the "
                   f"prompt format this run was trained with. Edit SYSTEM or PARAMETER lines if you need to; FROM "
                   "and TEMPLATE are checked again by the preflight.")
        edited = st.text_area("Modelfile (editable)", prepared["modelfile"], height=300, key="modelfile_text")
        st.download_button("Download Modelfile", edited, file_name="Modelfile")
        c1, c2 = st.columns(2)
        golden = c1.number_input("Golden held-out prompts in the preflight", 2, 64, preflight.GOLDEN_SIZE)
        oq = None
        if prepared["quantization"] == "f16":
            choice = c2.selectbox("Let Ollama quantize (`ollama create --quantize`)", ["no", "q4_K_M", "q8_0"])
            oq = None if choice == "no" else choice
        if st.button("2 · Preflight, create in Ollama and record the release", type="primary"):
            try:
                with st.status("Preflight …", expanded=True) as box:
                    rel = deploy.release(prepared, modelfile_text=edited, ollama_quantize=oq, actor=user(),
                                         golden=int(golden), on_progress=box.write)
                    box.update(label=f"Release {rel['id']} recorded", state="complete")
                st.session_state["last_release"] = rel["id"]
            except ERRORS as exc:
                fail(exc)

last = st.session_state.get("last_release")
if last:
    rel = deploy.get_release(last)
    pf = rel["preflight"] or {}
    st.subheader(f"Release {rel['id']}: {rel['name']}:{rel['tag']}")
    c1, c2, c3 = st.columns(3)
    c1.metric("Preflight", "passed" if pf.get("passed") else "blocked")
    c2.metric("Exact match vs merged model", f"{pf.get('exact_match_rate', 0):.0%}")
    c3.metric("ROUGE-L vs merged model", f"{pf.get('rouge_l', 0):.3f}")
    st.caption(f"Ollama: {rel['ollama_status']}")
    if pf.get("examples"):
        st.dataframe(pd.DataFrame([{k: e[k] for k in ("instruction", "reference_answer", "gguf_answer",
                                                        "exact_match", "rouge_l")} for e in pf["examples"]]),
                     hide_index=True)

st.subheader("Releases")
releases = deploy.list_releases()
if not releases:
    st.caption("No releases yet.")
else:
    st.dataframe([{"release": r["id"], "name": f"{r['name']}:{r['tag']}", "state": r["state"], "run": r["run_id"],
                   "quant": r["quantization"], "evaluation": r["evaluation_id"],
                   "preflight": (r["preflight"] or {}).get("reason"), "override": r["override_reason"],
                   "rollback of": r["rollback_of"], "ollama": r["ollama_status"], "by": r["created_by"],
                   "when": r["created_at"]} for r in releases], hide_index=True)
    with st.form("manage"):
        chosen = st.selectbox("Release", [r["id"] for r in releases])
        c1, c2 = st.columns(2)
        delete = c1.form_submit_button("Delete (ollama rm; the record is kept)")
        back = c2.form_submit_button("Roll back to this release")
    if delete or back:
        try:
            if delete:
                done = deploy.delete_release(chosen, actor=user())
                flash(f"Release {chosen} deleted: {done['ollama_status']}")
            else:
                with st.status("Rolling back …", expanded=True) as box:
                    done = deploy.rollback(chosen, actor=user(), on_progress=box.write)
                flash(f"Rolled back to {chosen} as release {done['id']}: {done['ollama_status']}")
            st.rerun()
        except ERRORS as exc:
            fail(exc)
