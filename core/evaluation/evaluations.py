"""Evaluations, app side: queue an evaluation job (``core.evaluation.evaluator`` runs it in a
worker), store it and every example in DuckDB when it ends, and read them back: the leaderboard,
the comparison of two evaluations on their shared examples, word-level differences, CSV. Storing adds
the word-level BLEU/ROUGE-L (``core.evaluation.words``: a second view; the gate keeps syllables).
"""
from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import uuid
from pathlib import Path

from core import base_models, errors, models, paths, prompt_format, store
from core.access import projects
from core.access.audit import safe_cell
from core.access.principal import DEFAULT_PROJECT, Principal, require
from core.datasets import versions
from core.evaluation import gate, scoring, words
from core.evaluation.inference import Decoding
from core.evaluation.scoring import gate_reason
from core.i18n import M
from core.jobs import queue
from core.jobs.queue import JobError
from core.training import runs

TARGETS = ("adapter", "gguf", "ollama")


def submit(run_id: str | None = None, *, base_model: str | None = None, dataset_version_id: str | None = None,
           split: str = "test", limit: int | None = None, decoding: Decoding | None = None,
           actor: Principal, prompt_format_name: str | None = None, gguf: str | None = None,
           ollama_model: str | None = None, n_parallel: int | None = None) -> dict:
    """Queue an evaluation of a run (its adapter) or, with ``base_model`` alone, of the base model
    (in ``prompt_format_name``: give the tuned run's format to compare the two on equal terms). It
    belongs to the dataset version's project.

    With ``gguf`` (a quantization: f16, q8_0, q4_k_m) it evaluates the run's exported GGUF at that quantization
    (its latest intact export) through llama.cpp; with ``ollama_model`` (NAME:TAG of one of the run's releases)
    the model the Ollama server serves. Both on the same split and with the same decoding as the run's gating
    evaluation unless ``decoding`` says otherwise (greedy by default), scored alike, stored as their own row."""
    if gguf and ollama_model:
        raise ValueError("evaluate a GGUF or an Ollama model, not both at once")
    artifact = None
    if gguf or ollama_model:
        if not run_id:
            raise ValueError("an exported GGUF or an Ollama release is evaluated as a run's artifact: give the run")
        artifact = _artifact(run_id, gguf, ollama_model, actor)
        if decoding is None:   # the run's own evaluation's decoding: the comparison is on equal terms
            from core.evaluation import gate as _gate

            rests_on = _gate.verdict(run_id, actor).get("evaluation") or {}
            decoding = Decoding.from_dict(rests_on.get("decoding")) if rests_on.get("decoding") else None
    decoding = (decoding or Decoding()).validate()
    if n_parallel is not None and not 1 <= int(n_parallel) <= 256:
        raise ValueError(f"the parallel sequences must be between 1 and 256, not {n_parallel}")
    if split not in ("test", "train"):
        raise ValueError(f"unknown split '{split}' (test or train)")
    if limit is not None and limit < 1:
        raise ValueError("the example limit must be at least 1 (leave it out for the whole split)")
    adapter_dir = None
    fmt = prompt_format.check_format(prompt_format_name or prompt_format.DEFAULT_FORMAT)
    if run_id:
        run = runs.get_run(run_id, actor)
        if run["state"] != "succeeded" or not run["adapter_dir"]:
            raise JobError(f"run {run_id} has not finished training ({run['state']})")
        base_model = run["base_model"]
        adapter_dir = run["adapter_dir"]
        fmt = run["prompt_format"]
        dataset_version_id = dataset_version_id or run["dataset_version_id"]
    if not base_model or not dataset_version_id:
        raise ValueError("an evaluation needs a run, or a base model and a dataset version")
    if not run_id:
        base_models.check(base_model)
    version = versions.get_version(dataset_version_id, actor)
    require(actor, "evaluate.submit", version["project"])
    payload, job_dir = _payload(run_id, run["run_dir"] if run_id else None, base_model, adapter_dir, fmt, version,
                                split, limit, decoding, actor.name)
    if artifact:
        payload.update(artifact)
        if n_parallel:
            payload["n_parallel"] = int(n_parallel)
    return queue.submit("evaluate", payload, job_dir, actor, run_id, dataset_version_id, version["project"])


