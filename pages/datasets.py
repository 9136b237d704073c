import json

import streamlit as st

from core import charts, datasets, models, review
from pages.common import fail, flash, user

st.title("Datasets")
st.caption("Import instruction pairs (instruction, input, output). Each import makes an immutable dataset version: "
           "NFC-normalised, validated, de-duplicated, split, optionally mixed with 5–10 % general Vietnamese data. "
           "Before a version trains, a reviewer checks a random 10–15 % sample of it (the guide's manual check).")

flash()
versions = datasets.list_versions()

ENCODINGS = {"auto (UTF-8, or UTF-16 with a BOM)": None, "Windows-1258 (cp1258)": "cp1258", "UTF-16": "utf-16",
             "UTF-16 LE (no BOM)": "utf-16-le", "UTF-8": "utf-8"}

with st.expander("Import a file", expanded=not versions):
    with st.form("import"):
        files = st.file_uploader("JSONL, JSON, CSV or Parquet", type=["jsonl", "json", "csv", "parquet"],
                                 accept_multiple_files=True)
        folder = st.text_input("…or a file or folder on the server (e.g. a folder saved by `datasets`' save_to_disk)")
        name = st.text_input("Name of the dataset version", placeholder="cskh-khach-hang-a")
        c1, c2, c3 = st.columns(3)
        test_fraction = c1.slider("Held-out test share", 0.05, 0.3, 0.1, 0.01)
        general_options = {"(none)": None} | {f"{v['name']} ({v['id']})": v["id"] for v in versions}
        general = c2.selectbox("Mix in general Vietnamese data from", list(general_options))
        ratio = c3.slider("General share of train", 0.05, 0.10, 0.05, 0.01)
        e1, m1, m2, m3 = st.columns(4)
        encoding = e1.selectbox("Encoding", list(ENCODINGS),
                                help="Vietnamese files often arrive as Windows-1258 or UTF-16: name it here.")
        st.caption("Column mapping (leave empty: instruction/input/output, or the common aliases "
                   "question/answer, prompt/response, context … are recognised and reported)")
        map_instruction = m1.text_input("Column for instruction", placeholder="question")
        map_input = m2.text_input("Column for input", placeholder="context")
        map_output = m3.text_input("Column for output", placeholder="answer")
        submitted = st.form_submit_button("Import", type="primary")
    if submitted:
        if not (files or folder.strip()) or not name.strip():
            st.warning("Choose at least one file (or a path on the server) and give the version a name.")
        else:
            try:
                sources = [datasets.save_upload(f.name, f.getvalue()) for f in files or []]
                if folder.strip():
                    sources.append(folder.strip())
                mapping = {col.strip(): fld for col, fld in ((map_instruction, "instruction"), (map_input, "input"),
                                                             (map_output, "output")) if col.strip()}
                version, report = datasets.import_files(
                    sources, name, test_fraction=test_fraction, general_version=general_options[general],
                    general_ratio=ratio, created_by=user(), encoding=ENCODINGS[encoding], mapping=mapping)
                r = report.as_dict()
                cols = st.columns(6)
                for col, key in zip(cols, ("rows_read", "rows_kept", "rows_rejected", "duplicates_exact",
                                           "duplicates_normalized", "normalized")):
                    col.metric(key.replace("_", " "), r[key])
                if r["columns_mapped"]:
                    st.info("Columns mapped: " + ", ".join(f"{k} → {v}" for k, v in r["columns_mapped"].items()))
                if r["errors"]:
                    st.warning(f"{r['rows_rejected']} rows were rejected; the valid rows were kept.")
                    st.dataframe(r["errors"], hide_index=True)
                if r["duplicates"]:
                    with st.expander(f"{r['duplicates_removed']} duplicates removed"):
                        st.dataframe([{"file": d["file"], "line": d["line"], "kind": d["kind"],
                                       "copy of line": (d["of"] or {}).get("line")} for d in r["duplicates"]],
                                     hide_index=True)
                if r.get("bulk"):
                    st.caption(f"Bulk import in DuckDB: {r['bulk']['seconds']['total']:.1f} s, "
                               f"{r['bulk']['spilled_mb']:,.0f} MB spilled to disk.")
                if version:
                    st.success(f"Created dataset version {version['id']} ({version['rows_train']} train, "
                               f"{version['rows_test']} test).")
                else:
                    st.error(report.failure())
            except datasets.DatasetError as exc:
                fail(exc)

if st.button("Import the sample data (internal notes · customer care + contracts, each with 5 % general Vietnamese)"):
    try:
        v = datasets.import_samples(created_by=user())
        flash(f"Sample dataset version {v['id']} ({v['name']}) is ready: the demo preset passes the gate on it "
              "with the default model. The customer-care and contract samples are imported beside it.")
        st.rerun()
    except datasets.DatasetError as exc:
        fail(exc)

st.subheader("Dataset versions")
if not versions:
    st.info("No dataset versions yet: import a file or the sample data.")
    st.stop()

st.dataframe(
    [{"id": v["id"], "name": v["name"], "train": v["rows_train"], "test": v["rows_test"],
      "parent": v["parent_id"], "source": v["source"], "review": review.status(v["id"])["reason"],
      "hash": v["content_hash"][:12], "by": v["created_by"], "created": v["created_at"]} for v in versions],
    hide_index=True,
)
labels = {f"{v['name']} ({v['id']})": v["id"] for v in versions}
chosen = labels[st.selectbox("Look at", list(labels))]
version = datasets.get_version(chosen)

