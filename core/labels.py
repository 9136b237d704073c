"""The words a page shows for the values the studio stores: a job's state and kind, a review decision, a
split, where a dataset version came from, and the columns of the tables ``core`` builds.

The store keeps the values (``queued``, ``approved``, ``mean_chars``); the CLI prints them as they are;
a page shows ``label(TABLE, value, _)`` or ``columns(rows, _)`` — the value's words in the reader's
language (``core.i18n``). A value no table names is shown as it is.
"""
from __future__ import annotations

from core.i18n import M, render

JOB_STATES = {"queued": M("queued"), "running": M("running"), "succeeded": M("succeeded"), "failed": M("failed"),
              "cancelled": M("cancelled")}
JOB_KINDS = {"train": M("training"), "evaluate": M("evaluation"), "export": M("export"), "preflight": M("preflight"),
             "generate": M("pair generation"), "inference": M("inference (playground)"),
             "judge": M("LLM judge"), "retention": M("general Vietnamese kept (retention)"),
             "quant_cost": M("quantization cost")}
DECISIONS = {"approved": M("approved"), "edited": M("edited"), "rejected": M("rejected"), "pending": M("pending"),
             None: M("pending")}
RELEASE_STATES = {"active": M("active"), "replaced": M("replaced"), "deleted": M("deleted")}
SPLITS = {"train": M("train split"), "test": M("test split")}
VERSION_SOURCES = {"import": M("import"), "generate": M("generated pairs"), "review": M("review edits"),
                   "general": M("general Vietnamese")}
# what a job's progress counts (the ``label`` its worker writes in status.json)
PROGRESS = {"steps": M("steps"), "examples": M("examples"), "chunks": M("chunks"), "done": M("done"),
            "answers": M("answers"),
            "loading the model": M("loading the model"), "serving": M("serving"),
            "loading the merged model": M("loading the merged model"),
            "merged model (transformers)": M("merged model (transformers)"), "GGUF (llama.cpp)": M("GGUF (llama.cpp)"),
            "merging the adapter into the base model": M("merging the adapter into the base model"),
            "converting to GGUF (f16) with llama.cpp": M("converting to GGUF (f16) with llama.cpp"),
            "smoke test in llama.cpp": M("smoke test in llama.cpp"),
            "quantizing to q8_0 with llama.cpp": M("quantizing to q8_0 with llama.cpp"),
            "quantizing to q4_k_m with llama.cpp": M("quantizing to q4_k_m with llama.cpp"),
            "measuring the cost of quantization (perplexity, KL from f16)":
                M("measuring the cost of quantization (perplexity, KL from f16)"),
            "quantization cost": M("quantization cost")}

# the columns of tables that core builds (per-field lengths, a split's rows, an import's bad lines)
COLUMNS = {
    "field": M("field"), "mean_chars": M("mean characters"), "max_chars": M("most characters"),
    "mean_words": M("mean words"), "max_words": M("most words"), "empty": M("empty"),
    "instruction": M("instruction"), "input": M("input"), "output": M("output"), "source": M("source"),
    "file": M("file"), "line": M("line"), "reason": M("reason"), "kind": M("kind"), "id": M("id"),
}


def label(table: dict, value, tr) -> str:
    """``value`` as a page shows it: its words from ``table`` in the reader's language, else as it is."""
    if value in table:
        return render(table[value], tr)
    return "" if value is None else str(value)


def columns(rows: list[dict], tr, values: dict[str, dict] | None = None) -> list[dict]:
    """``rows`` with their keys named in the reader's language (``COLUMNS``); ``values`` maps a key to the
    table its values are named from (e.g. ``{"field": COLUMNS}``: the per-field table names each field)."""
    values = values or {}
    return [{label(COLUMNS, k, tr): (label(values[k], v, tr) if k in values else v) for k, v in row.items()}
            for row in rows]
