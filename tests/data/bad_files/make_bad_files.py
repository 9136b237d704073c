"""Writes the bad-file corpus in this folder (the files are committed; this records how they were made).

    .venv/bin/python tests/data/bad_files/make_bad_files.py

tests/test_bad_files.py holds the exact import report expected for each file.
"""
from __future__ import annotations

import json
import unicodedata
from pathlib import Path

HERE = Path(__file__).resolve().parent
_TONES = "\u0300\u0301\u0303\u0309\u0323"


def j(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


def pair(i: int, **over) -> dict:
    row = {"instruction": f"Khách hỏi về phí vận chuyển đơn {i}.", "input": "",
           "output": f"Dạ, đơn {i} được miễn phí vận chuyển nội thành ạ."}
    row.update(over)
    return row


def lines(*rows) -> str:
    return "".join((r if isinstance(r, str) else j(r)) + "\n" for r in rows)


def cp1258(text: str) -> bytes:
    out = []
    for ch in unicodedata.normalize("NFC", text):
        parts = unicodedata.normalize("NFD", ch)
        tones = "".join(p for p in parts if p in _TONES)
        out.append(unicodedata.normalize("NFC", "".join(p for p in parts if p not in _TONES)) + tones)
    return "".join(out).encode("cp1258")


def main() -> None:
    files: dict[str, bytes] = {}
    files["bom.jsonl"] = b"\xef\xbb\xbf" + lines(pair(1), pair(2), pair(3)).encode()
    files["crlf.jsonl"] = (lines(pair(1), pair(2), '{"instruction": "Hỏi", "output": ', pair(4))
                           .replace("\n", "\r\n").encode())
    nfc = pair(1, output="Hợp đồng được gia hạn tự động mỗi năm.")
    nfd = {k: unicodedata.normalize("NFD", v) for k, v in nfc.items()}
    files["nfd.jsonl"] = lines(nfc, pair(2), nfd,
                               {k: unicodedata.normalize("NFD", v) for k, v in pair(3).items()}).encode()
    files["invalid_line.jsonl"] = lines(pair(1), '{"instruction": "Hỏi phí", "output": "Dạ"', pair(3),
                                        '{"instruction": "Hỏi", "output": "Dạ",}', "xin chào").encode()
    files["missing_field.jsonl"] = lines(pair(1), {"instruction": "Chỉ có câu hỏi", "input": ""},
                                         {"input": "ngữ cảnh", "output": "Chỉ có câu trả lời"}, pair(4)).encode()
    files["cp1258.jsonl"] = cp1258(lines(pair(1), pair(2)))
    files["utf16.jsonl"] = lines(pair(1), pair(2)).encode("utf-16")
    files["empty.jsonl"] = b""
    files["array.jsonl"] = ("[\n  " + ",\n  ".join(j(r) for r in (pair(1), pair(2), {"instruction": "Thiếu"}, pair(4)))
                            + "\n]\n").encode()
    files["huge_line.jsonl"] = lines(pair(1), pair(2, output="Dạ. " * 10_000), pair(3)).encode()
    files["numbers.jsonl"] = lines(pair(1), pair(2, output=42), pair(3, instruction=3.5), pair(4, input=None),
                                   pair(5, output=["a", "b"]), pair(6, input=7)).encode()
    files["whitespace_output.jsonl"] = lines(pair(1), pair(2, output="   \t  "), pair(3, output="\u00a0\u200b\n"),
                                             pair(4, output="  Dạ,   có   ạ.  "), pair(5, instruction="\n\n")).encode()
    files["mixed_fields.jsonl"] = lines(
        pair(1), {"question": "Phí đổi trả là bao nhiêu?", "answer": "Dạ, miễn phí trong 7 ngày."},
        {"prompt": "Giờ mở cửa?", "context": "Cửa hàng Quận 1", "response": "Dạ, từ 8 giờ đến 22 giờ."},
        {"Question": "Có giao hàng tỉnh không?", "Answer": "Dạ, có ạ."}).encode()
    files["multiline.csv"] = ("\ufeffinstruction,input,output\r\n"
                              "Tóm tắt điều khoản,\"ĐIỀU 1: Phạm vi\r\nĐIỀU 2: Thời hạn\",\"Hai điều: phạm vi và thời hạn.\"\r\n"
                              "Giải thích phí,,\r\n"
                              "\"Câu hỏi có dấu phẩy, và \"\"ngoặc kép\"\"\",,Dạ có ạ.\r\n"
                              "Thừa cột,a,b,c\r\n").encode()
    files["blank_lines.jsonl"] = ("\n" + lines(pair(1)) + "\n   \n" + lines(pair(2)) + "\n").encode()
    files["not_object.jsonl"] = lines(pair(1), '"chỉ là một chuỗi"', '["instruction", "output"]', "null").encode()
    files["exact_duplicates.jsonl"] = lines(pair(1), pair(2), pair(1), pair(1),
                                            pair(2, output=pair(2)["output"].upper())).encode()
    files["broken_array.json"] = ("[\n" + j(pair(1)) + ",\n" + j(pair(2))[:-1] + "\n]\n").encode()
    for name, data in files.items():
        (HERE / name).write_bytes(data)
        print(f"{name:<26} {len(data):>7} bytes")


if __name__ == "__main__":
    main()
