"""LLM-assisted pair generation (the guide's pipeline): raw documents → chunks → an LLM's
instruction/input/output pairs in Vietnamese → validated, de-duplicated → a dataset version.

``submit`` checks the documents and queues a ``generate`` job; the worker calls ``run``: it reads and
chunks the documents, asks an OpenAI-compatible endpoint (any base URL, or llama.cpp's server that it
starts on loopback for the local model) for pairs, parses and validates every answer, retries a
malformed one a bounded number of times, drops duplicates and appends each kept pair to
``generated.jsonl`` in the job folder as it comes. A ``STOP`` file in the folder (``request_stop``)
ends the loop after the current request; what was made is kept. The supervisor calls ``ingest``,
which lands ``generated.jsonl`` as a dataset version through ``core.datasets.import_files``, with the
prompt template (saved as ``prompt.txt`` beside the pairs) and its hash in the version's lineage.

The API key is never written anywhere: the job names an environment variable, which the worker
reads; error texts are scrubbed of the key before they are logged or stored.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import unicodedata
import urllib.error
import urllib.request
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from core import paths

DOC_TYPES = (".txt", ".md", ".markdown", ".docx", ".pdf")
MAX_DOC_BYTES = 50 * 1024**2
PAIRS_FILE = "generated.jsonl"
REJECTS_FILE = "rejects.jsonl"
PROMPT_FILE = "prompt.txt"
STOP_FILE = "STOP"
SERVER_LOG = "llama-server.log"
FIELDS = ("instruction", "input", "output")
MAX_FIELD_CHARS = 32_000

DEFAULT_PROMPT = """Bạn là chuyên gia soạn dữ liệu huấn luyện tiếng Việt cho trợ lý AI của doanh nghiệp.
Đọc đoạn tài liệu dưới đây và tạo {n_pairs} cặp hỏi–đáp mà nhân viên hoặc khách hàng thực sự có thể hỏi.
Chỉ dùng thông tin có trong tài liệu; trả lời đầy đủ, chính xác, bằng tiếng Việt có dấu.

Trả về DUY NHẤT một mảng JSON, không kèm lời giải thích. Mỗi phần tử là một đối tượng có đúng ba khóa:
- "instruction": câu hỏi hoặc yêu cầu (không rỗng)
- "input": ngữ cảnh bổ sung (có thể là chuỗi rỗng "")
- "output": câu trả lời (không rỗng)

Tài liệu:
\"\"\"
{chunk}
\"\"\"
"""

# the JSON schema an answer must meet (also sent to llama.cpp as a grammar when structured output is on)
ANSWER_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {k: {"type": "string"} for k in FIELDS},
        "required": list(FIELDS),
    },
    "minItems": 1,
}


class GenerateError(ValueError):
    """A problem with a request, a document or a backend, stated in one line."""


class DocumentError(GenerateError):
    pass


class AnswerError(ValueError):
    """An LLM answer that holds no valid pair."""


class BackendError(RuntimeError):
    def __init__(self, message: str, fatal: bool = False, status: int | None = None):
        super().__init__(message)
        self.fatal = fatal    # the endpoint refuses every request (bad key, wrong URL or model): stop
        self.status = status


# ── documents ────────────────────────────────────────────────────────────────


def check_document(path: str | Path) -> Path:
    """Cheap checks at submit time: exists, a known type, within the size limit, opens."""
    path = Path(path)
    if not path.is_file():
        raise DocumentError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in DOC_TYPES:
        raise DocumentError(f"{path.name}: unsupported document type '{suffix or '(none)'}' (txt, md, docx or pdf)")
    size = path.stat().st_size
    if size == 0:
        raise DocumentError(f"{path.name}: the file is empty")
    if size > MAX_DOC_BYTES:
        raise DocumentError(f"{path.name}: larger than the {MAX_DOC_BYTES // 1024**2} MB limit for a document")
    if suffix == ".docx":
        _open_docx(path)
    elif suffix == ".pdf":
        _open_pdf(path)
    return path


def _open_docx(path: Path):
    import zipfile

    import docx

    try:
        return docx.Document(str(path))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise DocumentError(f"{path.name}: not a readable .docx file ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # python-docx raises its own PackageNotFoundError and friends
        raise DocumentError(f"{path.name}: not a readable .docx file ({type(exc).__name__}: {exc})") from None


def _open_pdf(path: Path):
    import pypdf

    try:
        reader = pypdf.PdfReader(str(path))
        if reader.is_encrypted:
            try:
                if not reader.decrypt(""):
                    raise DocumentError(f"{path.name}: the PDF is password-protected")
            except DocumentError:
                raise
            except Exception:
                raise DocumentError(f"{path.name}: the PDF is password-protected") from None
        len(reader.pages)
        return reader
    except DocumentError:
        raise
    except Exception as exc:
        raise DocumentError(f"{path.name}: not a readable PDF ({type(exc).__name__}: {exc})") from None


def _decode_text(path: Path) -> str:
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"{path.name}: not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8 first") from None


def read_document(path: str | Path) -> str:
    """The document's text (NFC, unified line breaks); DocumentError with a one-line reason otherwise."""
    path = check_document(path)
    suffix = path.suffix.lower()
    if suffix == ".docx":
        doc = _open_docx(path)
        parts = [p.text for p in doc.paragraphs]
        for table in doc.tables:
            for row in table.rows:
                parts.append(" | ".join(cell.text.strip() for cell in row.cells))
        text = "\n\n".join(parts)
    elif suffix == ".pdf":
        reader = _open_pdf(path)
        pages = []
        for number, page in enumerate(reader.pages, start=1):
            try:
                pages.append(page.extract_text() or "")
            except Exception as exc:
                raise DocumentError(f"{path.name}: page {number} cannot be read ({type(exc).__name__}: {exc})") from None
        text = "\n\n".join(pages)
    else:
        text = _decode_text(path)
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        hint = " (a scanned PDF? it has no text layer; OCR it first)" if suffix == ".pdf" else ""
        raise DocumentError(f"{path.name}: no text found{hint}")
    return text


