"""Bad input never reaches a traceback (issue 13): the bad-file corpus (tests/bad_corpus.py) and bad
arguments (unknown ids, non-numeric job ids, names with ``../``, a folder where a file is expected, a
missing file, an output path in a missing folder) through every CLI command that takes a file or an id.

Each case asserts the exit code (non-zero for a refusal, 0 where a file's valid rows were kept, with the
count kept), that no "Traceback" and no "an unexpected error" (the edge in ``core.cli.main`` that logs
to data/logs/errors.log) appears anywhere, that the error log did not grow, that a refusal created no
dataset version and queued no job, and the message: the exact last line of stderr, naming the file
(and line) or the id.

Every case is a real ``python -m core`` process against one studio home (the bundled samples and a
version whose review sample is open), built once for the module like the corpus; no case trains a model
(an unknown run id is the bad input)."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from core import errors, paths, store
from core.datasets import versions
from tests import bad_corpus
from tests.conftest import OPERATOR, cli, tiny_pairs, write_jsonl


# ── the studio the cases run against ─────────────────────────────────────────


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The bad-file corpus, built once for the module (the 10,000-page PDF and the zip bomb take seconds)."""
    folder = tmp_path_factory.mktemp("bad-corpus")
    files = bad_corpus.build(folder)
    assert len(files) >= 40
    return folder


@pytest.fixture(scope="module")
def studio(tmp_path_factory) -> dict:
    """One studio home for every case: the bundled samples (reviewed by construction) and a version of 30
    pairs whose review sample is open (the review cases decide nothing: every decision they try is bad)."""
    home = tmp_path_factory.mktemp("bad-input-home")
    out = cli("dataset", "import-samples", home=home).stdout.split()
    pairs = write_jsonl(home / "pairs.jsonl", tiny_pairs(30))
    pending = json.loads(cli("dataset", "import", str(pairs), "--name", "pending", "--json",
                             home=home).stdout)["dataset_version"]
    review = json.loads(cli("review", "start", pending, "--json", home=home).stdout)
    outputs = home / "outputs"
    outputs.mkdir()
    doc = home / "doi_tra.md"   # a good document, for the cases whose bad input is something else
    doc.write_text("Quy trình đổi trả hàng trong 7 ngày.\n\nKhách giữ hóa đơn và hộp sản phẩm.\n", encoding="utf-8")
    yield {"home": home, "sample": out[0], "pending": pending, "review": review["review"],
           "n": review["sample_size"], "tmp": outputs, "doc": doc}
    _end_workers(home)


