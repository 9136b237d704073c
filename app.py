"""ViTune Studio: QLoRA fine-tuning of Gemma for a Vietnamese domain, from dataset to Ollama.

Run with ``streamlit run app.py``. Add ``?demo=1`` to the address for the read-only client demo.
"""
import streamlit as st

from core import jobs

st.set_page_config(page_title="ViTune Studio", page_icon=":material/translate:", layout="wide")


@st.cache_resource
def _supervisor():
    # one supervisor thread per app process: it ingests worker output and starts queued jobs
    return jobs.start_background(interval=2.0)


_supervisor()

demo = st.query_params.get("demo") in ("1", "true", "yes")
st.session_state["demo"] = demo
if demo:
    pages = [st.Page("pages/playground.py", title="Playground", icon=":material/chat:", default=True)]
else:
    pages = [
        st.Page("pages/datasets.py", title="Datasets", icon=":material/table_chart:", default=True),
        st.Page("pages/generate.py", title="Generate pairs", icon=":material/auto_awesome:"),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/evaluate.py", title="Evaluate", icon=":material/analytics:"),
        st.Page("pages/playground.py", title="Playground", icon=":material/chat:"),
        st.Page("pages/deploy.py", title="Deploy", icon=":material/rocket_launch:"),
    ]
    with st.sidebar:
        st.session_state.setdefault("user", "team")
        st.text_input("Your name (recorded with what you do)", key="user")
        if jobs.supervisor_error():
            st.warning(f"Job supervisor: {jobs.supervisor_error()}")

st.navigation(pages).run()
