import json

import streamlit as st

from core import charts, labels, models
from core.datasets import importer, review, rows, samples, stats, versions as ds_versions
from pages.common import _, actor, can, columns, fail, flash, label, md, project, say, upload_limit_mb

st.title(_("Datasets"))
st.caption(_("Import instruction pairs (instruction, input, output). Each import makes an immutable dataset version: "
             "NFC-normalised, validated, de-duplicated, split, optionally mixed with 5–10 % general Vietnamese data. "
             "Before a version trains, a reviewer checks a random 10–15 % sample of it (the guide's manual check)."))

PAGE_ROWS = 50   # versions per page of the table

flash()
who, here = actor(), project()
versions = review.list_with_status(who, here)   # one query: every version and its review status

ENCODINGS = {"auto (UTF-8, or UTF-16 with a BOM)": None, "Windows-1258 (cp1258)": "cp1258", "UTF-16": "utf-16",
             "UTF-16 LE (no BOM)": "utf-16-le", "UTF-8": "utf-8"}
ENCODING_LABELS = {"auto (UTF-8, or UTF-16 with a BOM)": _("auto (UTF-8, or UTF-16 with a BOM)"),
                   "UTF-16 LE (no BOM)": _("UTF-16 LE (no BOM)")}   # the others are names, shown as they are
SPLITS = {"train": _("train"), "test": _("test")}
NO_GENERAL = "(none)"
REPORT_METRICS = {"rows_read": _("rows read"), "rows_kept": _("rows kept"), "rows_rejected": _("rows rejected"),
                  "duplicates_exact": _("duplicates exact"), "duplicates_normalized": _("duplicates normalized"),
                  "normalized": _("normalized")}

if not can("dataset.import"):
    st.caption(_("You can look at the dataset versions of project {project}; importing needs an engineer.")
               .format(project=here))
if can("dataset.import"):
    with st.expander(_("Import a file"), expanded=not versions):
        with st.form("import"):
            files = st.file_uploader(_("JSONL, JSON, CSV or Parquet (up to {mb} MB a file)").format(mb=upload_limit_mb()),
                                     type=["jsonl", "json", "csv", "parquet"], accept_multiple_files=True,
                                     help=_("An uploaded file is removed once its import ends. Larger files: put them "
                                            "under the import root and give the path below, or use the CLI."))
            folder = st.text_input(_("…or a file or folder under the import root {root} "
                                     "(e.g. a folder saved by `datasets`' save_to_disk)").format(root=importer.import_root()),
                                   help=_("A path relative to the import root, or inside it; the studio reads nothing "
                                          "else of the server (VITUNE_IMPORT_ROOT sets the root)."))
            name = st.text_input(_("Name of the dataset version"), placeholder="cskh-khach-hang-a")
            c1, c2, c3 = st.columns(3)
            test_fraction = c1.slider(_("Held-out test share"), 0.05, 0.3, 0.1, 0.01)
            general_options = {NO_GENERAL: None} | {f"{v['name']} ({v['id']})": v["id"] for v in versions}
            general = c2.selectbox(_("Mix in general Vietnamese data from"), list(general_options),
                                   format_func=lambda o: _("(none)") if o == NO_GENERAL else o)
            ratio = c3.slider(_("General share of train"), 0.05, 0.10, 0.05, 0.01)
            e1, m1, m2, m3 = st.columns(4)
            encoding = e1.selectbox(_("Encoding"), list(ENCODINGS), format_func=lambda e: ENCODING_LABELS.get(e, e),
                                    help=_("Vietnamese files often arrive as Windows-1258 or UTF-16: name it here."))
            st.caption(_("Column mapping (leave empty: instruction/input/output, or the common aliases "
                         "question/answer, prompt/response, context … are recognised and reported)"))
            map_instruction = m1.text_input(_("Column for instruction"), placeholder="question")
            map_input = m2.text_input(_("Column for input"), placeholder="context")
            map_output = m3.text_input(_("Column for output"), placeholder="answer")
            submitted = st.form_submit_button(_("Import"), type="primary")
        if submitted:
            if not (files or folder.strip()) or not name.strip():
                st.warning(_("Choose at least one file (or a path on the server) and give the version a name."))
            else:
                sources = []
                try:
                    if folder.strip():
                        sources.append(importer.server_path(folder))
                    for f in files or []:
                        sources.append(importer.save_upload(f.name, f))
                    mapping = {col.strip(): fld for col, fld in ((map_instruction, "instruction"), (map_input, "input"),
                                                                 (map_output, "output")) if col.strip()}
                    version, report = importer.import_files(
                        sources, name, test_fraction=test_fraction, general_version=general_options[general],
                        general_ratio=ratio, actor=who, project=here, encoding=ENCODINGS[encoding], mapping=mapping,
                        isolated=True)   # in a process of its own: no file can take the web app down
                    r = report.as_dict()
                    cols = st.columns(6)
                    for col, (key, metric_name) in zip(cols, REPORT_METRICS.items()):
                        col.metric(metric_name, r[key])
                    if r["columns_mapped"]:
                        st.info(_("Columns mapped: {columns}").format(
                            columns=", ".join(f"{k} → {v}" for k, v in r["columns_mapped"].items())))
                    if version and report.rejected():
                        st.warning(say(report.rejected()))
                    if r["errors"]:
                        st.dataframe(columns(r["errors"]), hide_index=True)
                    if r["duplicates"]:
                        with st.expander(_("{count} duplicates removed").format(count=r["duplicates_removed"])):
                            st.dataframe([{_("file"): d["file"], _("line"): d["line"], _("kind"): d["kind"],
                                           _("copy of line"): (d["of"] or {}).get("line")} for d in r["duplicates"]],
                                         hide_index=True)
                    if r.get("bulk"):
                        st.caption(_("Bulk import in DuckDB: {seconds:.1f} s, {spilled:,.0f} MB spilled to disk.")
                                   .format(seconds=r["bulk"]["seconds"]["total"], spilled=r["bulk"]["spilled_mb"]))
                    if version:
                        st.success(_("Created dataset version {version} ({train} train, {test} test).")
                                   .format(version=version["id"], train=version["rows_train"], test=version["rows_test"]))
                    else:
                        st.error(say(report.failure()))
                except (rows.DatasetError, PermissionError) as exc:
                    fail(exc)
                finally:  # an upload is kept only while its import runs
                    importer.remove_uploads(sources)
                versions = review.list_with_status(who, here)   # the new version is listed below at once

