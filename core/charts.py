"""Plotly figures the pages show (built here so that pages stay thin).

Each figure's words go through ``T``: a page passes its translator (``tr=_``, the session's language);
the HTML report and the CLI pass none and get the English as written. ``core.i18n`` extracts the
``T("…")`` strings into the catalogues with the pages' own.
"""
from __future__ import annotations

from typing import Callable

import plotly.graph_objects as go
from plotly.subplots import make_subplots

Tr = Callable[[str], str] | None


def _same(text: str) -> str:
    return text


def loss_curve(metrics, title: str | None = None, note: str | None = None, tr: Tr = None) -> go.Figure:
    T = tr or _same
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    if metrics is not None and len(metrics):
        fig.add_trace(go.Scatter(x=metrics["step"], y=metrics["loss"], name=T("loss"), mode="lines+markers"))
        fig.add_trace(go.Scatter(x=metrics["step"], y=metrics["learning_rate"], name=T("learning rate"),
                                 mode="lines", line={"dash": "dot"}), secondary_y=True)
    fig.update_layout(title=title or T("Training loss"), height=340, margin={"t": 50, "b": 40, "l": 40, "r": 40},
                      legend={"orientation": "h", "y": -0.2})
    fig.update_xaxes(title_text=T("step"))
    fig.update_yaxes(title_text=T("loss"), secondary_y=False)
    fig.update_yaxes(title_text=T("learning rate"), secondary_y=True, showgrid=False)
    if note:
        fig.add_annotation(text=note, xref="paper", yref="paper", x=0, y=1.08, showarrow=False, font={"size": 11})
    return fig


def training_dashboard(metrics, title: str | None = None, note: str | None = None, tr: Tr = None) -> go.Figure:
    """Loss (and eval loss), learning rate, grad norm, tokens/s and GPU memory, step by step."""
    T = tr or _same
    fig = make_subplots(rows=2, cols=2, subplot_titles=(T("loss"), T("learning rate"), T("grad norm"),
                                                        T("tokens/s and GPU memory")),
                        specs=[[{}, {}], [{}, {"secondary_y": True}]], vertical_spacing=0.18)
    if metrics is not None and len(metrics):
        step = metrics["step"]
        fig.add_trace(go.Scatter(x=step, y=metrics["loss"], name=T("loss"), mode="lines+markers"), 1, 1)
        if "eval_loss" in metrics and metrics["eval_loss"].notna().any():
            ev = metrics.dropna(subset=["eval_loss"])
            fig.add_trace(go.Scatter(x=ev["step"], y=ev["eval_loss"], name=T("eval loss (test split)"),
                                     mode="lines+markers", marker={"symbol": "diamond", "size": 9}), 1, 1)
        fig.add_trace(go.Scatter(x=step, y=metrics["learning_rate"], name=T("learning rate"), mode="lines"), 1, 2)
        fig.add_trace(go.Scatter(x=step, y=metrics["grad_norm"], name=T("grad norm"), mode="lines"), 2, 1)
        fig.add_trace(go.Scatter(x=step, y=metrics["tokens_per_s"], name=T("tokens/s"), mode="lines"), 2, 2)
        if "gpu_mem_gib" in metrics and metrics["gpu_mem_gib"].notna().any():
            fig.add_trace(go.Scatter(x=step, y=metrics["gpu_mem_gib"], name=T("peak GPU memory (GiB)"),
                                     mode="lines", line={"dash": "dot"}), 2, 2, secondary_y=True)
    fig.update_layout(title=title or T("Training"), height=560, margin={"t": 80, "b": 40, "l": 40, "r": 40},
                      legend={"orientation": "h", "y": -0.12})
    fig.update_xaxes(title_text=T("step"), row=2)
    if note:
        fig.add_annotation(text=note, xref="paper", yref="paper", x=0, y=1.12, showarrow=False, font={"size": 12})
    return fig


def length_histogram(lengths: dict, tr: Tr = None) -> go.Figure:
    """Words per field, from ``core.datasets.stats.length_stats`` (one list per field)."""
    T = tr or _same
    fig = go.Figure()
    for field, name in (("instruction", T("instruction")), ("input", T("input")), ("output", T("output"))):
        fig.add_trace(go.Histogram(x=lengths[f"{field}_words"], name=name, opacity=0.6, nbinsx=40))
    fig.update_layout(barmode="overlay", title=T("Words per field"), height=320, xaxis_title=T("words"),
                      yaxis_title=T("pairs"), margin={"t": 50, "b": 40})
    return fig