# ── chunking ─────────────────────────────────────────────────────────────────

_PARA = re.compile(r"\n[ \t]*\n+")
_SENTENCE = re.compile(r"(?<=[.!?…;:])\s+")
_WS = re.compile(r"[ \t\u00a0]+")


def paragraphs(text: str) -> list[str]:
    out = []
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    for para in _PARA.split(text):
        para = "\n".join(_WS.sub(" ", line).strip() for line in para.split("\n")).strip()
        if para:
            out.append(para)
    return out


def _split_long(para: str, max_chars: int) -> list[str]:
    """A paragraph longer than a chunk: by sentences, a sentence longer than a chunk by words."""
    pieces: list[str] = []
    for sentence in _SENTENCE.split(para):
        while len(sentence) > max_chars:
            cut = sentence.rfind(" ", 0, max_chars)
            cut = cut if cut > max_chars // 2 else max_chars
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            pieces.append(sentence)
    out: list[str] = []
    for piece in pieces:
        if out and len(out[-1]) + 1 + len(piece) <= max_chars:
            out[-1] += " " + piece
        else:
            out.append(piece)
    return out


def _tail(text: str, size: int) -> str:
    """The last ``size`` characters of ``text``, starting at a word."""
    if size <= 0:
        return ""
    if len(text) <= size:
        return text
    tail = text[-size:]
    space = tail.find(" ")
    return tail[space + 1:] if 0 <= space < len(tail) - 1 else tail


def chunk_text(text: str, max_chars: int = 1500, overlap: int = 200) -> list[str]:
    """Paragraphs packed into chunks of at most ``max_chars``; each chunk after the first starts with
    up to ``overlap`` characters from the end of the one before (whole paragraphs when they fit, else
    the previous chunk's tail from a word on; none when the next paragraph leaves no room)."""
    if max_chars < 100:
        raise GenerateError("the chunk size must be at least 100 characters")
    if not 0 <= overlap < max_chars // 2:
        raise GenerateError("the overlap must be at least 0 and less than half the chunk size")
    units: list[str] = []
    for para in paragraphs(text):
        # the pieces of a long paragraph leave room for the overlap in front of them
        units.extend([para] if len(para) <= max_chars else _split_long(para, max_chars - overlap - 2))
    chunks: list[str] = []
    current: list[str] = []

    def size(parts: list[str]) -> int:
        return sum(len(p) for p in parts) + 2 * max(len(parts) - 1, 0)

    for unit in units:
        if current and size(current + [unit]) > max_chars:
            chunks.append("\n\n".join(current))
            carried: list[str] = []
            for para in reversed(current):
                if size([para] + carried) > overlap:
                    break
                carried.insert(0, para)
            if not carried and overlap:
                carried = [_tail(current[-1], overlap)]
            while carried and size(carried + [unit]) > max_chars:
                carried.pop(0)
            current = [c for c in carried if c]
        current.append(unit)
    if current:
        chunks.append("\n\n".join(current))
    return chunks