tab_stats, tab_rows, tab_review, tab_lineage = st.tabs(["Stats", "Rows", "Review", "Lineage"])

with tab_stats:
    m1, m2, m3 = st.columns(3)
    m1.metric("rows", version["rows_total"])
    m2.metric("train", version["rows_train"])
    m3.metric("test", version["rows_test"])
    s1, s2, s3 = st.columns(3)
    bases = models.list_base_models()
    base = s1.selectbox("Base model's tokenizer", bases or [""], format_func=lambda b: models.display_name(b) or "(default)")
    fmt = s2.selectbox("Prompt format", ["chat", "alpaca-vi"], key="stats_format")
    max_seq = s3.number_input("max_seq_length", 32, 32768, 2048, step=128)
    try:
        with st.spinner("Counting tokens with the base model's tokenizer…"):
            tokens = datasets.token_stats(chosen, base or None, fmt, int(max_seq))
        t1, t2, t3 = st.columns(3)
        t1.metric("over max_seq_length", f"{tokens['share_over']:.1%}", help=f"{tokens['over']} of {tokens['rows']} texts")
        t2.metric("mean tokens", f"{tokens['mean']:.0f}")
        t3.metric("longest", tokens["max"])
        st.plotly_chart(charts.token_histogram(tokens))
    except datasets.DatasetError as exc:
        fail(exc)
    st.caption("Per-field lengths")
    st.dataframe(datasets.field_stats(chosen), hide_index=True)
    st.plotly_chart(charts.length_histogram(datasets.length_stats(chosen)))
    report = json.loads(version["report"]) if isinstance(version["report"], str) else version["report"]
    if report and "rows_read" in report:
        st.caption(f"Import: {report['rows_read']} read, {report['rows_kept']} kept, {report['rows_rejected']} "
                   f"rejected, {report['duplicates_removed']} duplicates removed.")

with tab_rows:
    split = st.radio("Split", ["train", "test"], horizontal=True)
    st.dataframe(datasets.load_rows(chosen, split)[:200], hide_index=True)

with tab_review:
    status = review.status(chosen)
    if status["reviewed"]:
        st.success(status["reason"])
    elif status["complete"]:
        st.error(status["reason"])
    else:
        st.info(status["reason"])
    if status["child_version"]:
        st.caption(f"The edits and rejections of this review were written to version {status['child_version']}.")
    if status["kind"] == "sample":
        p1, p2, p3 = st.columns([3, 1, 1])
        p1.progress(status["done"] / status["sample_size"] if status["sample_size"] else 0.0,
                    text=f"{status['done']}/{status['sample_size']} pairs decided")
        p2.metric("approval rate", "–" if status["approval_rate"] is None else f"{status['approval_rate']:.0%}")
        p3.metric("threshold", f"{status['threshold']:.0%}")
        st.plotly_chart(charts.review_progress(status), key="review-bar")
    if not status["reviewed"] and (status["kind"] != "sample" or status["complete"]):
        with st.form("start_review"):
            r1, r2, r3 = st.columns(3)
            fraction = r1.slider("Sample share", 0.10, 0.15, 0.10, 0.01, help="The guide: check 10–15 % by hand.")
            seed = r2.number_input("Seed", 0, 2**31 - 1, 42 if status["kind"] is None else 42 + len(review.reviews_of(chosen)))
            threshold = r3.slider("Approval threshold", 0.5, 1.0, 0.9, 0.01)
            if st.form_submit_button("Draw the review sample"):
                try:
                    review.start(chosen, fraction=fraction, seed=int(seed), threshold=threshold, created_by=user())
                    st.rerun()
                except (review.ReviewError, datasets.DatasetError) as exc:
                    fail(exc)
    item = review.next_item(chosen)
    if item is not None:
        st.markdown(f"**Pair {item['idx']} of {status['sample_size']}** ({item['split']} row {item['row_index']})")
        reviewer = st.text_input("Reviewer", value=user(), key="reviewer")
        e_instruction = st.text_area("Instruction", item["instruction"], key=f"rv-i-{item['review_id']}-{item['idx']}")
        e_input = st.text_area("Input", item["input"], key=f"rv-n-{item['review_id']}-{item['idx']}")
        e_output = st.text_area("Output", item["output"], height=160, key=f"rv-o-{item['review_id']}-{item['idx']}")
        b1, b2, b3 = st.columns(3)
        action = None
        if b1.button("Approve", type="primary"):
            action = ("approved", None)
        if b2.button("Save edit"):
            action = ("edited", {"instruction": e_instruction, "input": e_input, "output": e_output})
        if b3.button("Reject"):
            action = ("rejected", None)
        if action:
            try:
                after = review.decide(chosen, item["idx"], action[0], reviewer, action[1])
                if after["complete"]:
                    flash(after["reason"] + (f" Edits: version {after['child_version']}." if after["child_version"] else ""))
                st.rerun()
            except review.ReviewError as exc:
                fail(exc)
    if status["review"] and status["kind"] == "sample":
        with st.expander("Decisions so far"):
            st.dataframe([{"pair": i["idx"], "decision": i["decision"] or "pending", "reviewer": i["reviewer"],
                           "instruction": i["instruction"][:80]} for i in review.items(status["review"])],
                         hide_index=True)

with tab_lineage:
    for v in datasets.lineage_chain(chosen):
        st.markdown(f"**{v['id']}** — {v['name']}, {v['rows_total']} rows, by {v['created_by']} at "
                    f"{v['created_at']:%Y-%m-%d %H:%M}, hash `{v['content_hash'][:16]}`")
        st.json(v["lineage"], expanded=False)