def _end_workers(root: Path) -> None:
    """End the worker (and llama.cpp server) processes this module's studios started, if any is left:
    only those whose command line names a folder under ``root``."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = b" ".join(args).decode(errors="replace")
        if ("core.worker" in text or "llama_cpp.server" in text) and str(root) in text:
            try:
                os.kill(int(proc.name), signal.SIGTERM)
            except OSError:
                pass


# ── the cases ────────────────────────────────────────────────────────────────


@dataclass
class Case:
    id: str
    argv: list[str]            # {corpus} {tmp} {doc} {sample} {pending} {review} {n} {model} are filled in
    code: int                  # the exit code
    message: str = ""          # the last line of stderr, exactly ("" for a success); a regex when ``regex``
    kept: int | None = None    # rows kept: the import succeeded with this many (its version holds them)
    rejected: list[str] = field(default_factory=list)   # the report's lines naming each rejected row
    regex: bool = False
    queues_job: bool = False   # the refusal comes from a worker: a job was queued (and failed)


def _imp(name: str, message: str, **kw) -> Case:
    """``dataset import FILE`` refused with one line."""
    return Case(f"import-{name}", ["dataset", "import", f"{{corpus}}/{name}", "--name", "bad"], 1,
                f"error: {message}", **kw)


def _kept(name: str, kept: int, rejected: list[str], *extra: str, id: str | None = None, **kw) -> Case:
    return Case(id or f"import-{name}-keeps-{kept}", ["dataset", "import", f"{{corpus}}/{name}", "--name", "bad", *extra],
                0, "", kept=kept, rejected=rejected, **kw)


NOT_UTF8 = "not UTF-8 (line {line}, byte {byte}: {why}); name its encoding (--encoding cp1258 for Windows-1258, " \
           "--encoding utf-16) or save it as UTF-8"
NUL = "contains NUL characters (binary data, or a UTF-16 file without its byte-order mark)"
NO_ROWS = "no valid rows were found ({n} of {n} rejected, first: {first}); nothing was imported"
AN_ID = "error: no {what} '{id}'"
GEN = ["generate", "--name", "g", "--local", "--docs"]
CONFIG_HINT = "a training config is YAML, e.g. from `python -m core train --print-config`"

CASES = [
    # ── dataset import: files refused whole, nothing imported ──
    _imp("empty.jsonl", "empty.jsonl: no rows found (the file is empty); nothing was imported"),
    # binary.jsonl and binary.yaml are random bytes: where the first bad one is, and why, differ at each build
    _imp("binary.jsonl", re.escape("binary.jsonl: " + NOT_UTF8).replace(re.escape("{line}"), r"\d+")
         .replace(re.escape("{byte}"), r"\d+").replace(re.escape("{why}"), r"[a-z ]+"), regex=True),
    _imp("binary.csv", "binary.csv: " + NOT_UTF8.format(line=2, byte=128, why="invalid start byte")),
    _imp("png_as.csv", "png_as.csv: " + NOT_UTF8.format(line=1, byte=0, why="invalid start byte")),
    _imp("cp1258_no_flag.jsonl", "cp1258_no_flag.jsonl: " + NOT_UTF8.format(line=1, byte=19,
                                                                           why="invalid continuation byte")),
    _imp("nul_bytes.csv", NO_ROWS.format(n=1, first=f"nul_bytes.csv line 2: field 'instruction' {NUL}"),
         rejected=[f"  nul_bytes.csv:2: field 'instruction' {NUL}"]),
    _imp("only_bad_rows.jsonl", NO_ROWS.format(n=3, first="only_bad_rows.jsonl line 1: invalid JSON (Expecting "
                                                "property name enclosed in double quotes)"),
         rejected=["  only_bad_rows.jsonl:2: not an object with instruction, input and output",
                   "  only_bad_rows.jsonl:3: missing field 'output'"]),
    _imp("no_header.csv", "no_header.csv: no rows found (the file is empty); nothing was imported"),
    _imp("header_only.csv", "header_only.csv: no rows found (nothing but a header or blank lines); nothing was imported"),
    _imp("not_json.json", NO_ROWS.format(n=1, first="not_json.json line 1: invalid JSON (Expecting value)")),
    _imp("unclosed_array.json", "unclosed_array.json: the JSON array is not closed (line 1)"),
    _imp("unknown_type.xlsx", "unknown_type.xlsx: unsupported file type '.xlsx' (JSONL, JSON, CSV, Parquet, or a "
                              "folder saved by `datasets`)"),
    _imp("empty.txt", "empty.txt: unsupported file type '.txt' (JSONL, JSON, CSV, Parquet, or a folder saved by "
                      "`datasets`)"),
    _imp("bomb.parquet", "bomb.parquet: its columns instruction, input, output decode to more than the import limit "
                         "of 2.0 GB (counted from its metadata and dictionaries; nothing was decoded): a compressed or "
                         "dictionary-encoded file much larger than it looks; split it into smaller files"),
    _imp("hf_outside", "hf_outside: '../outside.arrow' leads outside the folder (a folder saved by `datasets` names "
                       "only its own files); nothing was imported"),
    _imp("not_parquet.parquet", "not_parquet.parquet: not a readable Parquet file (Parquet magic bytes not found in "
                                "footer. Either the file is corrupted or this is not a parquet file.)"),
    _imp("truncated.parquet", "truncated.parquet: not a readable Parquet file (Parquet magic bytes not found in "
                              "footer. Either the file is corrupted or this is not a parquet file.)"),
    _imp("wrong_columns.parquet", NO_ROWS.format(n=2, first="wrong_columns.parquet line 1: missing field "
                                                            "'instruction'")),
    _imp("plain_folder", "plain_folder: a folder must be one saved by `datasets` (save_to_disk): no .arrow files"),
    _imp("broken_hf", "broken_hf/dataset_dict.json: invalid JSON at line 1 (Expecting property name enclosed in "
                      "double quotes); not a folder saved by `datasets` (save_to_disk), or a damaged one"),
    _imp("bad_arrow", "bad_arrow/data-00000-of-00001.arrow: not a readable Arrow file (Not an Arrow file)"),
    _imp("missing.jsonl", "{corpus}/missing.jsonl: no such file or folder"),
    # ── dataset import: the valid rows are kept, each bad one named with its line ──
    _kept("some_bad_rows.jsonl", 2, ["  some_bad_rows.jsonl:2: invalid JSON (Expecting property name enclosed in "
                                     "double quotes)"]),
    _kept("some_bad_rows.jsonl", 2, ["  some_bad_rows.jsonl:2: invalid JSON (Expecting property name enclosed in "
                                     "double quotes)"], "--bulk", id="import-some_bad_rows.jsonl-bulk-keeps-2"),
    _kept("one_huge_line.jsonl", 1, ["  one_huge_line.jsonl:1: line too long (3145762 characters, limit 1048576)"]),
    _kept("huge_line.csv", 1, ["  huge_line.csv:2: line too long (5242883 characters, limit 1048576)"]),
    _kept("deep_nesting.jsonl", 1, ["  deep_nesting.jsonl:1: invalid JSON (nested too deeply)"]),
    _kept("deep_nesting.jsonl", 1, ["  deep_nesting.jsonl:1: invalid JSON (nested too deeply)"], "--bulk",
          id="import-deep_nesting.jsonl-bulk-keeps-1"),
    # ── dataset import: bad arguments ──
    Case("import-mix-unknown-version", ["dataset", "import", "{corpus}/some_bad_rows.jsonl", "--name", "m",
                                        "--mix-general", "ds-nope"], 1, AN_ID.format(what="dataset version", id="ds-nope")),
    Case("import-unknown-encoding", ["dataset", "import", "{corpus}/some_bad_rows.jsonl", "--name", "m", "--encoding",
                                     "nope"], 1, "error: unknown encoding 'nope' (e.g. utf-8, utf-16, cp1258)"),
    Case("import-bad-mapping", ["dataset", "import", "{corpus}/some_bad_rows.jsonl", "--name", "m", "--map", "q=nope"],
         1, "error: column mapping 'q=nope': the target must be one of instruction, input, output"),
    Case("project-with-dotdot", ["--project", "../x", "dataset", "list"], 1,
         "error: no project '../x' (see `python -m core projects list`)"),
    # ── train: bad configs, unknown datasets, bad numbers ──
    Case("train-config-bad_syntax", ["train", "--config", "{corpus}/bad_syntax.yaml", "--dataset", "{sample}"], 1,
         "error: {corpus}/bad_syntax.yaml: line 2, column 14: not valid YAML (expected ',' or ']', but got ':')"),
    Case("train-config-a_list", ["train", "--config", "{corpus}/a_list.yaml", "--dataset", "{sample}"], 1,
         "error: {corpus}/a_list.yaml: a training config must be a YAML mapping of settings"),
    Case("train-config-unknown_key", ["train", "--config", "{corpus}/unknown_key.yaml", "--dataset", "{sample}"], 1,
         "error: {corpus}/unknown_key.yaml: unknown training setting(s): lora_rank"),
    Case("train-config-wrong_type", ["train", "--config", "{corpus}/wrong_type.yaml", "--dataset", "{sample}"], 1,
         "error: {corpus}/wrong_type.yaml: lora_r must be a whole number, not 'sixteen'"),
    Case("train-config-bad_value", ["train", "--config", "{corpus}/bad_value.yaml", "--dataset", "{sample}"], 1,
         "error: {corpus}/bad_value.yaml: lora_r must be positive"),
    Case("train-config-binary", ["train", "--config", "{corpus}/binary.yaml", "--dataset", "{sample}"], 1,
         r"error: {corpus}/binary\.yaml: not UTF-8 text \(byte \d+\); " + re.escape(CONFIG_HINT), regex=True),
    Case("train-config-empty", ["train", "--config", "{corpus}/empty.txt", "--dataset", "{sample}"], 1,
         f"error: {{corpus}}/empty.txt: empty, no settings in it; {CONFIG_HINT}"),
    Case("train-config-folder", ["train", "--config", "{corpus}/plain_folder", "--dataset", "{sample}"], 1,
         "error: {corpus}/plain_folder: a folder, not a YAML training config"),
    Case("train-config-missing", ["train", "--config", "{corpus}/missing.yaml", "--dataset", "{sample}"], 1,
         "error: {corpus}/missing.yaml: no such file"),
    # ── sweep: a YAML sweep spec that is no spec, an unknown dataset or sweep; refused before anything is queued ──
    Case("sweep-spec-bad_syntax", ["sweep", "--file", "{corpus}/bad_syntax.yaml", "--dataset", "{sample}"], 1,
         "error: {corpus}/bad_syntax.yaml: line 2, column 14: not valid YAML (expected ',' or ']', but got ':')"),
    Case("sweep-spec-a_list", ["sweep", "plan", "--file", "{corpus}/a_list.yaml", "--dataset", "{sample}"], 1,
         "error: {corpus}/a_list.yaml: a sweep must be a mapping of fields (name, dataset, preset, settings, grid, "
         "runs, evaluate), not list"),
    Case("sweep-spec-unknown_key", ["sweep", "--file", "{corpus}/unknown_key.yaml", "--dataset", "{sample}"], 1,
         "error: {corpus}/unknown_key.yaml: lora_rank: not a sweep field (one of: name, dataset, preset, settings, "
         "grid, runs, evaluate)"),
    Case("sweep-spec-binary", ["sweep", "--file", "{corpus}/binary.yaml", "--dataset", "{sample}"], 1,
         r"error: {corpus}/binary\.yaml: not UTF-8 text \(byte \d+\); a sweep spec is YAML", regex=True),
    Case("sweep-spec-folder", ["sweep", "--file", "{corpus}/plain_folder", "--dataset", "{sample}"], 1,
         "error: {corpus}/plain_folder: a folder, not a sweep spec"),
    Case("sweep-unknown-dataset", ["sweep", "--dataset", "ds-nope", "--grid", "r=8,16"], 1,
         AN_ID.format(what="dataset version", id="ds-nope")),
    Case("sweep-unknown-id", ["sweep", "cancel", "../sweep-nope"], 1, "error: no sweep '../sweep-nope'"),
    Case("train-unknown-dataset", ["train", "--dataset", "ds-nope", "--preset", "quick test (CPU, 20 steps)"], 1,
         AN_ID.format(what="dataset version", id="ds-nope")),
    Case("train-dataset-dotdot", ["train", "--dataset", "../ds", "--preset", "quick test (CPU, 20 steps)"], 1,
         AN_ID.format(what="dataset version", id="../ds")),
    Case("train-negative-max-steps", ["train", "--dataset", "{sample}", "--max-steps", "-5"], 1,
         "error: max_steps must be positive (or -1: train by num_train_epochs), not -5"),
    Case("train-zero-timeout", ["train", "--dataset", "{sample}", "--timeout", "0"], 2,
         "python -m core train: error: argument --timeout: must be a positive number of seconds, not '0'"),
    Case("train-base-model-folder", ["train", "--dataset", "{sample}", "--base-model", "{corpus}/plain_folder"], 1,
         "error: {corpus}/plain_folder: a folder without config.json is not a model (give a model folder, e.g. "
         "{model}, or a model hub name such as unsloth/gemma-4-E4B-it)"),
    # ── review: unknown versions, pairs out of range, bad edits ──
    Case("review-start-unknown", ["review", "start", "ds-nope"], 1, AN_ID.format(what="dataset version", id="ds-nope")),
    Case("review-show-dotdot", ["review", "show", "../../etc/passwd"], 1,
         AN_ID.format(what="dataset version", id="../../etc/passwd")),
    Case("review-decide-unknown", ["review", "decide", "ds-nope", "--item", "1", "--approve"], 1,
         AN_ID.format(what="dataset version", id="ds-nope")),
    Case("review-status-unknown", ["review", "status", "ds-nope"], 1, AN_ID.format(what="dataset version", id="ds-nope")),
    Case("review-decide-no-such-pair", ["review", "decide", "{pending}", "--item", "999", "--approve"], 1,
         "error: review {review} has no pair 999 (1–{n})"),
    Case("review-show-no-such-pair", ["review", "show", "{pending}", "--item", "999"], 1,
         "error: {pending}: no review pair 999"),
    Case("review-edit-too-long", ["review", "decide", "{pending}", "--item", "1", "--edit", "--output", "a" * 40_000], 1,
         "error: the edited pair's 'output' is too long (40000 characters, limit 32000)"),
    Case("review-edit-empty", ["review", "decide", "{pending}", "--item", "1", "--edit", "--output", "   "], 1,
         "error: the edited pair's 'output' is empty"),
    Case("review-decide-reviewed-sample", ["review", "decide", "{sample}", "--item", "1", "--approve"], 1,
         "error: {sample} has no open review sample: start one first"),
    # ── jobs: unknown and non-numeric ids ──
    Case("jobs-cancel-unknown", ["jobs", "cancel", "999"], 1, "error: no job 999"),
    Case("jobs-resume-unknown", ["jobs", "resume", "999"], 1, "error: no job 999"),
    Case("jobs-cancel-not-a-number", ["jobs", "cancel", "abc"], 2, "error: jobs cancel: the job id must be a number, "
                                                                  "not 'abc'"),
    Case("jobs-resume-dotdot", ["jobs", "resume", "../1"], 2, "error: jobs resume: the job id must be a number, "
                                                              "not '../1'"),
    Case("jobs-cancel-superscript", ["jobs", "cancel", "²"], 2, "error: jobs cancel: the job id must be a number, "
                                                                "not '²'"),
    Case("jobs-resume-arabic-digit", ["jobs", "resume", "٣"], 2, "error: jobs resume: the job id must be a number, "
                                                                 "not '٣'"),
    Case("jobs-list-negative-limit", ["jobs", "list", "--limit", "-1"], 2,
         "python -m core jobs: error: argument --limit: must be at least 1, not -1"),
    Case("generate-stop-unknown", ["generate-stop", "999"], 1, "error: no job 999"),
    Case("generate-stop-not-a-number", ["generate-stop", "abc"], 2,
         "python -m core generate-stop: error: argument id: invalid int value: 'abc'"),
    # ── evaluate: unknown evaluations and runs, output paths ──
    Case("evaluate-show-unknown", ["evaluate", "show", "eval-nope"], 1, AN_ID.format(what="evaluation", id="eval-nope")),
    Case("evaluate-report-unknown", ["evaluate", "report", "eval-nope", "--out", "{tmp}/r.html"], 1,
         AN_ID.format(what="evaluation", id="eval-nope")),
    Case("evaluate-csv-unknown", ["evaluate", "csv", "eval-nope", "--out", "{tmp}/r.csv"], 1,
         AN_ID.format(what="evaluation", id="eval-nope")),
    Case("evaluate-compare-unknown", ["evaluate", "compare", "eval-a", "eval-b"], 1,
         AN_ID.format(what="evaluation", id="eval-a")),
    Case("evaluate-unknown-run", ["evaluate", "--run", "run-nope"], 1, AN_ID.format(what="run", id="run-nope")),
    Case("evaluate-base-unknown-dataset", ["evaluate", "--base-model", "{model}", "--dataset", "ds-nope"], 1,
         AN_ID.format(what="dataset version", id="ds-nope")),
    Case("evaluate-report-out-missing-folder", ["evaluate", "report", "eval-nope", "--out", "{tmp}/missing/r.html"], 1,
         "error: cannot write {tmp}/missing/r.html: the folder {tmp}/missing does not exist"),
    Case("evaluate-csv-out-is-folder", ["evaluate", "csv", "eval-nope", "--out", "{corpus}/plain_folder"], 1,
         "error: {corpus}/plain_folder: a folder; give a file name to write"),
    Case("evaluate-report-csv-missing-folder", ["evaluate", "report", "eval-nope", "--out", "{tmp}/r.html", "--csv",
                                                "{tmp}/missing/x.csv"], 1,
         "error: cannot write {tmp}/missing/x.csv: the folder {tmp}/missing does not exist"),
    # ── score ──
    Case("score-missing-field", ["score", "--input", "{corpus}/score_missing.jsonl"], 1,
         "error: {corpus}/score_missing.jsonl:1: field 'prediction' is missing or not text"),
    Case("score-not-text", ["score", "--input", "{corpus}/score_not_text.jsonl"], 1,
         "error: {corpus}/score_not_text.jsonl:1: field 'reference' is missing or not text"),
    Case("score-empty", ["score", "--input", "{corpus}/empty.jsonl"], 1, "error: {corpus}/empty.jsonl: no lines to score"),
    Case("score-binary", ["score", "--input", "{corpus}/binary.jsonl"], 1,
         r"error: {corpus}/binary\.jsonl:\d+: not UTF-8 \(byte \d+: [a-z ]+\); save it as UTF-8", regex=True),
    Case("score-deep-nesting", ["score", "--input", "{corpus}/deep_nesting.jsonl"], 1,
         "error: {corpus}/deep_nesting.jsonl:1: invalid JSON (nested too deeply)"),
    Case("score-folder", ["score", "--input", "{corpus}/plain_folder"], 1,
         "error: {corpus}/plain_folder: a folder, not a JSONL file of reference and prediction"),
    Case("score-missing-file", ["score", "--input", "{corpus}/missing.jsonl"], 1,
         "error: {corpus}/missing.jsonl: no such file"),
    Case("score-threshold-nan", ["score", "--input", "{corpus}/score_missing.jsonl", "--bleu", "nan"], 2,
         "python -m core score: error: argument --bleu: must be between 0 and 1, not 'nan'"),
    # ── modelfile --gguf ──
    Case("modelfile-not-gguf", ["modelfile", "--gguf", "{corpus}/notagguf.gguf"], 1,
         "error: {corpus}/notagguf.gguf: not a GGUF file (it starts with b'this', not b'GGUF'); give the .gguf that "
         "`python -m core export` wrote"),
    Case("modelfile-empty-gguf", ["modelfile", "--gguf", "{corpus}/empty.gguf"], 1,
         "error: {corpus}/empty.gguf: empty (0 bytes); export the run again (`python -m core export --run RUN`)"),
    Case("modelfile-truncated-gguf", ["modelfile", "--gguf", "{corpus}/truncated.gguf"], 1,
         "error: {corpus}/truncated.gguf: truncated: the file ends after its 24-byte header (which announces 1 tensors "
         "and 50 metadata entries); export the run again (`python -m core export --run RUN`)"),
    Case("modelfile-folder", ["modelfile", "--gguf", "{corpus}/plain_folder"], 1,
         "error: {corpus}/plain_folder: a folder, not a GGUF file"),
    Case("modelfile-missing", ["modelfile", "--gguf", "{corpus}/missing.gguf"], 1,
         "error: {corpus}/missing.gguf: no such file"),
    Case("modelfile-name-dotdot", ["modelfile", "--gguf", "{corpus}/truncated.gguf", "--name", "../evil"], 1,
         "error: '../evil' is not a valid Ollama model name: use lower-case letters, digits, '.', '_' and '-', "
         "optionally followed by ':tag'"),
    # ── export, deploy, releases, gate, ask, demo: unknown ids, bad names ──
    Case("export-unknown-run", ["export", "--run", "run-nope"], 1, AN_ID.format(what="run", id="run-nope")),
    Case("deploy-unknown-run", ["deploy", "--run", "run-nope", "--name", "vi-cskh:v1"], 1,
         AN_ID.format(what="run", id="run-nope")),
    Case("deploy-name-dotdot", ["deploy", "--run", "run-nope", "--name", "../evil"], 1,
         "error: '../evil' is not a valid Ollama model name: use lower-case letters, digits, '.', '_' and '-', "
         "optionally followed by ':tag'"),
    Case("releases-rollback-unknown", ["releases", "rollback", "rel-nope"], 1, AN_ID.format(what="release", id="rel-nope")),
    Case("releases-delete-dotdot", ["releases", "delete", "../x"], 1, AN_ID.format(what="release", id="../x")),
    Case("gate-unknown-run", ["gate", "--run", "run-nope"], 2, AN_ID.format(what="run", id="run-nope")),
    Case("ask-unknown-run", ["ask", "hello", "--run", "run-nope"], 1, AN_ID.format(what="run", id="run-nope")),
    Case("demo-revoke-unknown", ["demo", "revoke", "dl-nope"], 1, AN_ID.format(what="demo link", id="dl-nope")),
    # ── generate: documents and prompt templates refused before a job is queued ──
    Case("generate-doc-empty", [*GEN, "{corpus}/empty.txt"], 1, "error: empty.txt: the file is empty"),
    Case("generate-doc-not-utf8", [*GEN, "{corpus}/not_utf8.txt"], 1,
         "error: not_utf8.txt: not UTF-8 text (byte 6: invalid continuation byte); save it as UTF-8 first"),
    Case("generate-doc-png-as-md", [*GEN, "{corpus}/image.png.md"], 1,
         "error: image.png.md: not UTF-8 text (byte 0: invalid start byte); save it as UTF-8 first"),
    Case("generate-doc-not-a-docx", [*GEN, "{corpus}/not_a_docx.docx"], 1,
         "error: not_a_docx.docx: not a readable .docx file (not a zip archive: File is not a zip file)"),
    Case("generate-doc-zip-bomb", [*GEN, "{corpus}/bomb.docx"], 1,
         "error: bomb.docx: unpacks to 300 MB, over the 200 MB limit for a .docx (a zip bomb, or a document to split "
         "into smaller files)"),
    Case("generate-doc-old-word", [*GEN, "{corpus}/unknown.doc"], 1,
         "error: unknown.doc: unsupported document type '.doc' (txt, md, docx or pdf)"),
    Case("generate-doc-folder", [*GEN, "{corpus}/plain_folder"], 1,
         "error: {corpus}/plain_folder: a folder, not a document (give the txt, md, docx or pdf files in it)"),
    Case("generate-doc-missing", [*GEN, "{corpus}/missing.txt"], 1, "error: {corpus}/missing.txt: no such file"),
    Case("generate-prompt-without-chunk", [*GEN, "{doc}", "--prompt-file", "{corpus}/prompt_without_chunk.txt"], 1,
         "error: {corpus}/prompt_without_chunk.txt: the prompt template must contain {{chunk}}, where each document "
         "chunk goes"),
    Case("generate-prompt-empty", [*GEN, "{doc}", "--prompt-file", "{corpus}/empty.txt"], 1,
         "error: {corpus}/empty.txt: the prompt template is empty"),
    Case("generate-prompt-not-utf8", [*GEN, "{doc}", "--prompt-file", "{corpus}/not_utf8.txt"], 1,
         "error: {corpus}/not_utf8.txt: not UTF-8 text (byte 6: invalid continuation byte); save the prompt template "
         "as UTF-8"),
    Case("generate-prompt-folder", [*GEN, "{doc}", "--prompt-file", "{corpus}/plain_folder"], 1,
         "error: {corpus}/plain_folder: a folder, not a prompt template (a UTF-8 text file with {{chunk}})"),
    Case("generate-prompt-missing", [*GEN, "{doc}", "--prompt-file", "{corpus}/missing.txt"], 1,
         "error: {corpus}/missing.txt: no such file"),
    # a stray brace is text: the template is filled by plain replacement, so the request fails only on its endpoint
    Case("generate-prompt-bad-brace-is-text", ["generate", "--name", "g", "--endpoint", "nope", "--docs", "{doc}",
                                               "--prompt-file", "{corpus}/prompt_bad_brace.txt"], 1,
         "error: no generation endpoint named 'nope' (configured: none is configured yet (docs/datasets.md: endpoints))"),
    # ── generate: documents only the worker parses (a PDF's pages); the job fails with the document's reason ──
    Case("generate-doc-not-a-pdf", [*GEN, "{corpus}/not_a_pdf.pdf"], 1,
         r"error: generation job \d+ failed: not_a_pdf\.pdf: not a readable PDF \(PdfStreamError: Stream has ended "
         r"unexpectedly\)", regex=True, queues_job=True),
    Case("generate-doc-10000-pages", [*GEN, "{corpus}/pages_10000.pdf"], 1,
         r"error: generation job \d+ failed: pages_10000\.pdf: 10,000 pages, over the limit of 2,000 pages for a "
         r"document; split it into smaller PDFs", regex=True, queues_job=True),
    Case("generate-doc-no-text-layer", [*GEN, "{corpus}/no_text.pdf"], 1,
         r"error: generation job \d+ failed: no_text\.pdf: no text found \(a scanned PDF\? it has no text layer; OCR "
         r"it first\)", regex=True, queues_job=True),
    # ── audit --csv: output paths ──
    Case("audit-csv-missing-folder", ["audit", "--csv", "{tmp}/missing/audit.csv"], 1,
         "error: cannot write {tmp}/missing/audit.csv: the folder {tmp}/missing does not exist"),
    Case("audit-csv-folder", ["audit", "--csv", "{corpus}/plain_folder"], 1,
         "error: {corpus}/plain_folder: a folder; give a file name to write"),
    Case("audit-csv-under-a-file", ["audit", "--csv", "{doc}/audit.csv"], 1,
         "error: cannot write {doc}/audit.csv: the folder {doc} is a file, not a folder"),
    Case("audit-zero-limit", ["audit", "--limit", "0"], 2,
         "python -m core audit: error: argument --limit: must be at least 1, not 0"),
]


# ── running a case ───────────────────────────────────────────────────────────


def _counts() -> tuple[int, int]:
    with store.connect() as con:
        return (con.execute("SELECT count(*) FROM dataset_versions").fetchone()[0],
                con.execute("SELECT count(*) FROM jobs").fetchone()[0])


def _log_size() -> int:
    path = errors.log_path()
    return path.stat().st_size if path.exists() else 0


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, corpus, studio, monkeypatch):
    home = studio["home"]
    monkeypatch.setenv("VITUNE_HOME", str(home))
    monkeypatch.setenv("VITUNE_SLOTS", "cpu")
    ctx = {**{k: v for k, v in studio.items() if k != "home"}, "corpus": corpus,
           "model": paths.default_base_model_dir()}
    argv = [a.format(**ctx) for a in case.argv]
    before, log_before = _counts(), _log_size()
    proc = cli(*argv, home=home, check=False, timeout=300)
    code, out, err = proc.returncode, proc.stdout, proc.stderr
    shown = f"python -m core {' '.join(a[:80] for a in argv)}\nexit {code}\nstdout:\n{out[-2000:]}\nstderr:\n{err[-2000:]}"
    assert "Traceback" not in out + err, shown
    assert "an unexpected error" not in err, shown
    assert _log_size() == log_before, "the error log grew: " + shown
    assert code == case.code, shown
    for line in case.rejected:
        assert line in out.splitlines(), shown
    after = _counts()
    if case.code != 0:
        last = (err.strip().splitlines() or [""])[-1]
        expected = (case.message.format(**{k: re.escape(str(v)) for k, v in ctx.items()}) if case.regex
                    else case.message.format(**ctx))
        assert (re.fullmatch(expected, last) if case.regex else last == expected), shown
        assert after[0] == before[0], "a refusal created a dataset version: " + shown
        assert after[1] == before[1] + (1 if case.queues_job else 0), shown
    if case.kept is not None:
        assert err == "", shown
        assert f"rows_kept: {case.kept}" in out.splitlines(), shown
        assert f"rows_rejected: {len(case.rejected)}" in out.splitlines(), shown
        found = re.search(r"^dataset version (ds-[0-9a-f]+) ", out, re.M)
        assert found and after[0] == before[0] + 1, shown
        assert versions.get_version(found.group(1), OPERATOR)["rows_total"] == case.kept


def test_there_are_enough_cases_over_every_command():
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)
    commands = {c.argv[0] if not c.argv[0].startswith("--") else c.argv[2] for c in CASES}
    assert {"dataset", "train", "review", "jobs", "evaluate", "score", "export", "modelfile", "deploy", "releases",
            "generate", "generate-stop", "gate", "audit"} <= commands


def test_every_corpus_file_is_used(corpus):
    used = {a.split("/", 1)[1] for c in CASES for a in c.argv if a.startswith("{corpus}/")}
    assert {p.name for p in corpus.iterdir()} - used == set()


def test_a_name_with_dotdot_is_a_label_not_a_path(corpus, studio, monkeypatch):
    """A dataset version's name is only shown, never a path: ``--name ../evil`` keeps the valid rows, and
    the version's files are under the studio's datasets folder, named by its id."""
    monkeypatch.setenv("VITUNE_HOME", str(studio["home"]))
    proc = cli("dataset", "import", str(corpus / "some_bad_rows.jsonl"), "--name", "../evil", home=studio["home"])
    out = proc.stdout
    assert "Traceback" not in out + proc.stderr and "rows_kept: 2" in out.splitlines()
    version_id = re.search(r"^dataset version (ds-[0-9a-f]+) ", out, re.M).group(1)
    version = versions.get_version(version_id, OPERATOR)
    assert version["name"] == "../evil" and version["rows_total"] == 2
    assert (paths.datasets_dir() / version_id).is_dir()
    assert not (studio["home"] / "data" / "evil").exists() and not (studio["home"].parent / "evil").exists()


def test_a_wait_that_times_out_says_the_job_goes_on(home, tmp_path):
    """``--timeout`` reached while the job runs (its endpoint accepts the connection and never answers):
    one line naming the job and how to stop it, not the edge's "unexpected error"; then it is cancelled."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        secrets = home / ".streamlit" / "secrets.toml"
        secrets.parent.mkdir()
        secrets.write_text(f'[endpoints.stuck]\nbase_url = "http://127.0.0.1:{server.getsockname()[1]}/v1"\n'
                           'model = "m"\n', encoding="utf-8")
        doc = tmp_path / "doi_tra.md"
        doc.write_text("Quy trình đổi trả hàng trong 7 ngày.\n", encoding="utf-8")
        try:
            proc = cli("generate", "--docs", str(doc), "--name", "g", "--endpoint", "stuck", "--timeout", "2",
                       home=home, check=False, timeout=300)
            assert "Traceback" not in proc.stdout + proc.stderr
            assert proc.returncode == 1, proc.stderr
            last = proc.stderr.strip().splitlines()[-1]
            got = re.fullmatch(r"error: job (\d+) still (queued|running) after 2 s; it goes on \(`python -m core jobs "
                               r"list` shows it, `python -m core jobs cancel (\d+)` stops it\)", last)
            assert got and got.group(1) == got.group(3), proc.stderr
            assert not errors.log_path().exists()
            cancel = cli("jobs", "cancel", got.group(1), home=home, check=False)
            assert cancel.returncode == 0 and cancel.stdout.strip() == f"job {got.group(1)}: cancelled", cancel.stderr
        finally:
            _end_workers(home)