def _payload(run_id: str | None, run_dir: str | None, base_model: str, adapter_dir: str | None, fmt: str,
             version: dict, split: str, limit: int | None, decoding: Decoding, owner: str) -> tuple[dict, Path]:
    """An evaluation job's payload and folder (the caller has checked who asks)."""
    evaluation_id = "eval-" + uuid.uuid4().hex[:10]
    where = Path(run_dir) / "evaluations" if run_id else paths.data_dir() / "evaluations"
    payload = {
        "evaluation_id": evaluation_id,
        "run_id": run_id,
        "base_model": base_model,
        "adapter_dir": adapter_dir,
        "prompt_format": fmt,
        "dataset_version_id": version["id"],
        "split": split,
        "rows_file": str(Path(version["path"]) / f"{split}.parquet"),
        "limit": limit,
        "decoding": decoding.to_dict(),
        "thresholds": gate.thresholds(),
        "owner": owner,
        "project": version["project"],
        "target": "adapter",
    }
    return payload, where / evaluation_id


def queue_for_run(con, *, run_id: str, run_dir: str, base_model: str, adapter_dir: str, prompt_format_name: str,
                  dataset_version_id: str, limit: int | None, decoding: Decoding, owner: str, project: str) -> int:
    """The gate's evaluation of a run just trained (its held-out split), queued on ``con`` inside the settle of its
    training job: a sweep's automatic evaluation (core.training.sweeps; the sweep's owner was checked when it
    started). Returns the job id."""
    version = versions.get_version(dataset_version_id)
    payload, job_dir = _payload(run_id, run_dir, base_model, adapter_dir, prompt_format_name, version, "test", limit,
                                decoding.validate(), owner)
    return queue.insert(con, "evaluate", job_dir, payload, owner, run_id, dataset_version_id, project)


def _artifact(run_id: str, gguf: str | None, ollama_model: str | None, actor: Principal) -> dict:
    """What the job needs to reach the artifact, checked here so that a missing one is said plainly."""
    from core.deploy import exporter, exports

    if gguf:
        if gguf not in exporter.QUANTIZATIONS:
            raise ValueError(f"unknown quantization '{gguf}' (one of: {', '.join(exporter.QUANTIZATIONS)})")
        job = exports.latest(run_id, gguf)
        if job is None:
            raise ValueError(M("run {run} has no intact {quantization} export to evaluate: export it first "
                               "(python -m core export --run {run} --quant {quantization})", run=run_id,
                               quantization=gguf))
        return {"target": "gguf", "quantization": gguf, "export_job_id": job["id"],
                "gguf_path": job["result"]["gguf"][gguf], "gguf_sha256": job["result"]["sha256"][gguf]}
    from core.deploy import ollama

    name, _, tag = ollama_model.partition(":")
    rel = store.one("""SELECT * FROM releases WHERE run_id = ? AND name = ? AND tag = ? AND coalesce(state, 'active') <> 'deleted'
                       ORDER BY created_at DESC LIMIT 1""", [run_id, name, tag or "latest"])
    if rel is None:
        raise ValueError(M("run {run} has no release named {model}: the Ollama model evaluated must be one of its "
                           "releases", run=run_id, model=ollama_model))
    problem = ollama.server_problem()
    if problem:
        raise ValueError(M("cannot evaluate the Ollama model {model}: {problem}", model=ollama_model, problem=problem))
    full = f"{name}:{tag or 'latest'}"
    if not ollama.model_exists(full):
        raise ValueError(M("the Ollama server has no model {model} (released as {release}; re-create it with "
                           "`python -m core releases rollback {release}`)", model=full, release=rel["id"]))
    return {"target": "ollama", "ollama_model": full, "ollama_host": ollama.OLLAMA_HOST,
            "quantization": rel["quantization"], "gguf_path": rel["gguf_path"], "gguf_sha256": rel["gguf_sha256"]}


def pair_key(instruction: str | None, input_text: str | None, reference: str | None) -> str:
    """The same held-out pair in any evaluation (migration 004 computes it alike in SQL)."""
    text = "\x1f".join([instruction or "", input_text or "", reference or ""])
    return hashlib.md5(text.encode("utf-8")).hexdigest()


