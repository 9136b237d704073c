"""The evaluation report a team sends to a client: one self-contained HTML file.

Plotly's JavaScript is embedded once (no CDN: the client may read it offline); the figures are the
ones the Evaluate page shows. Differing words between reference and prediction come from
``core.evaluation.evaluations.word_diff``; ``diff_html`` renders them (the page uses it too). Beside the
syllable scores (the gate's) it shows the word-level ones (``core.evaluation.words``), a second view.

It is written in the reader's language (``lang``: "vi" or "en"; the page passes its reader's, the CLI the
operator's or ``--lang``), from the same catalogues as the pages, and it shows what the evaluation judged (the
adapter, an exported GGUF at its quantization, an Ollama release; the backend it ran on) and the gate's record:
the checks of the release that rests on this evaluation, or, where none does yet, what the gate says now. A
GGUF's (or an Ollama release's) evaluation is compared with its own run's merged model: what quantization cost.
"""
from __future__ import annotations

import html
import json
from datetime import datetime

from core import charts, i18n
from core.evaluation import evaluations, gate, words
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


def _esc(text) -> str:
    """Text for an HTML text node (every place the report puts text: quotes stay as they are)."""
    return html.escape(str(text), quote=False)


def diff_html(segments: list[tuple[str, bool]], side: str, empty: str = "(empty)") -> str:
    """One side of ``evaluations.word_diff`` as HTML: changed runs in a highlighted span."""
    parts = []
    for text, changed in segments:
        t = _esc(text)
        parts.append(f'<span class="vt-chg">{t}</span>' if changed else t)
    body = " ".join(parts) or f'<span class="muted">{_esc(empty)}</span>'
    return f'<span class="vt-diff-{side}">{body}</span>'


DIFF_STYLE = ("<style>.vt-diff-ref .vt-chg{background:#ffcdd2;border-radius:3px}"
              ".vt-diff-pred .vt-chg{background:#fff59d;border-radius:3px}</style>")