def gate_bars(bleu: float, rouge: float, thresholds: dict, tr: Tr = None) -> go.Figure:
    T = tr or _same
    fig = go.Figure()
    names = ["BLEU", "ROUGE-L"]
    values = [bleu, rouge]
    limits = [thresholds["bleu"], thresholds["rouge_l"]]
    colors = ["#2e7d32" if v > t else "#c62828" for v, t in zip(values, limits)]
    fig.add_trace(go.Bar(x=names, y=values, marker_color=colors, text=[f"{v:.3f}" for v in values],
                         textposition="outside", name=T("score")))
    fig.add_trace(go.Scatter(x=names, y=limits, mode="markers", marker={"symbol": "line-ew-open", "size": 40,
                                                                        "line": {"width": 3}}, name=T("gate")))
    fig.update_layout(yaxis_range=[0, 1], height=300, title=T("Scores against the gate"), margin={"t": 50, "b": 30})
    return fig


def example_scores(examples: list[dict], tr: Tr = None) -> go.Figure:
    T = tr or _same
    fig = go.Figure(go.Histogram(x=[e["rouge_l"] for e in examples], nbinsx=20))
    fig.update_layout(title=T("ROUGE-L per example"), xaxis_title="ROUGE-L", yaxis_title=T("examples"),
                      height=280, margin={"t": 50, "b": 40})
    return fig


def rouge_scatter(comparison: dict, tr: Tr = None) -> go.Figure:
    """Per-example ROUGE-L of evaluation A (x) against B (y) on their shared examples; above the
    diagonal B did better."""
    T = tr or _same
    pairs = comparison["pairs"]
    colors = ["#2e7d32" if p["delta_rouge_l"] > 1e-9 else "#c62828" if p["delta_rouge_l"] < -1e-9 else "#757575"
              for p in pairs]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "#9e9e9e"},
                             name=T("same"), hoverinfo="skip"))
    fig.add_trace(go.Scatter(
        x=[p["rouge_l_a"] for p in pairs], y=[p["rouge_l_b"] for p in pairs], mode="markers",
        marker={"color": colors, "size": 9, "opacity": 0.8}, name=T("example"),
        customdata=[[p["idx_a"], p["idx_b"], (p["instruction"] or "")[:80]] for p in pairs],
        hovertemplate="A #%{customdata[0]} → B #%{customdata[1]}<br>%{customdata[2]}<br>"
                      "A %{x:.3f} · B %{y:.3f}<extra></extra>"))
    a, b = comparison["a"]["id"], comparison["b"]["id"]
    fig.update_layout(title=T("ROUGE-L per example: {a} (x) vs {b} (y)").format(a=a, b=b), height=420, showlegend=False,
                      xaxis={"range": [-0.02, 1.02], "title": f"A: {a}"},
                      yaxis={"range": [-0.02, 1.02], "title": f"B: {b}", "scaleanchor": "x"},
                      margin={"t": 50, "b": 40})
    return fig


def leaderboard_bars(rows: list[dict], tr: Tr = None) -> go.Figure:
    T = tr or _same
    fig = go.Figure()
    names = [r["id"] for r in rows]
    fig.add_trace(go.Bar(x=names, y=[r["bleu"] for r in rows], name="BLEU"))
    fig.add_trace(go.Bar(x=names, y=[r["rouge_l"] for r in rows], name="ROUGE-L"))
    fig.update_layout(barmode="group", yaxis_range=[0, 1], height=300, title=T("Evaluations"), margin={"t": 50, "b": 40})
    return fig


def token_histogram(stats: dict, tr: Tr = None) -> go.Figure:
    """Tokens per training text with the base model's tokenizer, and the max_seq_length line (drawn when
    it lies near the data; far beyond it, the line would squash the bars)."""
    T = tr or _same
    limit = stats["max_seq_length"]
    fig = go.Figure(go.Histogram(x=stats["lengths"], nbinsx=50, name=T("texts"), marker_color="#1565c0"))
    note = T("max_seq_length {limit}: {share:.1%} over").format(limit=limit, share=stats["share_over"])
    if limit <= 1.5 * max(stats["max"], 1):
        fig.add_vline(x=limit, line_dash="dash", line_color="#c62828", annotation_text=note,
                      annotation_position="top")
    else:
        fig.add_annotation(text=note, xref="paper", yref="paper", x=1, y=1.08, showarrow=False, font={"size": 11})
    fig.update_layout(title=T("Tokens per training text ({tokenizer}, {format} format)").format(
                          tokenizer=stats["tokenizer"], format=stats["format"]),
                      xaxis_title=T("tokens"), yaxis_title=T("pairs"), height=320, margin={"t": 50, "b": 40})
    return fig