# Word-level scores at ingest segment every reference and prediction while the supervisor's tick holds the
# database (pyvi: ~1 MB of text in ~5 s on the 2-core machine). Past this many characters an evaluation is
# stored without them, and ``ensure_word_scores`` computes them when it is first shown, outside the tick.
INGEST_WORD_CHARS = 1_000_000


def _word_scores(evaluation_id: str, refs: list[str], preds: list[str], *,
                 in_tick: bool = True) -> words.WordScores | None:
    """The word-level second view, or None (no pyvi, more than ``INGEST_WORD_CHARS`` in a tick, or an error:
    in the error log). It never fails an ingest or a showing: the gate does not use it."""
    if words.unavailable() or (in_tick and sum(len(t or "") for t in refs + preds) > INGEST_WORD_CHARS):
        return None
    try:
        return words.score(refs, preds)
    except Exception as exc:
        errors.report(exc, f"word-level scores of {evaluation_id}")
        return None


def ingest(con, job: dict, result: dict) -> None:
    """In the supervisor, in the settle's transaction (the evaluation and its examples are stored together, or
    not at all): store the evaluation and its examples, with the word-level second view. Idempotent: an
    evaluation already stored is left as it is."""
    cfg = job["config"] if isinstance(job["config"], dict) else json.loads(job["config"])
    if con.execute("SELECT 1 FROM evaluations WHERE id = ?", [cfg["evaluation_id"]]).fetchall():
        return
    th = result["thresholds"]
    exs = [json.loads(line) for line in Path(result["predictions"]).read_text(encoding="utf-8").splitlines()]
    ws = _word_scores(cfg["evaluation_id"], [ex["reference"] for ex in exs], [ex["prediction"] for ex in exs])
    con.execute(
        """INSERT INTO evaluations (id, job_id, run_id, base_model, dataset_version_id, split, n, bleu, rouge_l,
               passed, thresholds, decoding, duration_s, created_at, prompt_format, adapter_dir, sample_limit,
               generation_s, scoring_s, examples_per_s, gate_reason, created_by, project,
               bleu_words, rouge_l_words, word_segmenter, target, quantization, export_job_id, gguf_path,
               gguf_sha256, ollama_model, backend)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,
                   ?, ?, ?, ?, ?, ?, ?)""",
        [cfg["evaluation_id"], job["id"], cfg.get("run_id"), cfg["base_model"], cfg["dataset_version_id"],
         cfg["split"], result["n"], result["bleu"], result["rouge_l"], result["passed"],
         json.dumps(th), json.dumps(cfg["decoding"]), result.get("duration_s"), store.now(),
         result.get("prompt_format") or cfg.get("prompt_format"), cfg.get("adapter_dir"), cfg.get("limit"),
         result.get("generation_s"), result.get("scoring_s"), result.get("examples_per_s"),
         gate_reason(result["passed"], result["bleu"], result["rouge_l"], th), cfg.get("owner") or job.get("owner"),
         cfg.get("project") or job.get("project") or DEFAULT_PROJECT,
         ws.bleu if ws else None, ws.rouge_l if ws else None, ws.segmenter if ws else None,
         cfg.get("target") or "adapter", cfg.get("quantization"), cfg.get("export_job_id"), cfg.get("gguf_path"),
         cfg.get("gguf_sha256"), cfg.get("ollama_model"),
         json.dumps(result["backend"], ensure_ascii=False, default=str) if result.get("backend") else None],
    )
    store.crash_point("evaluation.stored")
    per_word = ws.per_example if ws else [{"bleu": None, "rouge_l": None}] * len(exs)
    rows = []
    for ex, w in zip(exs, per_word):
        rows.append([cfg["evaluation_id"], ex["idx"], ex["instruction"], ex["input"], ex["reference"],
                     ex["prediction"], ex["bleu"], ex["rouge_l"],
                     pair_key(ex["instruction"], ex["input"], ex["reference"]), w["bleu"], w["rouge_l"]])
    store.insert_rows(con, "evaluation_examples", ("evaluation_id", "idx", "instruction", "input", "reference",
                                                    "prediction", "bleu", "rouge_l", "pair_key", "bleu_words",
                                                    "rouge_l_words"), rows)


