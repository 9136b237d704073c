"""Plotly figures the pages show (built here so that pages stay thin)."""
from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots


def loss_curve(metrics, title: str = "Training loss", note: str | None = None) -> go.Figure:
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    if metrics is not None and len(metrics):
        fig.add_trace(go.Scatter(x=metrics["step"], y=metrics["loss"], name="loss", mode="lines+markers"))
        fig.add_trace(go.Scatter(x=metrics["step"], y=metrics["learning_rate"], name="learning rate",
                                 mode="lines", line={"dash": "dot"}), secondary_y=True)
    fig.update_layout(title=title, height=340, margin={"t": 50, "b": 40, "l": 40, "r": 40},
                      legend={"orientation": "h", "y": -0.2})
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="loss", secondary_y=False)
    fig.update_yaxes(title_text="learning rate", secondary_y=True, showgrid=False)
    if note:
        fig.add_annotation(text=note, xref="paper", yref="paper", x=0, y=1.08, showarrow=False, font={"size": 11})
    return fig


def length_histogram(rows: list[dict]) -> go.Figure:
    fig = go.Figure()
    for field in ("instruction", "input", "output"):
        fig.add_trace(go.Histogram(x=[r[f"{field}_words"] for r in rows], name=field, opacity=0.6, nbinsx=40))
    fig.update_layout(barmode="overlay", title="Words per field", height=320, xaxis_title="words",
                      yaxis_title="pairs", margin={"t": 50, "b": 40})
    return fig


def gate_bars(bleu: float, rouge: float, thresholds: dict) -> go.Figure:
    fig = go.Figure()
    names = ["BLEU", "ROUGE-L"]
    values = [bleu, rouge]
    limits = [thresholds["bleu"], thresholds["rouge_l"]]
    colors = ["#2e7d32" if v > t else "#c62828" for v, t in zip(values, limits)]
    fig.add_trace(go.Bar(x=names, y=values, marker_color=colors, text=[f"{v:.3f}" for v in values],
                         textposition="outside", name="score"))
    fig.add_trace(go.Scatter(x=names, y=limits, mode="markers", marker={"symbol": "line-ew-open", "size": 40,
                                                                        "line": {"width": 3}}, name="gate"))
    fig.update_layout(yaxis_range=[0, 1], height=300, title="Scores against the gate", margin={"t": 50, "b": 30})
    return fig


def example_scores(examples: list[dict]) -> go.Figure:
    fig = go.Figure(go.Histogram(x=[e["rouge_l"] for e in examples], nbinsx=20))
    fig.update_layout(title="ROUGE-L per example", xaxis_title="ROUGE-L", yaxis_title="examples",
                      height=280, margin={"t": 50, "b": 40})
    return fig


def token_histogram(stats: dict) -> go.Figure:
    """Tokens per training text with the base model's tokenizer, and the max_seq_length line (drawn when
    it lies near the data; far beyond it, the line would squash the bars)."""
    limit = stats["max_seq_length"]
    fig = go.Figure(go.Histogram(x=stats["lengths"], nbinsx=50, name="texts", marker_color="#1565c0"))
    note = f"max_seq_length {limit}: {stats['share_over']:.1%} over"
    if limit <= 1.5 * max(stats["max"], 1):
        fig.add_vline(x=limit, line_dash="dash", line_color="#c62828", annotation_text=note,
                      annotation_position="top")
    else:
        fig.add_annotation(text=note, xref="paper", yref="paper", x=1, y=1.08, showarrow=False, font={"size": 11})
    fig.update_layout(title=f"Tokens per training text ({stats['tokenizer']}, {stats['format']} format)",
                      xaxis_title="tokens", yaxis_title="pairs", height=320, margin={"t": 50, "b": 40})
    return fig


def review_progress(status: dict) -> go.Figure:
    """Decisions of a review sample as one stacked bar."""
    fig = go.Figure()
    pending = status["sample_size"] - status["done"]
    for name, value, color in (("approved", status["approved"], "#2e7d32"), ("edited", status["edited"], "#1565c0"),
                               ("rejected", status["rejected"], "#c62828"), ("pending", pending, "#bdbdbd")):
        fig.add_trace(go.Bar(y=["sample"], x=[value], name=name, orientation="h", marker_color=color))
    fig.update_layout(barmode="stack", height=140, margin={"t": 10, "b": 10, "l": 10, "r": 10},
                      legend={"orientation": "h", "y": -0.4})
    return fig