# ── prompts and answers ──────────────────────────────────────────────────────


def check_template(template: str) -> str:
    if not template or not template.strip():
        raise GenerateError("the prompt template is empty")
    if "{chunk}" not in template:
        raise GenerateError("the prompt template must contain {chunk}, where each document chunk goes")
    return template


def render_prompt(template: str, chunk: str, n_pairs: int) -> str:
    # plain replacement, not str.format: a template may show JSON examples with braces
    return check_template(template).replace("{n_pairs}", str(n_pairs)).replace("{chunk}", chunk)


_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)```", re.S)


def _load_json(text: str) -> Any:
    """The first JSON value in the text: whole, inside a ``` fence, or followed by trailing text."""
    text = text.strip()
    if not text:
        raise AnswerError("empty answer")
    candidates = [m.group(1).strip() for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    last = "no JSON array or object found"
    for cand in candidates:
        try:
            return json.loads(cand)
        except json.JSONDecodeError as exc:
            last = f"invalid JSON ({exc.msg} at char {exc.pos})"
        starts = [i for i in (cand.find("["), cand.find("{")) if i >= 0]
        if starts:
            start = min(starts)
            try:
                value, _ = decoder.raw_decode(cand, start)
                return value
            except json.JSONDecodeError as exc:
                last = f"invalid JSON ({exc.msg} at char {exc.pos})"
    raise AnswerError(last)


def parse_answer(text: str) -> tuple[list[dict], list[str]]:
    """Valid pairs in an answer, and the reasons its other items were dropped.

    Raises AnswerError when the answer holds no valid pair (malformed JSON, wrong shape, every item
    invalid)."""
    value = _load_json(text)
    if isinstance(value, dict):
        for key in ("pairs", "data", "items", "examples"):
            if isinstance(value.get(key), list):
                value = value[key]
                break
        else:
            value = [value]
    if not isinstance(value, list):
        raise AnswerError(f"expected a JSON array of objects, got {type(value).__name__}")
    if not value:
        raise AnswerError("the JSON array is empty")
    pairs, problems = [], []
    for number, item in enumerate(value, start=1):
        if not isinstance(item, dict):
            problems.append(f"item {number}: not an object")
            continue
        reason = None
        for name in FIELDS:
            if name not in item:
                reason = f"item {number}: missing field '{name}'"
            elif not isinstance(item[name], str):
                reason = f"item {number}: field '{name}' is not text ({type(item[name]).__name__})"
            elif len(item[name]) > MAX_FIELD_CHARS:
                reason = f"item {number}: field '{name}' is too long"
            if reason:
                break
        if reason is None:
            for name in ("instruction", "output"):
                if not item[name].strip():
                    reason = f"item {number}: field '{name}' is empty"
                    break
        if reason:
            problems.append(reason)
            continue
        pairs.append({k: unicodedata.normalize("NFC", item[k]).strip() for k in FIELDS})
    if not pairs:
        raise AnswerError("; ".join(problems[:5]))
    return pairs, problems


def pair_key(pair: dict) -> str:
    """Two pairs are duplicates when they match after NFC, case folding and whitespace collapsing."""
    parts = [" ".join(unicodedata.normalize("NFC", pair.get(k) or "").casefold().split()) for k in FIELDS]
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


class Deduper:
    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.dropped = 0

    def add(self, pair: dict) -> bool:
        key = pair_key(pair)
        if key in self.seen:
            self.dropped += 1
            return False
        self.seen.add(key)
        return True


def dedup_pairs(pairs: list[dict]) -> tuple[list[dict], int]:
    d = Deduper()
    kept = [p for p in pairs if d.add(p)]
    return kept, d.dropped


# ── the backend: any OpenAI-compatible endpoint ─────────────────────────────


@dataclass
class Backend:
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"   # the NAME of an environment variable; the key itself is never stored
    temperature: float = 0.7
    max_tokens: int = 1024
    timeout_s: float = 300.0
    structured: bool = False              # send the answer's JSON schema (llama.cpp turns it into a grammar)
    price_in_per_mtok: float = 0.0        # cost of a million prompt tokens, for the cost estimate
    price_out_per_mtok: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "Backend":
        data = dict(data or {})
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def check(self) -> "Backend":
        if not re.match(r"^https?://[^\s/]+", self.base_url or ""):
            raise GenerateError(f"the base URL '{self.base_url}' is not an http(s) address")
        if not (self.model or "").strip():
            raise GenerateError("name the model the endpoint should use")
        if self.api_key_env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.api_key_env):
            raise GenerateError(f"'{self.api_key_env}' is not an environment variable name (give the NAME, not the key)")
        if self.max_tokens < 16:
            raise GenerateError("max_tokens must be at least 16")
        return self


def scrub(text: str, secret: str | None) -> str:
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    return text


def chat(backend: Backend, messages: list[dict], api_key: str | None = None) -> tuple[str, dict]:
    """One chat completion: (answer text, usage). BackendError with a one-line, key-free reason."""
    body: dict[str, Any] = {
        "model": backend.model,
        "messages": messages,
        "temperature": backend.temperature,
        "max_tokens": backend.max_tokens,
    }
    if backend.structured:
        body["response_format"] = {"type": "json_object", "schema": ANSWER_SCHEMA}
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    url = backend.base_url.rstrip("/") + "/chat/completions"
    req = urllib.request.Request(url, data=json.dumps(body, ensure_ascii=False).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=backend.timeout_s) as resp:
            data = json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", errors="replace")[:300].replace("\n", " ")
        fatal = exc.code in (401, 403, 404)
        raise BackendError(scrub(f"{url} answered HTTP {exc.code}: {detail}", api_key), fatal=fatal,
                           status=exc.code) from None
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BackendError(scrub(f"cannot reach {url}: {reason}", api_key)) from None
    except json.JSONDecodeError:
        raise BackendError(f"{url} did not answer with JSON") from None
    try:
        text = data["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError):
        raise BackendError(f"{url} answered without choices[0].message.content") from None
    usage = data.get("usage") or {}
    return text, {"prompt_tokens": int(usage.get("prompt_tokens") or 0),
                  "completion_tokens": int(usage.get("completion_tokens") or 0),
                  "reported": bool(usage)}


# ── the local model: llama.cpp's OpenAI-compatible server on loopback ───────


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """``python -m llama_cpp.server`` serving a GGUF on 127.0.0.1, for as long as the ``with`` lasts."""

    def __init__(self, gguf: str | Path, *, n_ctx: int = 4096, n_threads: int | None = None,
                 chat_format: str = "gemma", log_path: Path | None = None, api_key: str | None = None,
                 ready_timeout: float = 180.0):
        self.gguf = Path(gguf)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, os.cpu_count() or 1)
        self.chat_format = chat_format
        self.log_path = log_path
        self.api_key = api_key
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None
        self.base_url = ""

    def _log_tail(self) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-3:])

    def __enter__(self) -> "LocalServer":
        if not self.gguf.is_file():
            raise GenerateError(f"{self.gguf}: no such GGUF file")
        port = _free_port()
        env = dict(os.environ)
        env.pop("API_KEY", None)
        if self.api_key:
            env["API_KEY"] = self.api_key  # pydantic-settings reads it; it never appears on the command line
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", str(self.n_ctx), "--n_threads", str(self.n_threads),
               "--chat_format", self.chat_format, "--verbose", "False"]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)
        finally:
            if self.log_path:
                out.close()
        self.base_url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + self.ready_timeout
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        while True:
            if self.proc.poll() is not None:
                raise GenerateError(f"the llama.cpp server exited with code {self.proc.returncode}: {self._log_tail()}")
            try:
                with urllib.request.urlopen(urllib.request.Request(self.base_url + "/models", headers=headers),
                                            timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise GenerateError(f"the llama.cpp server did not start within {self.ready_timeout:.0f} s")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __exit__(self, *exc) -> None:
        self.stop()


# ── settings and submitting ─────────────────────────────────────────────────


def saved_backend() -> Backend:
    from core import store

    return Backend.from_dict(store.get_setting("generate_backend"))


def save_backend(backend: Backend, actor: str | None = None) -> None:
    """Keep the endpoint settings (base URL, model, the key's variable NAME, prices) for next time."""
    from core import store

    store.set_setting("generate_backend", backend.check().to_dict(), actor)


def provide_key(env_var: str, value: str | None) -> None:
    """Hand a key (e.g. from Streamlit secrets) to the workers this process starts, in memory only."""
    if value:
        os.environ[env_var] = value


def generations_dir() -> Path:
    d = paths.data_dir() / "generations"
    d.mkdir(parents=True, exist_ok=True)
    return d


def submit(docs: list[str | Path], name: str, *, backend: Backend | None = None, local: bool = False,
           prompt: str | None = None, n_pairs: int = 3, max_chunks: int | None = None,
           chunk_chars: int = 1500, overlap: int = 200, max_retries: int = 2,
           test_fraction: float = 0.1, seed: int = 42, owner: str | None = None) -> dict:
    """Check the request and queue a ``generate`` job. Returns the job."""
    from core import jobs

    if not name or not name.strip():
        raise GenerateError("the generated dataset version needs a name")
    if not docs:
        raise GenerateError("give at least one document (txt, md, docx or pdf)")
    checked = [str(check_document(d).resolve()) for d in docs]
    template = check_template(prompt if prompt is not None else DEFAULT_PROMPT)
    if not 1 <= n_pairs <= 20:
        raise GenerateError("pairs per chunk must be between 1 and 20")
    if max_chunks is not None and max_chunks < 1:
        raise GenerateError("max chunks must be at least 1")
    if not 0 <= max_retries <= 5:
        raise GenerateError("retries must be between 0 and 5")
    chunk_text("x", chunk_chars, overlap)  # validates the sizes
    if local:
        backend = Backend(base_url="http://127.0.0.1/v1", model="local", api_key_env="",
                          temperature=backend.temperature if backend else 0.7,
                          max_tokens=backend.max_tokens if backend else 768, structured=True)
    else:
        backend = (backend or saved_backend()).check()
    gen_id = "gen-" + time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]
    job_dir = generations_dir() / gen_id
    job_dir.mkdir(parents=True)
    (job_dir / PROMPT_FILE).write_text(template, encoding="utf-8")
    payload = {
        "generation_id": gen_id,
        "name": name.strip(),
        "docs": checked,
        "local": local,
        "backend": backend.to_dict(),
        "prompt_file": str(job_dir / PROMPT_FILE),
        "prompt_sha256": hashlib.sha256(template.encode()).hexdigest(),
        "n_pairs": n_pairs,
        "max_chunks": max_chunks,
        "chunk_chars": chunk_chars,
        "overlap": overlap,
        "max_retries": max_retries,
        "test_fraction": test_fraction,
        "seed": seed,
        "owner": owner,
    }
    return jobs.submit("generate", payload, job_dir, owner)