if can("dataset.import") and st.button(_("Import the sample data (internal notes · customer care + contracts, "
                                         "each with 5 % general Vietnamese)")):
    try:
        v = samples.import_samples(actor=who, project=here)
        flash(_("Sample dataset version {version} ({name}) is ready: the demo preset passes the gate on it "
                "with the default model. The customer-care and contract samples are imported beside it.")
              .format(version=v["id"], name=v["name"]))
        st.rerun()
    except (rows.DatasetError, PermissionError) as exc:
        fail(exc)

st.subheader(_("Dataset versions"))
if not versions:
    st.info(_("No dataset versions yet: import a file or the sample data."))
    st.stop()

pages = (len(versions) + PAGE_ROWS - 1) // PAGE_ROWS
page = 1
if pages > 1:
    page = st.number_input(_("Page of the table"), 1, pages, 1, key="versions_page",
                           help=_("{count} versions, newest first, {per_page} a page ({pages} pages).")
                           .format(count=len(versions), per_page=PAGE_ROWS, pages=pages))
st.dataframe(
    [{_("id"): v["id"], _("name"): v["name"], _("train"): v["rows_train"], _("test"): v["rows_test"],
      _("parent"): v["parent_id"], _("source"): label(labels.VERSION_SOURCES, v["source"]), _("review"): say(v["review_status"]["reason"]),
      _("hash"): v["content_hash"][:12], _("by"): v["created_by"], _("created"): v["created_at"]}
     for v in versions[(page - 1) * PAGE_ROWS:page * PAGE_ROWS]],
    hide_index=True,
)
by_label = {f"{v['name']} ({v['id']})": v for v in versions}
listed = by_label[st.selectbox(_("Look at"), list(by_label))]
chosen = listed["id"]
chain = ds_versions.lineage_chain(chosen)   # the version's whole record first, then its ancestors
version = chain[0]

tab_stats, tab_rows, tab_review, tab_lineage = st.tabs([_("Stats"), _("Rows"), _("Review"), _("Lineage")])

with tab_stats:
    m1, m2, m3 = st.columns(3)
    m1.metric(_("rows"), version["rows_total"])
    m2.metric(_("train"), version["rows_train"])
    m3.metric(_("test"), version["rows_test"])
    s1, s2, s3 = st.columns(3)
    bases = models.list_base_models()
    base = s1.selectbox(_("Base model's tokenizer"), bases or [""],
                        format_func=lambda b: models.display_name(b) or _("(default)"))
    fmt = s2.selectbox(_("Prompt format"), ["chat", "alpaca-vi"], key="stats_format")
    max_seq = s3.number_input("max_seq_length", 32, 32768, 2048, step=128)   # the setting's name
    try:
        with st.spinner(_("Counting tokens with the base model's tokenizer…")):
            tokens = stats.token_stats(version, base or None, fmt, int(max_seq))
        t1, t2, t3 = st.columns(3)
        t1.metric(_("over max_seq_length"), f"{tokens['share_over']:.1%}",
                  help=_("{over} of {rows} texts").format(over=tokens["over"], rows=tokens["rows"]))
        t2.metric(_("mean tokens"), f"{tokens['mean']:.0f}")
        t3.metric(_("longest"), tokens["max"])
        st.plotly_chart(charts.token_histogram(tokens, tr=_))
    except rows.DatasetError as exc:
        fail(exc)
    st.caption(_("Per-field lengths"))
    st.dataframe(columns(stats.field_stats(version), field=labels.COLUMNS), hide_index=True)
    st.plotly_chart(charts.length_histogram(stats.length_stats(version), tr=_))
    report = json.loads(version["report"]) if isinstance(version["report"], str) else version["report"]
    if report and "rows_read" in report:
        st.caption(_("Import: {read} read, {kept} kept, {rejected} rejected, {duplicates} duplicates removed.")
                   .format(read=report["rows_read"], kept=report["rows_kept"], rejected=report["rows_rejected"],
                           duplicates=report["duplicates_removed"]))

