import streamlit as st

from core import deploy, evaluate, export, jobs, modelfile
from pages.common import fail, user

st.title("Deploy")
st.caption("Merge the adapter, export GGUF with llama.cpp's own converter and quantizer, write a Modelfile whose "
           "template matches training, `ollama create` it, and record the release.")

runs = [r for r in jobs.list_runs() if r["state"] == "succeeded"]
if not runs:
    st.info("Train and evaluate a run first.")
    st.stop()

run_id = st.selectbox("Run", [r["id"] for r in runs])
verdict = evaluate.verdict(run_id)
if verdict["releasable"]:
    st.success(f"Releasable: {verdict['reason']}.")
else:
    st.warning(f"Not releasable: {verdict['reason']}. Deploying needs an override reason, which is recorded.")
if not deploy.ollama_binary():
    st.info("No `ollama` binary on this machine: the studio still exports the GGUF and writes the Modelfile, "
            "ready to download and `ollama create` where Ollama runs.")

with st.form("deploy"):
    c1, c2 = st.columns(2)
    name = c1.text_input("Ollama model name", "gemma3-vi-cskh:v1")
    quant = c2.selectbox("Quantization", list(export.QUANTIZATIONS), index=2)
    system = st.text_area("System text", modelfile.DEFAULT_SYSTEM)
    override = "" if verdict["releasable"] else st.text_input("Override reason (required: the gate has not passed)")
    go = st.form_submit_button("Export and deploy", type="primary")

if go:
    try:
        with st.status("Deploying …", expanded=True) as box:
            release = deploy.deploy(run_id, name, system=system, quantization=quant, override_reason=override or None,
                                    actor=user(), on_progress=box.write)
            box.update(label=f"Release {release['id']} recorded", state="complete")
        st.session_state["last_release"] = release
    except (deploy.DeployRefused, modelfile.ModelfileError, export.ExportError, jobs.JobError) as exc:
        fail(exc)

release = st.session_state.get("last_release")
if release:
    st.subheader("Modelfile")
    edited = st.text_area("Edit before downloading", release["modelfile"], height=260)
    st.download_button("Download Modelfile", edited, file_name="Modelfile")
    st.caption(f"GGUF: {release['gguf_path']} (sha256 {release['gguf_sha256'][:16]}…) · Ollama: {release['ollama_status']}")

st.subheader("Releases")
releases = deploy.list_releases()
if releases:
    st.dataframe([{"release": r["id"], "name": f"{r['name']}:{r['tag']}", "run": r["run_id"],
                   "evaluation": r["evaluation_id"], "override": r["override_reason"], "ollama": r["ollama_status"],
                   "by": r["created_by"], "when": r["created_at"]} for r in releases], hide_index=True)
else:
    st.caption("No releases yet.")