def request_stop(job: dict) -> None:
    """Ask a running generation to stop after its current request and keep what it made."""
    Path(job["job_dir"], STOP_FILE).write_text(time.strftime("%Y-%m-%dT%H:%M:%S"), encoding="utf-8")


# ── the worker side ─────────────────────────────────────────────────────────


def _messages(prompt: str, previous: str | None, reason: str | None) -> list[dict]:
    msgs = [{"role": "user", "content": prompt}]
    if previous is not None:
        msgs += [{"role": "assistant", "content": previous[:2000]},
                 {"role": "user", "content": f"Câu trả lời trên không hợp lệ ({reason}). Hãy trả lại DUY NHẤT "
                                             "một mảng JSON, mỗi phần tử có ba khóa \"instruction\", \"input\", "
                                             "\"output\" (chuỗi; \"output\" không rỗng)."}]
    return msgs


def run(job: dict, job_dir: Path, status, log: Callable[[str], None]) -> dict:
    """In the worker: documents → chunks → answers → pairs appended to generated.jsonl."""
    backend = Backend.from_dict(job["backend"])
    api_key = None
    if not job.get("local") and backend.api_key_env:
        api_key = os.environ.get(backend.api_key_env)
        if not api_key:
            raise GenerateError(f"the environment variable {backend.api_key_env} (the API key) is not set "
                                "for the worker; set it where the studio runs, or in Streamlit secrets")
    template = Path(job["prompt_file"]).read_text(encoding="utf-8")
    chunks: list[tuple[str, int, str]] = []
    for doc in job["docs"]:
        pieces = chunk_text(read_document(doc), job["chunk_chars"], job["overlap"])
        chunks += [(Path(doc).name, i, c) for i, c in enumerate(pieces)]
    total_chunks = len(chunks)
    if job.get("max_chunks"):
        chunks = chunks[: int(job["max_chunks"])]
    log(f"{len(job['docs'])} document(s), {total_chunks} chunk(s); generating from {len(chunks)}")

    server = None
    if job.get("local"):
        from core import models

        gguf = models.gguf_path(log)
        log(f"starting llama.cpp's server on loopback for {gguf.name}")
        server = LocalServer(gguf, log_path=job_dir / SERVER_LOG).__enter__()
        backend.base_url, backend.model = server.base_url, gguf.stem
    try:
        return _loop(job, job_dir, status, log, backend, api_key, template, chunks, total_chunks)
    finally:
        if server:
            server.stop()