def _num(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def _fmt_time(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if isinstance(value, datetime) else str(value or "")


def gate_record_of(e: dict, actor=None) -> tuple[dict | None, str | None]:
    """The gate's record to show with an evaluation: that of the newest release whose record rests on it (and
    the release's id), else what the gate says now for its run (at its quantization, for a GGUF's); None for an
    evaluation of a base model, or of a run that is gone."""
    from core import store

    if not e.get("run_id"):
        return None, None
    for rel in store.rows("SELECT id, gate_record FROM releases WHERE run_id = ? AND gate_record IS NOT NULL "
                          "ORDER BY created_at DESC", [e["run_id"]]):
        rec = json.loads(rel["gate_record"]) if isinstance(rel["gate_record"], str) else rel["gate_record"]
        if any(c.get("evaluation") == e["id"] for c in rec.get("checks") or []):
            return rec, rel["id"]
    try:
        return gate.stored(gate.record(e["run_id"], e.get("quantization"), actor=actor)), None
    except (ValueError, LookupError):
        return None, None


def _words(_) -> dict:
    """The report's own words in the reader's language (``_()`` outside the f-strings, where the catalogue's
    extraction finds them)."""
    return {
        "not gating": _("not gating"),
        "Released over the gate by {who}: {reason}": _("Released over the gate by {who}: {reason}"),
        "check": _("check"),
        "verdict": _("verdict"),
        "artifact": _("artifact"),
        "evaluation": _("evaluation"),
        "reason": _("reason"),
        "Compared with {label}": _("Compared with {label}"),
        "(empty)": _("(empty)"),
        "Word-level": _("Word-level"),
        "BLEU (words)": _("BLEU (words)"),
        "ROUGE-L (words)": _("ROUGE-L (words)"),
        "The {shown} lowest-scoring of {n} examples; the CSV has all.": _("The {shown} lowest-scoring of {n} examples; the CSV has all."),
        "{who} on {version}/{split}": _("{who} on {version}/{split}"),
        "gate": _("gate"),
        "PASS": _("PASS"),
        "FAIL": _("FAIL"),
        "Examples": _("Examples"),
        "Words that differ are highlighted: in the reference (red) and in the prediction (yellow).": _("Words that differ are highlighted: in the reference (red) and in the prediction (yellow)."),
        "Question": _("Question"),
        "Reference": _("Reference"),
        "Prediction": _("Prediction"),
    }


def _record_html(rec: dict, release: str | None, _, lang: str) -> str:
    W = _words(_)
    names = {"merged_model": _("merged model (HF, adapter)"), "gguf": _("the shipped GGUF"), "judge": _("LLM judge")}
    rows = []
    for c in rec.get("checks") or []:
        n = c.get("numbers") or {}
        verdict = _("PASS") if c["passed"] else (_("not judged") if c["passed"] is None else _("FAIL"))
        cls = "pass" if c["passed"] else "fail"
        rows.append(f"<tr><td>{_esc(names.get(c['name'], c['name']))}</td><td class='{cls}'>{verdict}"
                    f"{'' if c['gates'] else ' (' + _esc(W['not gating']) + ')'}</td>"
                    f"<td>{_esc(str(c.get('artifact') or ''))}</td><td>{_esc(str(c.get('evaluation') or ''))}</td>"
                    f"<td class='num'>{_num(n.get('bleu'))}</td><td class='num'>{_num(n.get('rouge_l'))}</td>"
                    f"<td class='num'>{n.get('n') if n.get('n') is not None else '–'}</td>"
                    f"<td>{_esc(c['reason'].get(lang) or c['reason'].get('en') or '')}</td></tr>")
    title = (_("The gate's record of release {release} ({quantization})").format(release=release,
                                                                               quantization=rec.get("quantization"))
             if release else _("What the gate says now for a release at {quantization}").format(
                 quantization=rec.get("quantization")))
    verdict = _("releasable") if rec.get("releasable") else _("not releasable")
    override = ""
    if rec.get("override"):
        override = (f"<p class='fail'>{_esc(W['Released over the gate by {who}: {reason}'].format(who=rec['override']['by'], reason=rec['override']['reason']))}</p>")
    return (f"<h2>{_esc(title)}</h2><p>{_esc(verdict)}</p>{override}"
            f"<table><tr><th>{W['check']}</th><th>{W['verdict']}</th><th>{W['artifact']}</th><th>{W['evaluation']}</th>"
            f"<th>BLEU</th><th>ROUGE-L</th><th>n</th><th>{W['reason']}</th></tr>{''.join(rows)}</table>")


def build(evaluation_id: str, compare_with: str | None = None, actor=None, lang: str | None = None) -> str:
    """The report of one evaluation (``actor``: the evaluations must be of a project it sees), in ``lang``
    ("vi" or "en"; English when not given)."""
    lang = lang if lang in i18n.LANGUAGES else "en"
    _ = (lambda text: text) if lang == "en" else i18n.translations(lang).gettext
    say = lambda message: i18n.render(message, _)
    W = _words(_)
    e = evaluations.ensure_word_scores(evaluation_id, actor)   # the word-level view computed where it has none
    examples = evaluations.examples(evaluation_id)
    has_words = e.get("bleu_words") is not None
    th = e["thresholds"]
    figures = [charts.gate_bars(e["bleu"], e["rouge_l"], th, tr=_), charts.example_scores(examples, tr=_)]
    if e["run_id"]:
        metrics = runs.run_metrics(e["run_id"])
        if len(metrics):
            figures.append(charts.loss_curve(metrics, _("Training loss of {run}").format(run=e["run_id"]), tr=_))
    comparison = None
    other = compare_with
    if not other and e.get("target") in ("gguf", "ollama"):   # a GGUF against its own run's merged model
        try:
            other = (gate.verdict(e["run_id"], actor).get("evaluation") or {}).get("id")
        except (ValueError, LookupError):
            other = None
    if not other and e["run_id"]:
        other = (evaluations.base_counterpart(evaluation_id, actor) or {}).get("id")
    if other:
        comparison = evaluations.compare(other, evaluation_id, actor)
        figures.append(charts.rouge_scatter(comparison, tr=_))
    plots = []
    for i, fig in enumerate(figures):
        plots.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0), config={"displaylogo": False}))

    verdict_cls = "pass" if e["passed"] else "fail"
    who = say(e.get("artifact") or evaluations.artifact_label(e)) if e["run_id"] else _("base model without adapter")
    rows = [(_("Evaluation"), e["id"]), (_("Run"), who), (_("Base model"), e["base_model"]),
            (_("Dataset version / split"), f"{e['dataset_version_id']} / {e['split']}"),
            (_("Examples"), f"{e['n']}" + (" " + _("(first {n} of the split)").format(n=e["sample_limit"])
                                           if e.get("sample_limit") else "")),
            (_("Prompt format"), e.get("prompt_format") or ""),
            (_("Decoding"), json.dumps(e["decoding"], ensure_ascii=False)),
            (_("Gate thresholds"), f"BLEU > {th['bleu']}, ROUGE-L > {th['rouge_l']}"),
            (_("Duration"), f"{(e['duration_s'] or 0):.1f} s" + (" · " + _("{rate:.2f} examples/s").format(
                rate=e["examples_per_s"]) if e.get("examples_per_s") else "")),
            (_("Created"), f"{_fmt_time(e['created_at'])}" + (" " + _("by {who}").format(who=e["created_by"])
                                                             if e.get("created_by") else ""))]
    if e.get("target") in ("gguf", "ollama"):
        rows.insert(2, (_("Artifact"), (f"GGUF {e.get('quantization')} · sha256 {(e.get('gguf_sha256') or '')[:16]}…"
                                       if e["target"] == "gguf" else f"Ollama {e.get('ollama_model')}")))
    if e.get("backend"):
        rows.insert(3, (_("Backend"), say(evaluations.backend_text(e))))
    if has_words:
        rows.insert(8, (_("Word-level scores"), _("BLEU {bleu:.4f}, ROUGE-L {rouge_l:.4f} (segmented by {segmenter}; "
                                                  "not gated)").format(bleu=e["bleu_words"], rouge_l=e["rouge_l_words"],
                                                                       segmenter=e.get("word_segmenter") or words.SEGMENTER)))
    meta = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(str(v))}</td></tr>" for k, v in rows)

    cmp_html = ""
    if comparison:
        c = comparison
        cmp_html = (
            f"<h2>{_esc(W['Compared with {label}'].format(label=say(c['a']['label'])))}</h2>"
            "<p>" + _esc(_("On the {n} examples both evaluated: BLEU {bleu_a:.4f} → {bleu_b:.4f} (Δ {bleu_d:+.4f}), "
                                  "ROUGE-L {rouge_a:.4f} → {rouge_b:.4f} (Δ {rouge_d:+.4f}); {better} better, {worse} "
                                  "worse, {same} unchanged.").format(
                n=c["shared"]["n"], bleu_a=c["shared"]["a"]["bleu"], bleu_b=c["shared"]["b"]["bleu"],
                bleu_d=c["shared"]["delta"]["bleu"], rouge_a=c["shared"]["a"]["rouge_l"],
                rouge_b=c["shared"]["b"]["rouge_l"], rouge_d=c["shared"]["delta"]["rouge_l"],
                better=c["counts"]["better"], worse=c["counts"]["worse"], same=c["counts"]["same"])) + "</p>")

    rec, release = gate_record_of(e, actor)
    record_html = _record_html(rec, release, _, lang) if rec else ""

    shown = sorted(examples, key=lambda x: (x["rouge_l"], x["idx"]))[:MAX_EXAMPLES]
    ex_rows = []
    for ex in shown:
        d = evaluations.word_diff(ex["reference"], ex["prediction"])
        question = _esc(ex["instruction"] or "") + (
            f"<br><span class='muted'>{_esc(ex['input'])}</span>" if ex["input"] else "")
        ex_rows.append(f"<tr><td class='num'>{ex['idx']}</td><td>{question}</td>"
                       f"<td>{diff_html(d['reference'], 'ref', W['(empty)'])}</td>"
                       f"<td>{diff_html(d['prediction'], 'pred', W['(empty)'])}</td>"
                       f"<td class='num'>{ex['bleu']:.3f}</td><td class='num'>{ex['rouge_l']:.3f}</td>"
                       + (f"<td class='num'>{_num(ex.get('bleu_words'))}</td>"
                          f"<td class='num'>{_num(ex.get('rouge_l_words'))}</td>" if has_words else "") + "</tr>")
    word_views = {words.CAPTION: _("word-level (pyvi segmentation): a second view; the gate uses syllables"),
                  words.MISSING: _("word-level scores not available: the word segmenter (pyvi) is not installed "
                                   "(it is in requirements.txt); the gate uses syllables"),
                  words.NOT_YET: _("word-level scores not computed yet (`python -m core evaluate show ID` computes "
                                   "them); the gate uses syllables")}
    word_line = (f"<p>{_esc(W['Word-level'])}: BLEU <b>{e['bleu_words']:.4f}</b> · ROUGE-L <b>{e['rouge_l_words']:.4f}</b> "
                 f"<span class='muted'>{_esc(word_views[words.CAPTION])}</span></p>" if has_words
                 else f"<p class='muted'>{_esc(word_views.get(words.view(e), words.view(e)))}</p>")
    word_heads = (f"<th>{_esc(W['BLEU (words)'])}</th><th>{_esc(W['ROUGE-L (words)'])}</th>"
                  if has_words else "")
    note = (f"<p class='muted'>{_esc(W['The {shown} lowest-scoring of {n} examples; the CSV has all.'].format(shown=MAX_EXAMPLES, n=len(examples)))}</p>"
            if len(examples) > MAX_EXAMPLES else "")
    title = _("Evaluation report")
    scores_note = _("Scores on Vietnamese syllables (NFC, lower case, punctuation dropped): BLEU is corpus BLEU-4, "
                    "ROUGE-L the mean LCS F1 over examples; per-example BLEU uses smoothing method 1 and is shown only. "
                    "The word-level scores are the same measures on words, the syllables of a word joined by "
                    "Vietnamese word segmentation (pyvi: \"hợp đồng\" → \"hợp_đồng\"): a second view; the gate uses "
                    "the syllable scores.")

    return f"""<!DOCTYPE html>
<html lang="{lang}"><head><meta charset="utf-8"><title>{_esc(title)} {_esc(e['id'])}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>
<body>
<h1>{_esc(title)}</h1>
<p class="muted">ViTune Studio · {_esc(W['{who} on {version}/{split}'].format(who=who, version=e['dataset_version_id'], split=e['split']))}</p>
<p>BLEU <b>{e['bleu']:.4f}</b> · ROUGE-L <b>{e['rouge_l']:.4f}</b> · {_esc(W['gate'])}
<span class="{verdict_cls}">{W['PASS'] if e['passed'] else W['FAIL']}</span>
<span class="muted">{_esc(e.get('gate_reason') or '')}</span></p>
{word_line}
<p class="muted">{_esc(scores_note)}</p>
<table>{meta}</table>
{record_html}
{cmp_html}
<div class="grid">{''.join(f'<div>{p}</div>' for p in plots)}</div>
<h2>{_esc(W['Examples'])}</h2>{note}
<p class="muted">{_esc(W['Words that differ are highlighted: in the reference (red) and in the prediction (yellow).'])}</p>
<table><tr><th>#</th><th>{_esc(W['Question'])}</th><th>{_esc(W['Reference'])}</th><th>{_esc(W['Prediction'])}</th><th>BLEU</th><th>ROUGE-L</th>
{word_heads}</tr>
{''.join(ex_rows)}</table>
</body></html>
"""

