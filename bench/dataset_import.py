"""Bulk import of a large Vietnamese JSONL: the studio's DuckDB path against the same pipeline in pandas.

    .venv/bin/python bench/dataset_import.py                 # 1M pairs (~430 MB)
    .venv/bin/python bench/dataset_import.py --rows 3400000  # Bactrian-X's Vietnamese part, RSS bounded
    .venv/bin/python bench/dataset_import.py --rows 200000 --skip-pandas

Generates the file in a temporary folder (not the repository): instruction/input/output pairs made of
Vietnamese words, with ~1 % bad lines (invalid JSON, missing field, numbers, not an object), ~2 % NFD
copies and ~3 % exact copies of earlier rows, whitespace junk (double spaces, zero-width spaces, CRLF,
trailing spaces) and blank lines. Then, each in its own process with a fresh VITUNE_HOME:

* studio: ``core.datasets.importer.import_files`` (the automatic bulk path: validate with line numbers, clean,
  dedup, split, write Parquet, record the version), its per-stage timings printed;
* pandas: read_json(lines=True) in chunks (a chunk with a bad line is parsed line by line), the same
  clean-up with unicodedata/re through ``Series.map``, drop_duplicates exact and normalised, a seeded
  split, to_parquet.

Wall time and peak RSS (psutil, every 0.1 s, the process and its children) of each, with the load
average before and after. Targets for 1M pairs on the 2-core machine: ≤ 20 s, ≤ 1.5 GB RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

WORDS = ("khách hàng hợp đồng dịch vụ thanh toán bảo hành sản phẩm yêu cầu hỗ trợ điều khoản thời hạn "
         "giao hàng đổi trả hoá đơn tài khoản mật khẩu ngân hàng chuyển khoản phí lãi suất vay vốn "
         "bên mua bên bán trách nhiệm bồi thường vi phạm chấm dứt gia hạn phụ lục chữ ký công chứng "
         "xin chào cảm ơn quý khách vui lòng liên hệ tổng đài nhân viên kiểm tra thông tin đơn hàng "
         "của tôi bạn chúng em anh chị được không như thế nào bao lâu ở đâu tại sao khi nào có thể "
         "ngày tháng năm số lượng giá tiền đồng Việt Nam Hà Nội Thành phố Hồ Chí Minh Đà Nẵng "
         "quy định pháp luật nghị định thông tư điều khoản mục chương luật dân sự thương mại").split()
QUESTIONS = ("Làm thế nào để", "Tôi muốn biết", "Xin hỏi", "Cho tôi hỏi về", "Giải thích", "Tóm tắt",
             "Vì sao", "Khi nào thì", "Quy trình", "Điều kiện để")


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(WORDS, k=n))


def generate(path: Path, rows: int, seed: int = 7) -> dict:
    """Write ``rows`` non-blank lines of JSONL; returns what was planted (for the printout)."""
    rng = random.Random(seed)
    planted = {"bad": 0, "nfd": 0, "exact": 0, "junk": 0, "blank": 0}
    recent: list[dict] = []
    with open(path, "w", encoding="utf-8", newline="") as fh:
        buf = []
        for i in range(rows):
            r = rng.random()
            if r < 0.01:
                planted["bad"] += 1
                kind = rng.randrange(4)
                line = ['{"instruction": "Hỏi", "output": "Dạ"', '{"instruction": "Hỏi về phí"}',
                        '{"instruction": "Số", "input": "", "output": 12345}', '["không", "phải", "object"]'][kind]
            elif r < 0.03 and recent:
                planted["nfd"] += 1
                row = rng.choice(recent)
                line = json.dumps({k: unicodedata.normalize("NFD", v) for k, v in row.items()}, ensure_ascii=False)
            elif r < 0.06 and recent:
                planted["exact"] += 1
                line = json.dumps(rng.choice(recent), ensure_ascii=False)
            else:
                row = {"instruction": f"{rng.choice(QUESTIONS)} {_sentence(rng, rng.randint(6, 14))}?",
                       "input": _sentence(rng, rng.randint(10, 40)) if rng.random() < 0.4 else "",
                       "output": ". ".join(_sentence(rng, rng.randint(8, 18)).capitalize()
                                           for _ in range(rng.randint(2, 5))) + "."}
                if rng.random() < 0.08:
                    planted["junk"] += 1
                    row["output"] = "  " + row["output"].replace(" ", "  ", 2).replace(". ", ".\r\n", 1) + "\u200b "
                if len(recent) < 5000:
                    recent.append(row)
                else:
                    recent[rng.randrange(5000)] = row
                line = json.dumps(row, ensure_ascii=False)
            buf.append(line)
            if rng.random() < 0.002:
                planted["blank"] += 1
                buf.append("")
            if len(buf) >= 50_000:
                fh.write("\n".join(buf) + "\n")
                buf = []
        if buf:
            fh.write("\n".join(buf) + "\n")
    return planted


# ── the two pipelines, each run in a child process ───────────────────────────


def watch_threads(seen: dict, stop: threading.Event) -> None:
    """The CPU seconds of every thread of this process, sampled every 0.2 s (DuckDB's worker threads end
    with their connection, so they are read while they run)."""
    import psutil

    me = psutil.Process()
    while not stop.wait(0.2):
        for t in me.threads():
            seen[t.id] = max(seen.get(t.id, 0.0), t.user_time + t.system_time)


def child_studio(path: str) -> dict:
    from core.access.principal import operator
    from core.datasets import importer

    seen: dict = {}
    stop = threading.Event()
    watcher = threading.Thread(target=watch_threads, args=(seen, stop), daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    version, report = importer.import_files([path], "bench-import", actor=operator(), bulk=True)
    wall = time.perf_counter() - t0
    stop.set()
    watcher.join()
    return {"wall_s": wall, "rows_read": report.rows_read, "rows_kept": report.rows_kept,
            "rejected": report.rows_rejected, "dup_exact": report.duplicates_exact,
            "dup_norm": report.duplicates_normalized, "normalized": report.normalized,
            "train": version["rows_train"], "test": version["rows_test"], "timings": report.bulk.get("seconds", {}), "spilled_mb": report.bulk.get("spilled_mb"),
            "engine": report.files[0].get("engine", "python"),
            "thread_cpu_s": sorted((round(v, 1) for v in seen.values() if v >= 0.5), reverse=True)}


def child_pandas(path: str, out: str) -> dict:
    import re

    import pandas as pd

    spaces = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u3000]+")
    invisible = re.compile(r"[\u200b\u200c\u200d\u2060\ufeff]")
    blank = re.compile(r"\n{3,}")

    def clean(text: str) -> str:
        text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
        text = invisible.sub("", text)
        return blank.sub("\n\n", "\n".join(spaces.sub(" ", ln).strip() for ln in text.split("\n"))).strip()

    times: dict[str, float] = {}
    t0 = last = time.perf_counter()

    def stage(label: str) -> None:
        nonlocal last
        times[label] = round(time.perf_counter() - last, 3)
        last = time.perf_counter()

    frames, rejected = [], 0
    with open(path, encoding="utf-8") as fh:
        while True:
            lines = [ln for ln in (fh.readline() for _ in range(100_000)) if ln]
            if not lines:
                break
            body = [ln for ln in lines if ln.strip()]
            try:
                df = pd.read_json(__import__("io").StringIO("".join(body)), lines=True, dtype=False)
                if not {"instruction", "output"} <= set(df.columns):
                    raise ValueError
            except ValueError:  # a bad line: this chunk line by line
                recs = []
                for ln in body:
                    try:
                        obj = json.loads(ln)
                    except ValueError:
                        obj = None
                    recs.append(obj if isinstance(obj, dict) else {})
                df = pd.DataFrame.from_records(recs, columns=["instruction", "input", "output"])
            df = df.reindex(columns=["instruction", "input", "output"])
            df["input"] = df["input"].fillna("")
            ok = df["instruction"].map(lambda v: isinstance(v, str)) & df["output"].map(lambda v: isinstance(v, str)) \
                & df["input"].map(lambda v: isinstance(v, str))
            rejected += int((~ok).sum())
            frames.append(df[ok])
    df = pd.concat(frames, ignore_index=True)
    del frames
    stage("read + validate")
    raw = df.copy()
    for k in ("instruction", "input", "output"):
        df[k] = df[k].map(clean)
    keep = (df["instruction"] != "") & (df["output"] != "")
    rejected += int((~keep).sum())
    df, raw = df[keep], raw[keep]
    normalized = int((df != raw).any(axis=1).sum())
    stage("clean (NFC, whitespace)")
    exact = raw.duplicated()
    key = df.apply(lambda c: c.str.lower())
    norm = key.duplicated() & ~exact
    kept = df[~(exact | norm)]
    stage("dedup")
    test = kept.sample(n=max(1, round(len(kept) * 0.1)), random_state=42)
    train = kept.drop(test.index)
    Path(out).mkdir(parents=True, exist_ok=True)
    train.to_parquet(Path(out) / "train.parquet")
    test.to_parquet(Path(out) / "test.parquet")
    stage("split + to_parquet")
    return {"wall_s": time.perf_counter() - t0, "rows_read": len(raw) + rejected, "rows_kept": len(kept),
            "rejected": rejected, "dup_exact": int(exact.sum()), "dup_norm": int(norm.sum()), "normalized": normalized,
            "train": len(train), "test": len(test), "timings": times, "engine": "pandas"}


def explain(path: Path) -> None:
    """Where the per-line SQL spends its time: EXPLAIN ANALYZE on the first 100k lines, one thread."""
    import pyarrow as pa

    sys.path.insert(0, str(REPO))
    from core import store
    from core.datasets import bulk

    with store.scratch(threads=1) as con:  # the importer's own in-memory database, one thread for the profile
        _explain(con, path, bulk, pa)


def _explain(con, path: Path, bulk, pa) -> None:
    import re

    con.execute(bulk._MACROS)
    con.execute(bulk._PARSED)
    batches, n = [], 0
    for batch in bulk._Lines(path, None).batches():
        batches.append(batch.slice(0, 100_000 - n))
        n += batches[-1].num_rows
        break
    src = pa.Table.from_batches([b for b in batches]).combine_chunks()  # noqa: F841 (read by DuckDB)
    con.execute("CREATE TABLE lines AS SELECT * FROM src")
    out = con.execute("EXPLAIN ANALYZE " + bulk._parse_sql(0, "x", {}).replace("FROM src", "FROM lines")
                      ).fetchall()[0][1]
    print(f"\nper-line SQL on the first {n:,} lines, one thread (operator: seconds, what it computes):")
    for block in out.split("╭─")[1:]:
        name = block.split("─")[0].strip()
        times = re.findall(r"([\d.]+(?:ms|s|µs))\s*│", block)
        what = " ".join(e for e in re.findall(r"│\s*(?:Projections:|Expression:)?\s*(.*?)\s*│", block)
                        if e and not re.match(r"^[\d,]+ rows", e))
        if times and times[-1] not in ("0µs", "0.0ms"):
            print(f"  {name:<12} {times[-1]:>8}  {what[:110]}")


# ── measuring ────────────────────────────────────────────────────────────────


def measure(args: list[str], env: dict) -> tuple[dict, float]:
    """Run a child; its result and the peak RSS (MiB) of it and its children, sampled every 0.1 s."""
    import psutil

    proc = subprocess.Popen([sys.executable, __file__, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    peak = [0.0]
    done = threading.Event()

    def watch() -> None:
        try:
            parent = psutil.Process(proc.pid)
        except psutil.Error:
            return
        while not done.is_set():
            try:
                total = sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])
                peak[0] = max(peak[0], total / 1024**2)
            except psutil.Error:
                pass
            done.wait(0.1)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    out, err = proc.communicate()
    done.set()
    thread.join()
    if proc.returncode != 0:
        sys.exit(f"{args[1]} failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1]), peak[0]


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.path.insert(0, str(REPO))
        kind, path = sys.argv[2], sys.argv[3]
        result = child_studio(path) if kind == "studio" else child_pandas(path, sys.argv[4])
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        result["cpu_s"] = usage.ru_utime + usage.ru_stime  # all threads of the process
        print(json.dumps(result, ensure_ascii=False))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="non-blank lines to generate (default 1M)")
    ap.add_argument("--skip-pandas", action="store_true", help="only the studio's import")
    ap.add_argument("--explain", action="store_true",
                    help="also print DuckDB's EXPLAIN ANALYZE of the per-line SQL on the first 100k lines, one thread")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (the file and both outputs)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="vitune-bench-import-"))
    src = tmp / "pairs.jsonl"
    t0 = time.perf_counter()
    planted = generate(src, args.rows)
    size = src.stat().st_size
    print(f"generated {args.rows:,} lines, {size / 1024**2:,.0f} MiB in {time.perf_counter() - t0:.0f} s "
          f"(planted: {planted})", flush=True)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}  ({os.cpu_count()} cores)", flush=True)

    results = []
    env = dict(os.environ, VITUNE_HOME=str(tmp / "home"), PYTHONPATH=str(REPO))
    res, rss = measure(["--child", "studio", str(src)], env)
    results.append(("studio (DuckDB SQL)", res, rss))
    print(f"studio done: {res['wall_s']:.1f} s, {rss:,.0f} MiB", flush=True)
    if not args.skip_pandas:
        res, rss = measure(["--child", "pandas", str(src), str(tmp / "pandas")], env)
        results.append(("pandas", res, rss))
        print(f"pandas done: {res['wall_s']:.1f} s, {rss:,.0f} MiB", flush=True)
    load_after = os.getloadavg()

    print()
    print(f"{'pipeline':<22} {'wall s':>7} {'CPU s':>6} {'peak RSS MiB':>13} {'read':>10} {'kept':>10} {'rejected':>9} "
          f"{'dup exact':>10} {'dup norm':>9} {'normalised':>11} {'train':>9} {'test':>8}")
    for label, r, rss in results:
        print(f"{label:<22} {r['wall_s']:7.1f} {r['cpu_s']:6.1f} {rss:13,.0f} {r['rows_read']:10,} {r['rows_kept']:10,} "
              f"{r['rejected']:9,} {r['dup_exact']:10,} {r['dup_norm']:9,} {r['normalized']:11,} "
              f"{r['train']:9,} {r['test']:8,}")
    for label, r, _ in results:
        print(f"{label} stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in r["timings"].items())
              + (f"; spilled {r['spilled_mb']:,.0f} MB" if r.get("spilled_mb") is not None else ""))
    for label, r, _ in results:
        if r.get("thread_cpu_s"):
            print(f"{label} CPU seconds per thread (≥ 0.5 s): {r['thread_cpu_s']} — with a free core per "
                  f"thread the wall time would approach the busiest thread's")
    if args.explain:
        os.environ["VITUNE_HOME"] = str(tmp / "home")  # the scratch database spills under the bench's own home
        explain(src)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in load_after)}")
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"kept: {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