def _loop(job, job_dir, status, log, backend, api_key, template, chunks, total_chunks) -> dict:
    pairs_path, rejects_path = job_dir / PAIRS_FILE, job_dir / REJECTS_FILE
    dedup = Deduper()
    stats = {"chunks_done": 0, "chunks_total": len(chunks), "pairs": 0, "duplicates": 0, "malformed_answers": 0,
             "failed_chunks": 0, "retries": 0, "tokens_in": 0, "tokens_out": 0, "usage_reported": False,
             "requests": 0}
    stopped = None
    t0 = time.time()

    def report(**extra) -> None:
        elapsed = time.time() - t0
        done = stats["chunks_done"]
        cost = (stats["tokens_in"] * backend.price_in_per_mtok + stats["tokens_out"] * backend.price_out_per_mtok) / 1e6
        status.update(progress={"done": done, "total": len(chunks), "label": "chunks",
                                "per_s": done / elapsed if elapsed > 0 else 0.0},
                      generation={**stats, "elapsed_s": round(elapsed, 1), "cost": round(cost, 6),
                                  "eta_s": round(elapsed / done * (len(chunks) - done), 1) if done else None,
                                  **extra})

    report()
    with pairs_path.open("a", encoding="utf-8") as out, rejects_path.open("a", encoding="utf-8") as rej:
        for doc, index, chunk in chunks:
            if (job_dir / STOP_FILE).exists():
                stopped = "stopped by the user"
                break
            report(in_flight={"doc": doc, "chunk": index})
            prompt = render_prompt(template, chunk, job["n_pairs"])
            previous = reason = None
            got: list[dict] = []
            attempts = []
            for attempt in range(int(job["max_retries"]) + 1):
                if attempt:
                    stats["retries"] += 1
                    if (job_dir / STOP_FILE).exists():
                        break
                try:
                    text, usage = chat(backend, _messages(prompt, previous, reason), api_key)
                except BackendError as exc:
                    attempts.append({"attempt": attempt + 1, "reason": str(exc)})
                    if exc.fatal:
                        stopped = str(exc)
                        break
                    if exc.status == 400:  # this request is refused (e.g. too long); asking again won't help
                        break
                    time.sleep(min(2 ** attempt, 10))
                    continue
                stats["requests"] += 1
                stats["tokens_in"] += usage["prompt_tokens"]
                stats["tokens_out"] += usage["completion_tokens"]
                stats["usage_reported"] = stats["usage_reported"] or usage["reported"]
                try:
                    got, problems = parse_answer(text)
                    if problems:
                        log(f"{doc} chunk {index}: dropped {len(problems)} invalid item(s): {'; '.join(problems[:3])}")
                    break
                except AnswerError as exc:
                    stats["malformed_answers"] += 1
                    previous, reason = text, str(exc)
                    attempts.append({"attempt": attempt + 1, "reason": reason, "answer": text[:500]})
                    log(f"{doc} chunk {index}: malformed answer (attempt {attempt + 1}): {reason}")
            if not got:
                stats["failed_chunks"] += 1
                rej.write(json.dumps({"doc": doc, "chunk": index, "chunk_text": chunk[:300], "attempts": attempts},
                                     ensure_ascii=False) + "\n")
                rej.flush()
            for pair in got:
                if dedup.add(pair):
                    out.write(json.dumps({**pair, "doc": doc, "chunk": index}, ensure_ascii=False) + "\n")
                    stats["pairs"] += 1
                else:
                    stats["duplicates"] += 1
            out.flush()
            stats["chunks_done"] += 1
            log(f"{doc} chunk {index}: {len(got)} pair(s); {stats['pairs']} kept so far")
            report()
            if stopped:
                break
    report(stopped=stopped)
    elapsed = time.time() - t0
    log(f"generation ended: {stats['pairs']} pairs from {stats['chunks_done']} chunks in {elapsed:.1f} s"
        + (f" ({stopped})" if stopped else ""))
    if stats["pairs"] == 0 and stopped and stopped != "stopped by the user":
        raise GenerateError(f"no pair was made: {stopped}")
    cost = (stats["tokens_in"] * backend.price_in_per_mtok + stats["tokens_out"] * backend.price_out_per_mtok) / 1e6
    return {**stats, "stopped": stopped, "elapsed_s": round(elapsed, 2), "cost": round(cost, 6),
            "chunks_available": total_chunks, "model": backend.model,
            "pairs_file": str(pairs_path), "rejects_file": str(rejects_path)}