with tab_rows:
    split = st.radio(_("Split"), list(SPLITS), format_func=SPLITS.get, horizontal=True)
    st.caption(_("The first 200 rows of {rows}.").format(rows=version[f"rows_{split}"]))
    st.dataframe(columns(ds_versions.head_rows(version, split, 200)), hide_index=True)

with tab_review:
    status = listed["review_status"]
    if status["reviewed"]:
        st.success(say(status["reason"]))
    elif status["complete"]:
        st.error(say(status["reason"]))
    else:
        st.info(say(status["reason"]))
    if status["child_version"]:
        st.caption(_("The edits and rejections of this review were written to version {version}.")
                   .format(version=status["child_version"]))
    if status["kind"] == "sample":
        p1, p2, p3 = st.columns([3, 1, 1])
        p1.progress(status["done"] / status["sample_size"] if status["sample_size"] else 0.0,
                    text=_("{done}/{total} pairs decided").format(done=status["done"], total=status["sample_size"]))
        p2.metric(_("approval rate"), "–" if status["approval_rate"] is None else f"{status['approval_rate']:.0%}")
        p3.metric(_("threshold"), f"{status['threshold']:.0%}")
        st.plotly_chart(charts.review_progress(status, tr=_), key="review-bar")
    if can("review.start") and not status["reviewed"] and (status["kind"] != "sample" or status["complete"]):
        with st.form("start_review"):
            r1, r2, r3 = st.columns(3)
            fraction = r1.slider(_("Sample share"), 0.10, 0.15, 0.10, 0.01, help=_("The guide: check 10–15 % by hand."))
            seed = r2.number_input(_("Seed"), 0, 2**31 - 1, 42 + status["reviews"])
            threshold = r3.slider(_("Approval threshold"), 0.5, 1.0, 0.9, 0.01)
            if st.form_submit_button(_("Draw the review sample")):
                try:
                    review.start(chosen, fraction=fraction, seed=int(seed), threshold=threshold, actor=who)
                    st.rerun()
                except (review.ReviewError, rows.DatasetError, PermissionError) as exc:
                    fail(exc)
    item = review.next_item(chosen) if can("review.decide") else None
    if item is not None:
        st.markdown(_("**Pair {idx} of {total}** ({split} row {row}) — your decision is recorded as **{name}**")
                    .format(idx=item["idx"], total=status["sample_size"], split=SPLITS.get(item["split"], item["split"]),
                            row=item["row_index"], name=md(who.name)))
        e_instruction = st.text_area(_("Instruction"), item["instruction"], key=f"rv-i-{item['review_id']}-{item['idx']}")
        e_input = st.text_area(_("Input"), item["input"], key=f"rv-n-{item['review_id']}-{item['idx']}")
        e_output = st.text_area(_("Output"), item["output"], height=160, key=f"rv-o-{item['review_id']}-{item['idx']}")
        b1, b2, b3 = st.columns(3)
        action = None
        if b1.button(_("Approve"), type="primary"):
            action = ("approved", None)
        if b2.button(_("Save edit")):
            action = ("edited", {"instruction": e_instruction, "input": e_input, "output": e_output})
        if b3.button(_("Reject")):
            action = ("rejected", None)
        if action:
            try:
                after = review.decide(chosen, item["idx"], action[0], actor=who, edited=action[1])
                if after["complete"]:
                    flash(say(after["reason"]) + (" " + _("Edits: version {version}.").format(version=after["child_version"])
                                             if after["child_version"] else ""))
                st.rerun()
            except (review.ReviewError, PermissionError) as exc:
                fail(exc)
    if status["review"] and status["kind"] == "sample":
        with st.expander(_("Decisions so far")):
            st.dataframe([{_("pair"): i["idx"], _("decision"): label(labels.DECISIONS, i["decision"]), _("reviewer"): i["reviewer"],
                           _("instruction"): i["instruction"][:80]} for i in review.items(status["review"])],
                         hide_index=True)

with tab_lineage:
    for v in chain:
        st.markdown(_("**{version}** — {name}, {rows} rows, by {by} at {created:%Y-%m-%d %H:%M}, hash `{hash}`")
                    .format(version=v["id"], name=md(v["name"]), rows=v["rows_total"], by=md(v["created_by"]),
                            created=v["created_at"], hash=v["content_hash"][:16]))
        st.json(v["lineage"], expanded=False)
