import streamlit as st

from core import inference, jobs, models
from pages.common import fail

demo = st.session_state.get("demo", False)
st.title("Playground" + (" — demo" if demo else ""))
if demo:
    st.caption("Read-only demo: ask the tuned model a question; nothing here changes the studio.")
else:
    st.caption("Ask a tuned run and its base model the same question, side by side.")

runs = [r for r in jobs.list_runs() if r["state"] == "succeeded"]
if not runs:
    st.info("No finished runs yet." if demo else "Train a run on the Train page first.")
    st.stop()

labels = {f"{r['id']} · {models.display_name(r['base_model'])} · {r['prompt_format']}": r for r in runs}
run = labels[st.selectbox("Model", list(labels))]
compare = st.toggle("Compare with the base model", value=not demo)
question = st.text_area("Câu hỏi / instruction", "Khách hàng phàn nàn về hóa đơn sai, phải xử lý thế nào?")
context = st.text_area("Ngữ cảnh / input (optional)", "")
with st.expander("Decoding"):
    c1, c2 = st.columns(2)
    temperature = c1.slider("Temperature (0: greedy)", 0.0, 1.5, 0.0, 0.05)
    max_new = c2.slider("Max new tokens", 16, 512, 128, 16)

if st.button("Ask", type="primary"):
    decoding = inference.Decoding(max_new_tokens=max_new, temperature=temperature)
    cols = st.columns(2 if compare else 1)
    try:
        with st.spinner("The tuned model is answering …"):
            tuned = inference.cached(run["base_model"], run["adapter_dir"], run["prompt_format"])
            cols[0].markdown("**Tuned**")
            cols[0].write(inference.ask(tuned, question, context, decoding=decoding) or "(empty answer)")
        if compare:
            with st.spinner("The base model is answering …"):
                base = inference.cached(run["base_model"], None, run["prompt_format"])
                cols[1].markdown("**Base**")
                cols[1].write(inference.ask(base, question, context, decoding=decoding) or "(empty answer)")
    except Exception as exc:  # a model that will not load is shown as a message
        fail(exc)