# ── the supervisor side ──────────────────────────────────────────────────────


def ingest(con, job: dict, result: dict) -> None:
    """Land generated.jsonl as a dataset version (none when no pair was made)."""
    from core import datasets

    cfg = job["config"] if isinstance(job["config"], dict) else json.loads(job["config"])
    result["dataset_version"] = None
    pairs_file = Path(result["pairs_file"])
    if result.get("pairs", 0) == 0 or not pairs_file.exists():
        result["note"] = "no valid pair came back; every malformed answer is listed in rejects.jsonl"
        return
    template = Path(cfg["prompt_file"]).read_text(encoding="utf-8")
    lineage = {"generation": {
        "job_id": job["id"], "generation_id": cfg["generation_id"], "docs": cfg["docs"],
        "local": cfg["local"], "model": result.get("model"), "base_url": None if cfg["local"] else cfg["backend"]["base_url"],
        "prompt_file": cfg["prompt_file"], "prompt_sha256": cfg["prompt_sha256"], "prompt": template,
        "n_pairs": cfg["n_pairs"], "chunk_chars": cfg["chunk_chars"], "overlap": cfg["overlap"],
        "chunks_done": result["chunks_done"], "chunks_available": result.get("chunks_available"),
        "stopped": result.get("stopped"),
    }}
    version, report = datasets.import_files(
        [pairs_file], cfg["name"], test_fraction=cfg["test_fraction"], seed=cfg["seed"],
        created_by=cfg.get("owner"), source="generate", extra_lineage=lineage)
    result["import_report"] = {k: v for k, v in report.as_dict().items() if k != "errors"}
    if version:
        result["dataset_version"] = version["id"]
        con.execute("UPDATE jobs SET dataset_version_id = ? WHERE id = ?", [version["id"], job["id"]])


def list_generations(limit: int = 20) -> list[dict]:
    from core import jobs

    return jobs.list_jobs(limit, "generate")


def live(job: dict) -> dict:
    """The running numbers a worker reports: chunks, pairs, rejects, tokens, time, cost."""
    from core.worker import STATUS, read_json

    return (read_json(Path(job["job_dir"]) / STATUS) or {}).get("generation") or {}


def rejects(job: dict) -> list[dict]:
    path = Path(job["job_dir"]) / REJECTS_FILE
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def prompt_of(job: dict) -> str:
    try:
        return Path(job["job_dir"], PROMPT_FILE).read_text(encoding="utf-8")
    except OSError:
        return ""


def generated_pairs(job: dict, limit: int = 200) -> list[dict]:
    path = Path(job["job_dir"]) / PAIRS_FILE
    if not path.exists():
        return []
    out = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
            if len(out) >= limit:
                break
    return out
