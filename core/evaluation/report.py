"""The evaluation report a team sends to a client: one self-contained HTML file.

Plotly's JavaScript is embedded once (no CDN: the client may read it offline); the figures are the
ones the Evaluate page shows. Differing words between reference and prediction come from
``core.evaluation.evaluations.word_diff``; ``diff_html`` renders them (the page uses it too). Beside the
syllable scores (the gate's) it shows the word-level ones (``core.evaluation.words``), a second view.
"""
from __future__ import annotations

import html
import json
from datetime import datetime

from core import charts
from core.evaluation import evaluations, words
from core.training import runs

MAX_EXAMPLES = 500  # the HTML shows at most this many (worst first); the CSV carries them all

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#212121;padding:0 1rem}
h1{margin-bottom:.2rem} .muted{color:#616161} table{border-collapse:collapse;width:100%;margin:.5rem 0 1.5rem}
th,td{border:1px solid #e0e0e0;padding:.35rem .5rem;vertical-align:top;text-align:left;font-size:.9rem}
th{background:#f5f5f5} .pass{color:#2e7d32;font-weight:700} .fail{color:#c62828;font-weight:700}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:1rem} .vt-del{background:#ffcdd2;text-decoration:line-through}
.vt-ins{background:#c8e6c9} .vt-diff-ref .vt-chg{background:#ffcdd2} .vt-diff-pred .vt-chg{background:#fff59d}
.num{text-align:right;white-space:nowrap}
"""


def diff_html(segments: list[tuple[str, bool]], side: str) -> str:
    """One side of ``evaluations.word_diff`` as HTML: changed runs in a highlighted span."""
    parts = []
    for text, changed in segments:
        t = html.escape(text)
        parts.append(f'<span class="vt-chg">{t}</span>' if changed else t)
    body = " ".join(parts) or '<span class="muted">(empty)</span>'
    return f'<span class="vt-diff-{side}">{body}</span>'


DIFF_STYLE = ("<style>.vt-diff-ref .vt-chg{background:#ffcdd2;border-radius:3px}"
              ".vt-diff-pred .vt-chg{background:#fff59d;border-radius:3px}</style>")


def _num(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def _fmt_time(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if isinstance(value, datetime) else str(value or "")


def build(evaluation_id: str, compare_with: str | None = None, actor=None) -> str:
    """The report of one evaluation (``actor``: the evaluations must be of a project it sees)."""
    e = evaluations.ensure_word_scores(evaluation_id, actor)   # the word-level view computed where it has none
    examples = evaluations.examples(evaluation_id)
    has_words = e.get("bleu_words") is not None
    th = e["thresholds"]
    figures = [charts.gate_bars(e["bleu"], e["rouge_l"], th), charts.example_scores(examples)]
    if e["run_id"]:
        metrics = runs.run_metrics(e["run_id"])
        if len(metrics):
            figures.append(charts.loss_curve(metrics, f"Training loss of {e['run_id']}"))
    comparison = None
    other = compare_with or ((evaluations.base_counterpart(evaluation_id, actor) or {}).get("id")
                             if e["run_id"] else None)
    if other:
        comparison = evaluations.compare(other, evaluation_id, actor)
        figures.append(charts.rouge_scatter(comparison))
    plots = []
    for i, fig in enumerate(figures):
        plots.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0), config={"displaylogo": False}))

    verdict_cls = "pass" if e["passed"] else "fail"
    who = e["run_id"] or "base model without adapter"
    rows = [("Evaluation", e["id"]), ("Run", who), ("Base model", e["base_model"]),
            ("Dataset version / split", f"{e['dataset_version_id']} / {e['split']}"),
            ("Examples", f"{e['n']}" + (f" (first {e['sample_limit']} of the split)" if e.get("sample_limit") else "")),
            ("Prompt format", e.get("prompt_format") or ""),
            ("Decoding", json.dumps(e["decoding"], ensure_ascii=False)),
            ("Gate thresholds", f"BLEU > {th['bleu']}, ROUGE-L > {th['rouge_l']}"),
            ("Duration", f"{(e['duration_s'] or 0):.1f} s" + (f" · {e['examples_per_s']:.2f} examples/s"
                                                              if e.get("examples_per_s") else "")),
            ("Created", f"{_fmt_time(e['created_at'])}" + (f" by {e['created_by']}" if e.get("created_by") else ""))]
    if has_words:
        rows.insert(8, ("Word-level scores", f"BLEU {e['bleu_words']:.4f}, ROUGE-L {e['rouge_l_words']:.4f} "
                                             f"(segmented by {e.get('word_segmenter') or words.SEGMENTER}; not gated)"))
    meta = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)

    cmp_html = ""
    if comparison:
        c = comparison
        cmp_html = (
            f"<h2>Compared with {html.escape(c['a']['label'])}</h2>"
            f"<p>On the {c['shared']['n']} examples both evaluated: BLEU {c['shared']['a']['bleu']:.4f} → "
            f"{c['shared']['b']['bleu']:.4f} (Δ {c['shared']['delta']['bleu']:+.4f}), ROUGE-L "
            f"{c['shared']['a']['rouge_l']:.4f} → {c['shared']['b']['rouge_l']:.4f} "
            f"(Δ {c['shared']['delta']['rouge_l']:+.4f}); {c['counts']['better']} better, {c['counts']['worse']} worse, "
            f"{c['counts']['same']} unchanged.</p>")

    shown = sorted(examples, key=lambda x: (x["rouge_l"], x["idx"]))[:MAX_EXAMPLES]
    ex_rows = []
    for ex in shown:
        d = evaluations.word_diff(ex["reference"], ex["prediction"])
        question = html.escape(ex["instruction"] or "") + (
            f"<br><span class='muted'>{html.escape(ex['input'])}</span>" if ex["input"] else "")
        ex_rows.append(f"<tr><td class='num'>{ex['idx']}</td><td>{question}</td>"
                       f"<td>{diff_html(d['reference'], 'ref')}</td><td>{diff_html(d['prediction'], 'pred')}</td>"
                       f"<td class='num'>{ex['bleu']:.3f}</td><td class='num'>{ex['rouge_l']:.3f}</td>"
                       + (f"<td class='num'>{_num(ex.get('bleu_words'))}</td>"
                          f"<td class='num'>{_num(ex.get('rouge_l_words'))}</td>" if has_words else "") + "</tr>")
    word_line = (f"<p>Word-level: BLEU <b>{e['bleu_words']:.4f}</b> · ROUGE-L <b>{e['rouge_l_words']:.4f}</b> "
                 f"<span class='muted'>{html.escape(words.CAPTION)}</span></p>" if has_words
                 else f"<p class='muted'>{html.escape(words.view(e))}</p>")
    word_heads = "<th>BLEU (words)</th><th>ROUGE-L (words)</th>" if has_words else ""
    note = (f"<p class='muted'>The {MAX_EXAMPLES} lowest-scoring of {len(examples)} examples; the CSV has all.</p>"
            if len(examples) > MAX_EXAMPLES else "")

    return f"""<!DOCTYPE html>
<html lang="vi"><head><meta charset="utf-8"><title>Evaluation report {html.escape(e['id'])}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>
<body>
<h1>Evaluation report</h1>
<p class="muted">ViTune Studio · {html.escape(who)} on {html.escape(e['dataset_version_id'])}/{html.escape(e['split'])}</p>
<p>BLEU <b>{e['bleu']:.4f}</b> · ROUGE-L <b>{e['rouge_l']:.4f}</b> · gate
<span class="{verdict_cls}">{'PASS' if e['passed'] else 'FAIL'}</span>
<span class="muted">{html.escape(e.get('gate_reason') or '')}</span></p>
{word_line}
<p class="muted">Scores on Vietnamese syllables (NFC, lower case, punctuation dropped): BLEU is corpus BLEU-4,
ROUGE-L the mean LCS F1 over examples; per-example BLEU uses smoothing method 1 and is shown only.
The word-level scores are the same measures on words, the syllables of a word joined by Vietnamese word
segmentation (pyvi: "hợp đồng" → "hợp_đồng"): a second view; the gate uses the syllable scores.</p>
<table>{meta}</table>
{cmp_html}
<div class="grid">{''.join(f'<div>{p}</div>' for p in plots)}</div>
<h2>Examples</h2>{note}
<p class="muted">Words that differ are highlighted: in the reference (red) and in the prediction (yellow).</p>
<table><tr><th>#</th><th>Question</th><th>Reference</th><th>Prediction</th><th>BLEU</th><th>ROUGE-L</th>
{word_heads}</tr>
{''.join(ex_rows)}</table>
</body></html>
"""
