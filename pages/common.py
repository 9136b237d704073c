"""Small helpers shared by the pages (widgets only; the work is in core/)."""
from __future__ import annotations

import streamlit as st

from core import jobs


def user() -> str:
    return st.session_state.get("user") or "team"


def fail(exc: Exception) -> None:
    """A clear message instead of a traceback."""
    st.error(f"{exc}")


def job_progress(job: dict) -> None:
    p = jobs.progress(job) or {}
    total = p.get("total") or 0
    done = p.get("done") or 0
    label = f"job {job['id']} ({job['kind']}): {job['state']}"
    if total:
        label += f" — {done}/{total} {p.get('label', '')}"
        if p.get("per_s"):
            label += f" ({p['per_s']:.2f}/s)"
        eta = jobs.eta_seconds(job)
        if eta is not None:
            label += f", about {int(eta // 60)} min {int(eta % 60):02d} s left"
    st.progress(min(done / total, 1.0) if total else 0.0, text=label)


def jobs_table(kind: str | None = None, limit: int = 20):
    rows = jobs.list_jobs(limit, kind)
    if not rows:
        st.caption("No jobs yet.")
        return rows
    st.dataframe(
        [{"job": j["id"], "kind": j["kind"], "state": j["state"], "run": j["run_id"], "owner": j["owner"],
          "slot": j["slot"], "queued": j["created_at"], "finished": j["finished_at"], "error": j["error"]}
         for j in rows],
        hide_index=True,
    )
    return rows


def flash(message: str | None = None) -> None:
    """Show a message once, across a rerun: call with text before st.rerun(), without to show it."""
    if message is not None:
        st.session_state["_flash"] = message
    elif "_flash" in st.session_state:
        st.success(st.session_state.pop("_flash"))
