"""The job kinds, and where each one's code lives.

Every kind has a **worker-side** module, which runs the job in a worker process (its ``run(job,
job_dir, status, log)`` returns the result; it writes only files in the job folder and imports
nothing of the app side: no store, no DuckDB, no streamlit, no plotly, since a GPU host's worker runs
under the GPU environment alone), and an **app-side** module, which submits the job and, where the
kind has one, ingests what the worker wrote (``ingest(con, job, result)`` when the job succeeded,
``ingest_progress(con, job)`` on every supervisor tick). A *resident* kind (the playground's inference
worker) runs until it is idle; the supervisor starts it at once and evicts it when a queued job needs
its slot.

The worker and the supervisor find a kind's code here by name, so the job queue imports no job kind.
``requires`` lists the packages the worker needs for the kind; ``python -m core.worker
--self-check`` imports them.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    name: str
    worker: str                   # module with run(job, job_dir, status, log) -> dict
    app: str                      # module with submit(...) and, optionally, ingest / ingest_progress
    requires: tuple[str, ...]     # packages the worker imports for this kind
    what: str
    optional: tuple[str, ...] = ()  # needed for some jobs of the kind only (named in the self-check)
    resident: bool = False          # long-lived (an inference worker): starts at once beside the queue's jobs,
                                    # is evicted when a queued job needs its slot
    then: tuple[str, ...] = ()      # app-side modules whose after_ingest(con, job, result) runs in the same
                                    # transaction as the kind's ingest (found by name: the stage that reacts to
                                    # a job imports the job's stage, never the other way round)
    secret: tuple[str, ...] = ()    # config fields kept out of job.json: the worker gets each in its environment
                                    # (``env_var``), never in a file


def env_var(field: str) -> str:
    """The environment variable that carries a kind's secret config field to its worker."""
    return f"VITUNE_JOB_{field.upper()}"


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("train", "core.training.trainer", "core.training.runs",
         ("torch", "transformers", "peft", "trl", "datasets", "pyarrow"),
         "LoRA / QLoRA training (Unsloth on CUDA when installed)",
         then=("core.training.sweeps",)),   # a sweep's run: its evaluation queued as its training is ingested
    Kind("evaluate", "core.evaluation.evaluator", "core.evaluation.evaluations",
         ("torch", "transformers", "peft", "pyarrow", "numpy", "pandas", "rapidfuzz"),
         "batched generation on a held-out split, BLEU and ROUGE-L",
         optional=("llama_cpp", "ollama")),   # an exported GGUF (llama.cpp), an Ollama release (its client)
    Kind("export", "core.deploy.exporter", "core.deploy.exports",
         ("torch", "transformers", "peft", "safetensors", "gguf", "sentencepiece", "llama_cpp"),
         "merge, llama.cpp's GGUF converter, quantization"),
    Kind("preflight", "core.deploy.preflight", "core.deploy.preflights",
         ("torch", "transformers", "llama_cpp", "numpy", "pandas", "rapidfuzz"),
         "golden prompts through llama.cpp against the merged model"),
    Kind("quant_cost", "core.deploy.quant_cost", "core.deploy.quant_costs",
         ("transformers", "llama_cpp", "numpy"),
         "perplexity and KL divergence of an export's quantizations from its f16 (llama.cpp's logits)"),
    Kind("generate", "core.datasets.generation.generator", "core.datasets.generation.generations",
         ("docx", "pypdf"),
         "instruction pairs from raw documents by an OpenAI-compatible LLM",
         optional=("llama_cpp.server",)),   # --local: llama.cpp's server for the default model
    Kind("judge", "core.evaluation.judge_worker", "core.evaluation.judge", (),
         "an LLM judge's 1–5 scores of an evaluation's answers (an endpoint, or the default model)",
         optional=("llama_cpp.server",)),   # the default model as the judge: llama.cpp's server
    Kind("retention", "core.evaluation.retention_worker", "core.evaluation.retention",
         ("torch", "transformers", "peft", "numpy", "pandas", "rapidfuzz"),
         "general Vietnamese, base against tuned: BLEU, ROUGE-L and perplexity of the reference answers",
         optional=("llama_cpp",)),   # a GGUF target
    Kind("inference", "core.playground.server", "core.playground.playground",
         ("torch", "transformers", "peft"),
         "one model served on loopback for the playground", resident=True, secret=("token",)),
)}


class UnknownKind(ValueError):
    pass


def get(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise UnknownKind(f"unknown job kind '{name}' (one of: {', '.join(KINDS)})") from None


def worker_module(name: str):
    """The kind's worker-side module (imported on demand)."""
    return importlib.import_module(get(name).worker)


def app_module(name: str):
    """The kind's app-side module (imported on demand, by the supervisor)."""
    return importlib.import_module(get(name).app)


def then_modules(name: str) -> list:
    """The modules that react to the kind's ingest (``after_ingest``), imported on demand."""
    return [importlib.import_module(m) for m in get(name).then]