def ensure_word_scores(evaluation_id: str, actor: Principal | None = None) -> dict:
    """The evaluation, its word-level scores computed and stored first where it has none (stored before
    migration 009, too large to segment in the supervisor's tick, or ingested without pyvi) and pyvi is
    here. The segmenting happens outside any connection; the two updates commit together."""
    e = get_evaluation(evaluation_id, actor)
    if e.get("bleu_words") is not None or words.unavailable():
        return e
    exs = examples(evaluation_id)
    ws = _word_scores(evaluation_id, [x["reference"] for x in exs], [x["prediction"] for x in exs], in_tick=False)
    if ws is None:
        return e
    with store.transaction() as con:
        con.execute("UPDATE evaluations SET bleu_words = ?, rouge_l_words = ?, word_segmenter = ? WHERE id = ?",
                    [ws.bleu, ws.rouge_l, ws.segmenter, evaluation_id])
        if exs:
            con.execute(
                """UPDATE evaluation_examples AS x SET bleu_words = v.b, rouge_l_words = v.r
                   FROM (SELECT unnest(?::INTEGER[]) AS idx, unnest(?::DOUBLE[]) AS b, unnest(?::DOUBLE[]) AS r) AS v
                   WHERE x.evaluation_id = ? AND x.idx = v.idx""",
                [[x["idx"] for x in exs], [p["bleu"] for p in ws.per_example], [p["rouge_l"] for p in ws.per_example],
                 evaluation_id])
    return get_evaluation(evaluation_id, actor)


def _decode(e: dict | None) -> dict | None:
    if e is None:
        return None
    for key in ("thresholds", "decoding", "backend"):
        if isinstance(e.get(key), str):
            e[key] = json.loads(e[key])
    e["artifact"] = artifact_label(e)
    e["label"] = label(e)
    return e


def artifact_label(e: dict) -> str:
    """What an evaluation judged, as the leaderboard names it: ``run``, ``run · q8_0`` (its exported GGUF),
    ``run · ollama NAME:TAG`` (the release Ollama serves), or the base model alone."""
    if not e.get("run_id"):
        return M("{model} (base, no adapter)", model=models.display_name(e["base_model"]))
    if e.get("target") == "gguf":
        return f"{e['run_id']} · {e.get('quantization')}"
    if e.get("target") == "ollama":
        return f"{e['run_id']} · ollama {e.get('ollama_model')}"
    return e["run_id"]


def backend_text(e: dict) -> str:
    """The backend an evaluation ran on, in a line (what llama.cpp used, or fell back to)."""
    b = e.get("backend") or {}
    if b.get("engine") == "llama.cpp":
        line = M("llama.cpp on {device} ({gpu_layers}/{layers} layers offloaded, {threads} threads, {parallel} "
                 "sequences in parallel, {tps} tokens/s)", device=b.get("device"), gpu_layers=b.get("gpu_layers"),
                 layers=b.get("layers"), threads=b.get("n_threads"), parallel=b.get("n_parallel"),
                 tps=b.get("tokens_per_s"))
        return M("{line}; fell back: {why}", line=line, why=b["fallback"]) if b.get("fallback") else line
    if b.get("engine") == "ollama":
        return M("Ollama {model} at {host} ({tps} tokens/s)", model=b.get("model"), host=b.get("host"),
                 tps=b.get("tokens_per_s"))
    if b:
        return M("transformers ({engine} engine) on {device}", engine=b.get("engine"), device=b.get("device"))
    return ""


def label(e: dict) -> str:
    from core import labels

    who = e.get("artifact") or artifact_label(e)
    return M("{evaluation} · {who} · {version}, {split} · n={n}", evaluation=e["id"], who=who,
             version=e["dataset_version_id"], split=labels.SPLITS.get(e["split"], e["split"]), n=e["n"])


def list_evaluations(actor: Principal, run_id: str | None = None, project: str | None = None,
                     limit: int | None = None) -> list[dict]:
    """Newest first: of ``run_id``, of ``project``, or of every project the actor sees (the ``limit``
    newest, when given)."""
    cond, params = projects.where(actor, project)
    if run_id:
        cond, params = cond + " AND run_id = ?", params + [run_id]
    tail = ""
    if limit is not None:
        tail, params = " LIMIT ?", params + [int(limit)]
    got = store.rows(f"SELECT * FROM evaluations WHERE {cond} ORDER BY created_at DESC{tail}", params)
    return [_decode(e) for e in got]