def review_progress(status: dict, tr: Tr = None) -> go.Figure:
    """Decisions of a review sample as one stacked bar."""
    T = tr or _same
    fig = go.Figure()
    pending = status["sample_size"] - status["done"]
    for name, value, color in ((T("approved"), status["approved"], "#2e7d32"), (T("edited"), status["edited"], "#1565c0"),
                               (T("rejected"), status["rejected"], "#c62828"), (T("pending"), pending, "#bdbdbd")):
        fig.add_trace(go.Bar(y=[T("sample")], x=[value], name=name, orientation="h", marker_color=color))
    fig.update_layout(barmode="stack", height=140, margin={"t": 10, "b": 10, "l": 10, "r": 10},
                      legend={"orientation": "h", "y": -0.4})
    return fig


def judge_scores(distribution: dict, mean: float | None = None, tr: Tr = None) -> go.Figure:
    """How many examples the LLM judge scored 1, 2, 3, 4 and 5, and its mean."""
    T = tr or _same
    xs = [1, 2, 3, 4, 5]
    ys = [int(distribution.get(s) or distribution.get(str(s)) or 0) for s in xs]
    colors = ["#c62828", "#ef6c00", "#f9a825", "#7cb342", "#2e7d32"]
    fig = go.Figure(go.Bar(x=xs, y=ys, marker_color=colors, text=ys, textposition="outside", name=T("examples")))
    if mean is not None:
        fig.add_vline(x=mean, line_dash="dash", line_color="#424242",
                      annotation_text=T("mean {mean:.2f}").format(mean=mean), annotation_position="top")
    fig.update_layout(title=T("The judge's scores (1–5)"), xaxis={"tickmode": "array", "tickvals": xs, "title": T("score")},
                      yaxis_title=T("examples"), height=300, margin={"t": 50, "b": 40})
    return fig


def sweep_losses(metrics, labels: dict, best: str | None = None, tr: Tr = None) -> go.Figure:
    """A sweep's training loss curves side by side, one line a run (named by what it varies), the best one
    drawn thick (``metrics``: run_id, step, loss; ``labels``: run id → its label)."""
    T = tr or _same
    fig = go.Figure()
    if metrics is not None and len(metrics):
        for run_id, part in metrics.groupby("run_id", sort=False):
            name = labels.get(run_id, run_id)
            top = run_id == best
            fig.add_trace(go.Scatter(x=part["step"], y=part["loss"], mode="lines",
                                     name=("★ " if top else "") + name, line={"width": 4 if top else 1.5}))
    fig.update_layout(title=T("Training loss of every run"), height=380, margin={"t": 50, "b": 40, "l": 40, "r": 40},
                      legend={"orientation": "h", "y": -0.2})
    fig.update_xaxes(title_text=T("step"))
    fig.update_yaxes(title_text=T("loss"))
    return fig


def retention_bars(numbers: dict, set_labels: dict, tr: Tr = None) -> go.Figure:
    """General Vietnamese kept (``core.evaluation.retention``): base against tuned on each set, ROUGE-L and
    BLEU on the left, the perplexity of the reference answers on the right."""
    T = tr or _same
    sets = [name for name, s in numbers["sets"].items() if s.get("base")]
    names = [set_labels.get(name, name) for name in sets]
    fig = make_subplots(rows=1, cols=2, subplot_titles=(T("ROUGE-L and BLEU (higher is better)"),
                                                        T("Perplexity of the reference answers (lower is better)")))
    for who, key, color in ((T("base"), "base", "#9e9e9e"), (T("tuned"), "tuned", "#1565c0")):
        fig.add_trace(go.Bar(x=[f"ROUGE-L · {n}" for n in names] + [f"BLEU · {n}" for n in names],
                             y=[numbers["sets"][s][key]["rouge_l"] for s in sets]
                             + [numbers["sets"][s][key]["bleu"] for s in sets],
                             name=who, marker_color=color, legendgroup=key), row=1, col=1)
        fig.add_trace(go.Bar(x=names, y=[numbers["sets"][s][key]["perplexity"] for s in sets], name=who,
                             marker_color=color, legendgroup=key, showlegend=False), row=1, col=2)
    fig.update_layout(barmode="group", height=340, margin={"t": 60, "b": 40}, legend={"orientation": "h", "y": -0.25})
    return fig
