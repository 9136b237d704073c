"""A corpus of bad files for every command and page that takes a file: wrong types, empty, binary, huge
lines, a zip-bomb docx, a 10,000-page PDF, bad GGUFs, bad YAML configs, broken Parquet and ``datasets``
folders. ``build(folder)`` writes them (some are large or slow to make, so they are made at test time,
not committed) and returns {name: path}; ``tests/test_bad_input.py`` runs them through the CLI and
``tests/test_bad_input_browser.py`` through the pages in Chromium."""
from __future__ import annotations

import io
import json
import os
import struct
import zipfile
from pathlib import Path

PAIR = {"instruction": "Khách hỏi về phí vận chuyển.", "input": "", "output": "Dạ, nội thành được miễn phí ạ."}


def _jsonl(rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows)


def _pdf(pages: int) -> bytes:
    import pypdf

    writer = pypdf.PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=72, height=72)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _docx_bomb(uncompressed: int) -> bytes:
    """A .docx-shaped zip whose document.xml inflates to ``uncompressed`` bytes (it compresses ~1000:1)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/'
                   'package/2006/content-types"/>')
        with z.open("word/document.xml", "w", force_zip64=True) as fh:
            block = b" " * (1024 * 1024)
            for _ in range(uncompressed // len(block)):
                fh.write(block)
    return out.getvalue()


def _gguf_header_only() -> bytes:
    """The GGUF magic and version, a tensor count and nothing after it (a truncated download)."""
    return b"GGUF" + struct.pack("<I", 3) + struct.pack("<Q", 1) + struct.pack("<Q", 50)


def _parquet(folder: Path) -> tuple[bytes, bytes]:
    """(a Parquet file of the wrong columns, a valid Parquet file cut in half)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    wrong = folder / "_wrong.parquet"
    pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), wrong)
    good = folder / "_good.parquet"
    pq.write_table(pa.table({k: [PAIR[k]] * 50 for k in PAIR}), good)
    data = good.read_bytes()
    wrong_bytes = wrong.read_bytes()
    wrong.unlink()
    good.unlink()
    return wrong_bytes, data[: len(data) // 2]


def _parquet_bomb(folder: Path) -> bytes:
    """2.3 KB of Parquet that decode to 18.6 GB (tests/test_large_files.py: ``parquet_bomb``)."""
    from tests.test_large_files import parquet_bomb

    path = parquet_bomb(folder / "bomb-tmp.parquet")
    data = path.read_bytes()
    path.unlink()
    return data


def build(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes | str] = {
        # datasets
        "empty.jsonl": b"",
        "binary.jsonl": os.urandom(4096),
        "binary.csv": bytes(range(256)) * 16,
        "nul_bytes.csv": b"instruction,input,output\nC\x00au,,Tr\x00a\n",
        "png_as.csv": b"\x89PNG\r\n\x1a\n" + os.urandom(512),
        "one_huge_line.jsonl": '{"instruction": "' + "a" * (3 * 1024 * 1024) + '", "output": "b"}\n'
                                + _jsonl([PAIR]),
        "huge_line.csv": "instruction,input,output\n" + "x" * (5 * 1024 * 1024) + ",,y\nHỏi,,Đáp\n",
        "only_bad_rows.jsonl": _jsonl(["{nope", "[1, 2]", {"instruction": "x"}]),
        "some_bad_rows.jsonl": _jsonl([PAIR, "{nope", {**PAIR, "output": "Dạ, có ạ."}]),
        "no_header.csv": "",
        "header_only.csv": "instruction,input,output\n",
        "not_json.json": "this is not JSON at all\n",
        "unclosed_array.json": '[{"instruction": "a", "output": "b"},',
        "deep_nesting.jsonl": "[" * 100_000 + "\n" + _jsonl([PAIR]),
        "cp1258_no_flag.jsonl": json.dumps(PAIR, ensure_ascii=False).encode("cp1258", errors="replace")
                                .replace(b"?", b"\xe0"),
        "unknown_type.xlsx": b"PK\x03\x04 not really a spreadsheet",
        "not_parquet.parquet": b"PAR1 this is text pretending to be parquet",
        # documents for generation
        "empty.txt": b"",
        "not_utf8.txt": "Quy trình chăm sóc khách hàng".encode("cp1258", errors="replace").replace(b"?", b"\xe0"),
        "not_a_docx.docx": b"just text, no zip",
        "bomb.docx": _docx_bomb(300 * 1024 * 1024),
        "not_a_pdf.pdf": b"%PDF-1.7 and then nothing a PDF reader understands",
        "pages_10000.pdf": _pdf(10_000),
        "image.png.md": b"\x89PNG\r\n\x1a\n" + os.urandom(256),
        "no_text.pdf": _pdf(1),
        "unknown.doc": b"\xd0\xcf\x11\xe0 an old Word file",
        # GGUFs
        "notagguf.gguf": b"this is not a GGUF file\n",
        "empty.gguf": b"",
        "truncated.gguf": _gguf_header_only(),
        # training configs
        "bad_syntax.yaml": "lora_r: [16\nlearning_rate: 2e-4\n",
        "a_list.yaml": "- lora_r\n- 16\n",
        "unknown_key.yaml": "lora_rank: 16\n",
        "wrong_type.yaml": "lora_r: sixteen\n",
        "bad_value.yaml": "lora_r: -4\nmax_steps: 10\n",
        "binary.yaml": os.urandom(1024),
        # score inputs and prompt templates
        "score_missing.jsonl": _jsonl([{"reference": "a"}, {"prediction": "b"}]),
        "score_not_text.jsonl": _jsonl([{"reference": 1, "prediction": ["x"]}]),
        "prompt_without_chunk.txt": "Hãy viết {n_pairs} cặp câu hỏi.",
        "prompt_bad_brace.txt": "Đoạn văn: {chunk} {oops",
    }
    wrong_parquet, cut_parquet = _parquet(folder)
    files["wrong_columns.parquet"] = wrong_parquet
    files["truncated.parquet"] = cut_parquet
    files["bomb.parquet"] = _parquet_bomb(folder)
    out: dict[str, Path] = {}
    for name, data in files.items():
        path = folder / name
        if isinstance(data, str):
            path.write_text(data, encoding="utf-8")
        else:
            path.write_bytes(data)
        out[name] = path
    # folders: not a `datasets` folder, a broken one, and an empty one
    plain = folder / "plain_folder"
    plain.mkdir(exist_ok=True)
    (plain / "notes.txt").write_text("no arrow files here", encoding="utf-8")
    out["plain_folder"] = plain
    broken = folder / "broken_hf"
    (broken / "train").mkdir(parents=True, exist_ok=True)
    (broken / "dataset_dict.json").write_text("{not json", encoding="utf-8")
    out["broken_hf"] = broken
    outside = folder / "hf_outside"   # its state.json names a file outside it
    outside.mkdir(exist_ok=True)
    (outside / "state.json").write_text(json.dumps({"_data_files": [{"filename": "../outside.arrow"}]}),
                                        encoding="utf-8")
    out["hf_outside"] = outside
    arrow = folder / "bad_arrow"
    arrow.mkdir(exist_ok=True)
    (arrow / "data-00000-of-00001.arrow").write_bytes(b"not an arrow stream")
    out["bad_arrow"] = arrow
    return out