def leaderboard(actor: Principal, dataset_version_id: str | None = None, base_model: str | None = None,
                split: str | None = None, project: str | None = None, *, limit: int | None = None,
                offset: int = 0) -> list[dict]:
    """Evaluations best first (ROUGE-L, then BLEU), optionally of one dataset version / base model / split;
    ``limit`` and ``offset`` give one page of it (``rank`` counts from the top of the whole board)."""
    cond, params = projects.where(actor, project)
    where = [cond]
    for column, value in (("dataset_version_id", dataset_version_id), ("base_model", base_model), ("split", split)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    sql = "SELECT * FROM evaluations WHERE " + " AND ".join(where) + " ORDER BY rouge_l DESC, bleu DESC, created_at DESC"
    if limit is not None:
        sql, params = sql + " LIMIT ? OFFSET ?", params + [int(limit), int(offset)]
    got = store.rows(sql, params)
    return [dict(_decode(e), rank=i) for i, e in enumerate(got, start=int(offset) + 1)]


def board_filters(actor: Principal, project: str | None = None) -> dict:
    """What the leaderboard can be narrowed to (the dataset versions and base models evaluated) and how
    many evaluations there are, in one query."""
    cond, params = projects.where(actor, project)
    got = store.one(f"""SELECT count(*) AS n, list(DISTINCT dataset_version_id ORDER BY dataset_version_id) AS versions,
                               list(DISTINCT base_model ORDER BY base_model) AS bases
                        FROM evaluations WHERE {cond}""", params)
    return {"n": int(got["n"]), "versions": got["versions"] or [], "bases": got["bases"] or []}


def get_evaluation(evaluation_id: str, actor: Principal | None = None) -> dict:
    """An evaluation by id. With ``actor``, one of another project is no evaluation at all."""
    got = _decode(store.one("SELECT * FROM evaluations WHERE id = ?", [evaluation_id]))
    if not got or (actor is not None and not actor.sees(got["project"])):
        raise ValueError(f"no evaluation '{evaluation_id}'")
    return got


def examples(evaluation_id: str) -> list[dict]:
    return store.rows("SELECT * FROM evaluation_examples WHERE evaluation_id = ? ORDER BY idx", [evaluation_id])


# ── comparison, drill-down, export ───────────────────────────────────────────


def _words(text: str) -> list[str]:
    return (text or "").split()


def _norm(word: str) -> str:
    return " ".join(scoring.tokenize(word))


def word_diff(reference: str, prediction: str) -> dict:
    """Reference and prediction as runs of words, marked where they differ (compared the way the scores
    see them: NFC, lower case, punctuation ignored). ``{"reference": [(text, changed)], "prediction": …,
    "same_words": k}``."""
    ref, pred = _words(reference), _words(prediction)
    matcher = difflib.SequenceMatcher(a=[_norm(w) for w in ref], b=[_norm(w) for w in pred], autojunk=False)
    out_ref: list[tuple[str, bool]] = []
    out_pred: list[tuple[str, bool]] = []
    same = 0

    def add(side: list, words: list[str], changed: bool) -> None:
        if not words:
            return
        text = " ".join(words)
        if side and side[-1][1] == changed:
            side[-1] = (side[-1][0] + " " + text, changed)
        else:
            side.append((text, changed))

    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        changed = op != "equal"
        same += 0 if changed else i2 - i1
        add(out_ref, ref[i1:i2], changed)
        add(out_pred, pred[j1:j2], changed)
    return {"reference": out_ref, "prediction": out_pred, "same_words": same}


def compare(a_id: str, b_id: str, actor: Principal | None = None) -> dict:
    """Two evaluations side by side on the examples they share (matched by pair key: the same
    instruction, input and reference): whole-evaluation metrics, the metrics re-scored on the shared
    examples, their deltas (B − A), and every shared example with both predictions and scores."""
    both = {e["id"]: _decode(e) for e in store.rows("SELECT * FROM evaluations WHERE id IN (?, ?)", [a_id, b_id])}
    for wanted in (a_id, b_id):
        if wanted not in both or (actor is not None and not actor.sees(both[wanted]["project"])):
            raise ValueError(f"no evaluation '{wanted}'")
    a, b = both[a_id], both[b_id]
    ex_a: dict = {}
    ex_b: dict = {}
    for e in store.rows("SELECT * FROM evaluation_examples WHERE evaluation_id IN (?, ?) ORDER BY idx", [a_id, b_id]):
        if e["evaluation_id"] == a_id:
            ex_a[e["pair_key"]] = e
        if e["evaluation_id"] == b_id:
            ex_b[e["pair_key"]] = e
    shared = [k for k in ex_a if k in ex_b]
    pairs = []
    for k in shared:
        x, y = ex_a[k], ex_b[k]
        pairs.append({"pair_key": k, "idx_a": x["idx"], "idx_b": y["idx"], "instruction": x["instruction"],
                      "input": x["input"], "reference": x["reference"], "prediction_a": x["prediction"],
                      "prediction_b": y["prediction"], "rouge_l_a": x["rouge_l"], "rouge_l_b": y["rouge_l"],
                      "bleu_a": x["bleu"], "bleu_b": y["bleu"], "delta_rouge_l": y["rouge_l"] - x["rouge_l"]})
    refs = [p["reference"] for p in pairs]
    on_a = scoring.score(refs, [p["prediction_a"] for p in pairs], a["thresholds"])
    on_b = scoring.score(refs, [p["prediction_b"] for p in pairs], b["thresholds"])
    eps = 1e-9
    better = sorted((p for p in pairs if p["delta_rouge_l"] > eps), key=lambda p: -p["delta_rouge_l"])
    worse = sorted((p for p in pairs if p["delta_rouge_l"] < -eps), key=lambda p: p["delta_rouge_l"])
    summary = lambda e: {k: e[k] for k in ("id", "label", "run_id", "base_model", "dataset_version_id", "split",
                                            "n", "bleu", "rouge_l", "passed", "thresholds", "decoding")}
    return {
        "a": summary(a), "b": summary(b),
        "delta": {"bleu": b["bleu"] - a["bleu"], "rouge_l": b["rouge_l"] - a["rouge_l"]},
        "shared": {"n": len(pairs), "a": {"bleu": on_a.bleu, "rouge_l": on_a.rouge_l},
                   "b": {"bleu": on_b.bleu, "rouge_l": on_b.rouge_l},
                   "delta": {"bleu": on_b.bleu - on_a.bleu, "rouge_l": on_b.rouge_l - on_a.rouge_l}},
        "counts": {"better": len(better), "worse": len(worse), "same": len(pairs) - len(better) - len(worse)},
        "better": better, "worse": worse, "pairs": pairs,
    }


def base_counterpart(evaluation_id: str | dict, actor: Principal | None = None) -> dict | None:
    """The latest evaluation of the same base model without an adapter on the same dataset version and split
    (of an evaluation given by id, or as the record a listing returned)."""
    e = evaluation_id if isinstance(evaluation_id, dict) else get_evaluation(evaluation_id, actor)
    return _decode(store.one(
        """SELECT * FROM evaluations WHERE run_id IS NULL AND base_model = ? AND dataset_version_id = ? AND split = ?
           AND id <> ? ORDER BY created_at DESC LIMIT 1""",
        [e["base_model"], e["dataset_version_id"], e["split"], e["id"]]))


CSV_COLUMNS = ["idx", "instruction", "input", "reference", "prediction", "bleu", "rouge_l"]


def examples_csv(evaluation_id: str, actor: Principal | None = None) -> str:
    """Every example of an evaluation as CSV (UTF-8 with a BOM, so that spreadsheet programs read the
    diacritics; a cell that starts like a formula is quoted so that no spreadsheet runs it)."""
    get_evaluation(evaluation_id, actor)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    for ex in examples(evaluation_id):
        writer.writerow([safe_cell(ex[c]) if isinstance(ex[c], str) else ex[c] for c in CSV_COLUMNS])
    return "\ufeff" + buf.getvalue()
