import streamlit as st

from core import charts, datasets
from pages.common import fail, flash, user

st.title("Datasets")
st.caption("Import instruction pairs (instruction, input, output). Each import makes an immutable dataset version: "
           "NFC-normalised, validated, de-duplicated, split, optionally mixed with 5–10 % general Vietnamese data.")

flash()
versions = datasets.list_versions()

with st.expander("Import a file", expanded=not versions):
    with st.form("import"):
        files = st.file_uploader("JSONL, JSON, CSV or Parquet", type=["jsonl", "json", "csv", "parquet"],
                                 accept_multiple_files=True)
        name = st.text_input("Name of the dataset version", placeholder="cskh-khach-hang-a")
        c1, c2, c3 = st.columns(3)
        test_fraction = c1.slider("Held-out test share", 0.05, 0.3, 0.1, 0.01)
        general_options = {"(none)": None} | {f"{v['name']} ({v['id']})": v["id"] for v in versions}
        general = c2.selectbox("Mix in general Vietnamese data from", list(general_options))
        ratio = c3.slider("General share of train", 0.05, 0.10, 0.05, 0.01)
        submitted = st.form_submit_button("Import", type="primary")
    if submitted:
        if not files or not name.strip():
            st.warning("Choose at least one file and give the version a name.")
        else:
            try:
                saved = [datasets.save_upload(f.name, f.getvalue()) for f in files]
                version, report = datasets.import_files(
                    saved, name, test_fraction=test_fraction, general_version=general_options[general],
                    general_ratio=ratio, created_by=user())
                r = report.as_dict()
                cols = st.columns(4)
                for col, key in zip(cols, ("rows_read", "rows_kept", "rows_rejected", "duplicates_removed")):
                    col.metric(key.replace("_", " "), r[key])
                if r["errors"]:
                    st.warning(f"{len(r['errors'])} rows were rejected; the valid rows were kept.")
                    st.dataframe(r["errors"], hide_index=True)
                if version:
                    st.success(f"Created dataset version {version['id']} ({version['rows_train']} train, "
                               f"{version['rows_test']} test).")
                else:
                    st.error("No valid rows were found; nothing was imported.")
            except datasets.DatasetError as exc:
                fail(exc)

if st.button("Import the sample data (customer care + contracts, 5 % general Vietnamese)"):
    try:
        v = datasets.import_samples(created_by=user())
        flash(f"Sample dataset version {v['id']} is ready.")
        st.rerun()
    except datasets.DatasetError as exc:
        fail(exc)

st.subheader("Dataset versions")
if not versions:
    st.info("No dataset versions yet: import a file or the sample data.")
else:
    st.dataframe(
        [{"id": v["id"], "name": v["name"], "train": v["rows_train"], "test": v["rows_test"],
          "hash": v["content_hash"][:12], "by": v["created_by"], "created": v["created_at"]} for v in versions],
        hide_index=True,
    )
    labels = {f"{v['name']} ({v['id']})": v["id"] for v in versions}
    chosen = labels[st.selectbox("Look at", list(labels))]
    st.plotly_chart(charts.length_histogram(datasets.length_stats(chosen)))
    split = st.radio("Split", ["train", "test"], horizontal=True)
    st.dataframe(datasets.load_rows(chosen, split)[:200], hide_index=True)
