import streamlit as st

from core import datasets, generate, jobs
from pages.common import fail, job_progress, user

st.title("Generate pairs")
st.caption("From raw documents (txt, md, docx, pdf): chunk them, ask an LLM for instruction/input/output pairs "
           "in Vietnamese, validate every answer against the JSON schema, retry malformed ones, drop duplicates. "
           "The result lands as a dataset version; review a sample before training (the guide's 10–15 % check).")

saved = generate.saved_backend()

with st.form("generate"):
    files = st.file_uploader("Documents", type=["txt", "md", "docx", "pdf"], accept_multiple_files=True)
    name = st.text_input("Name of the dataset version", placeholder="sinh-tu-tai-lieu-cskh")
    backend_kind = st.radio("Model", ["Local (default model through llama.cpp's server)", "OpenAI-compatible endpoint"],
                            horizontal=True)
    c1, c2, c3 = st.columns(3)
    base_url = c1.text_input("Base URL", saved.base_url)
    model = c2.text_input("Model", saved.model)
    key_env = c3.text_input("API key: environment variable (or Streamlit secret) NAME", saved.api_key_env,
                            help="The key itself is read at run time and never stored.")
    c4, c5, c6 = st.columns(3)
    price_in = c4.number_input("Price per 1M input tokens", 0.0, 1000.0, float(saved.price_in_per_mtok))
    price_out = c5.number_input("Price per 1M output tokens", 0.0, 1000.0, float(saved.price_out_per_mtok))
    structured = c6.checkbox("Send the JSON schema (structured output)", saved.structured,
                             help="llama.cpp turns it into a grammar; other servers may ignore or refuse it.")
    c7, c8, c9, c10, c11 = st.columns(5)
    n_pairs = c7.number_input("Pairs per chunk", 1, 20, 3)
    max_chunks = c8.number_input("Max chunks (0: all)", 0, 100000, 0)
    chunk_chars = c9.number_input("Chunk size (characters)", 200, 20000, 1500, 100)
    overlap = c10.number_input("Overlap (characters)", 0, 5000, 200, 50)
    retries = c11.number_input("Retries per malformed answer", 0, 5, 2)
    max_tokens = st.number_input("Max tokens per answer", 16, 32000, int(saved.max_tokens))
    prompt = st.text_area("Prompt template ({chunk} is replaced by each chunk, {n_pairs} by the count); "
                          "saved with the output and in the version's lineage", generate.DEFAULT_PROMPT, height=280)
    go = st.form_submit_button("Queue generation", type="primary")

if go:
    if not files or not name.strip():
        st.warning("Choose at least one document and give the version a name.")
    else:
        try:
            docs = [datasets.save_upload(f.name, f.getvalue()) for f in files]
            local = backend_kind.startswith("Local")
            backend = generate.Backend(base_url=base_url, model=model, api_key_env=key_env.strip(),
                                       max_tokens=int(max_tokens), structured=structured,
                                       price_in_per_mtok=price_in, price_out_per_mtok=price_out)
            if not local:
                generate.save_backend(backend, actor=user())
                try:
                    secret = st.secrets.get(backend.api_key_env) if backend.api_key_env else None
                except Exception:  # no secrets file
                    secret = None
                generate.provide_key(backend.api_key_env, secret)
            job = generate.submit(docs, name, backend=backend, local=local, prompt=prompt, n_pairs=int(n_pairs),
                                  max_chunks=int(max_chunks) or None, chunk_chars=int(chunk_chars),
                                  overlap=int(overlap), max_retries=int(retries), owner=user())
            st.success(f"Queued generation job {job['id']}.")
        except (generate.GenerateError, jobs.JobError) as exc:
            fail(exc)


def _numbers(g: dict) -> None:
    cols = st.columns(6)
    cols[0].metric("Pairs kept", g.get("pairs", 0))
    cols[1].metric("Duplicates dropped", g.get("duplicates", 0))
    cols[2].metric("Malformed answers", g.get("malformed_answers", 0))
    cols[3].metric("Tokens in / out", f"{g.get('tokens_in', 0)} / {g.get('tokens_out', 0)}")
    cols[4].metric("Time", f"{g.get('elapsed_s') or 0:.0f} s" + (f" (ETA {g['eta_s']:.0f} s)" if g.get("eta_s") else ""))
    cols[5].metric("Cost", f"{g.get('cost') or 0:.4f}" if g.get("usage_reported") else "n/a")


@st.fragment(run_every="2s")
def active() -> None:
    for job in generate.list_generations(10):
        if job["state"] not in ("queued", "running"):
            continue
        job_progress(job)
        _numbers(generate.live(job))
        if st.button("Stop and keep what was made", key=f"stop-{job['id']}"):
            generate.request_stop(job)
            st.info(f"Job {job['id']} stops after its current request.")


active()

st.subheader("Generations")
gens = generate.list_generations(20)
if not gens:
    st.info("No generations yet.")
else:
    st.dataframe(
        [{"job": j["id"], "name": j["config"]["name"], "state": j["state"], "pairs": (j["result"] or {}).get("pairs"),
          "dataset version": (j["result"] or {}).get("dataset_version"), "stopped": (j["result"] or {}).get("stopped"),
          "owner": j["owner"], "error": j["error"]} for j in gens],
        hide_index=True,
    )
    finished = [j for j in gens if j["state"] not in ("queued", "running")]
    if finished:
        chosen = next(j for j in finished if j["id"] == st.selectbox("Details of job", [j["id"] for j in finished]))
        result = chosen["result"] or {}
        if chosen["state"] == "failed":
            st.error(f"Job {chosen['id']} failed: {chosen['error']}")
        elif result.get("dataset_version"):
            st.success(f"Dataset version {result['dataset_version']} ({result['pairs']} pairs from "
                       f"{result['chunks_done']} of {result['chunks_total']} chunks).")
        elif result:
            st.warning(result.get("note") or "No dataset version was made.")
        if result:
            _numbers(result)
        rejected = generate.rejects(chosen)
        if rejected:
            st.caption(f"{len(rejected)} chunk(s) gave no valid pair:")
            st.dataframe([{"doc": r["doc"], "chunk": r["chunk"], "attempts": len(r["attempts"]),
                           "last reason": r["attempts"][-1]["reason"] if r["attempts"] else "stopped",
                           "chunk text": r["chunk_text"]} for r in rejected], hide_index=True)
        pairs = generate.generated_pairs(chosen)
        if pairs:
            st.dataframe(pairs, hide_index=True)
        with st.expander("Prompt template used"):
            st.code(generate.prompt_of(chosen), language="text")
