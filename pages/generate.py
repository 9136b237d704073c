import streamlit as st

from core import labels
from core.datasets import importer
from core.datasets.generation import answers, documents, endpoints, generations
from core.jobs import queue
from pages.common import (_, actor, can, fail, job_progress, label, live_jobs, live_view, project, refresh_live,
                          upload_limit_mb)

st.title(_("Generate pairs"))
st.caption(_("From raw documents (txt, md, docx, pdf): chunk them, ask an LLM for instruction/input/output pairs "
             "in Vietnamese, validate every answer against the JSON schema, retry malformed ones, drop duplicates. "
             "The result lands as a dataset version; review a sample before training (the guide's 10–15 % check)."))

who, here = actor(), project()

with st.form("generate"):
    files = st.file_uploader(_("Documents (up to {mb} MB a file)").format(mb=upload_limit_mb()),
                             type=["txt", "md", "docx", "pdf"], accept_multiple_files=True,
                             help=_("Read in the generation worker (a .docx may unpack to 200 MB, a PDF have 2,000 "
                                    "pages; a job sends up to 5,000 chunks) and removed once read."))
    name = st.text_input(_("Name of the dataset version"), placeholder="sinh-tu-tai-lieu-cskh")
    try:
        names = [e.name for e in endpoints.configured()]
    except documents.GenerateError as exc:
        fail(exc)
        names = []
    LOCAL = "Local: the default model through llama.cpp's server"   # the option values stay English
    ENDPOINT = "Endpoint: "                                          # (the code below reads them)
    shown = {LOCAL: _("Local: the default model through llama.cpp's server")} | {
        ENDPOINT + n: _("Endpoint: {name}").format(name=n) for n in names}
    choice = st.selectbox(_("Model"), list(shown), format_func=shown.get,
                          help=_("Endpoints are set by an admin (Admin → Endpoints, or the server's secrets file); "
                                 "their keys stay on the server."))
    c7, c8, c9, c10, c11 = st.columns(5)
    n_pairs = c7.number_input(_("Pairs per chunk"), 1, 20, 3)
    max_chunks = c8.number_input(_("Max chunks (0: all)"), 0, 100000, 0)
    chunk_chars = c9.number_input(_("Chunk size (characters)"), 200, 20000, 1500, 100)
    overlap = c10.number_input(_("Overlap (characters)"), 0, 5000, 200, 50)
    retries = c11.number_input(_("Retries per malformed answer"), 0, 5, 2)
    max_tokens = st.number_input(_("Max tokens per answer (0: the endpoint's own)"), 0, 32000, 0)
    prompt = st.text_area(_("Prompt template ({chunk} is replaced by each chunk, {n_pairs} by the count); "
                            "saved with the output and in the version's lineage"), answers.DEFAULT_PROMPT, height=280)
    go = st.form_submit_button(_("Queue generation"), type="primary")

if go:
    if not files or not name.strip():
        st.warning(_("Choose at least one document and give the version a name."))
    else:
        docs = []
        try:
            docs = [importer.save_upload(f.name, f) for f in files]
            local = choice == LOCAL
            job = generations.submit(docs, name, endpoint=None if local else choice.split(": ", 1)[1], local=local,
                                     max_tokens=int(max_tokens) or None, prompt=prompt, n_pairs=int(n_pairs),
                                     max_chunks=int(max_chunks) or None, chunk_chars=int(chunk_chars),
                                     overlap=int(overlap), max_retries=int(retries), actor=who, project=here)
            refresh_live()
            st.success(_("Queued generation job {job}.").format(job=job["id"]))
            docs = []   # the worker reads them, then removes them
        except (documents.GenerateError, queue.JobError, PermissionError) as exc:
            fail(exc)
        finally:
            importer.remove_uploads(docs)   # nothing was queued: nothing keeps them


def _numbers(g: dict) -> None:
    cols = st.columns(6)
    cols[0].metric(_("Pairs kept"), g.get("pairs", 0))
    cols[1].metric(_("Duplicates dropped"), g.get("duplicates", 0))
    cols[2].metric(_("Malformed answers"), g.get("malformed_answers", 0))
    cols[3].metric(_("Tokens in / out"), f"{g.get('tokens_in', 0)} / {g.get('tokens_out', 0)}")
    cols[4].metric(_("Time"), f"{g.get('elapsed_s') or 0:.0f} s"
                   + (" " + _("(ETA {eta:.0f} s)").format(eta=g["eta_s"]) if g.get("eta_s") else ""))
    cols[5].metric(_("Cost"), f"{g.get('cost') or 0:.4f}" if g.get("usage_reported") else _("n/a"))


@live_view("the Generate pairs page (running jobs)")
def active() -> None:
    for job in live_jobs(10, "generate"):
        if job["state"] not in ("queued", "running"):
            continue
        job_progress(job)
        _numbers(generations.live(job))
        if st.button(_("Stop and keep what was made"), key=f"stop-{job['id']}"):
            generations.request_stop(job, actor=who)
            st.info(_("Job {job} stops after its current request.").format(job=job["id"]))


active()

st.subheader(_("Generations"))
gens = generations.list_generations(20, actor=who, project=here)
if not gens:
    st.info(_("No generations yet."))
else:
    st.dataframe(
        [{_("job"): j["id"], _("name"): j["config"]["name"], _("state"): label(labels.JOB_STATES, j["state"]),
          _("pairs"): (j["result"] or {}).get("pairs"), _("dataset version"): (j["result"] or {}).get("dataset_version"),
          _("stopped"): (j["result"] or {}).get("stopped"), _("owner"): j["owner"], _("error"): j["error"]}
         for j in gens],
        hide_index=True,
    )
    finished = [j for j in gens if j["state"] not in ("queued", "running")]
    if finished:
        chosen = next(j for j in finished if j["id"] == st.selectbox(_("Details of job"), [j["id"] for j in finished]))
        result = chosen["result"] or {}
        if chosen["state"] == "failed":
            st.error(_("Job {job} failed: {error}").format(job=chosen["id"], error=chosen["error"]))
        elif result.get("dataset_version"):
            st.success(_("Dataset version {version} ({pairs} pairs from {done} of {total} chunks).")
                       .format(version=result["dataset_version"], pairs=result["pairs"], done=result["chunks_done"],
                               total=result["chunks_total"]))
        elif result:
            st.warning(result.get("note") or _("No dataset version was made."))
        if result:
            _numbers(result)
        rejected = generations.rejects(chosen)
        if rejected:
            st.caption(_("{count} chunk(s) gave no valid pair:").format(count=len(rejected)))
            st.dataframe([{_("doc"): r["doc"], _("chunk"): r["chunk"], _("attempts"): len(r["attempts"]),
                           _("last reason"): r["attempts"][-1]["reason"] if r["attempts"] else "stopped",
                           _("chunk text"): r["chunk_text"]} for r in rejected], hide_index=True)
        pairs = generations.generated_pairs(chosen)
        if pairs:
            st.dataframe(pairs, hide_index=True)
        with st.expander(_("Prompt template used")):
            st.code(generations.prompt_of(chosen), language="text")
