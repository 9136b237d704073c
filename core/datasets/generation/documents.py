"""Raw documents for pair generation: read (txt, md, docx, pdf) and cut into chunks.

Worker side: the generation worker reads and chunks the documents, within limits on what a document
may unpack to (``MAX_DOCX_UNPACKED``), its pages (``MAX_PDF_PAGES``) and the chunks of a job
(``MAX_CHUNKS_PER_JOB``). ``check_document`` is also called at submit time, in the web process, for the
cheap checks only (exists, type, size, the file's signature, a .docx's zip directory, a text
file's encoding): it parses no document, so a zip bomb or a 10,000-page PDF costs the web process nothing.
"""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path

DOC_TYPES = (".txt", ".md", ".markdown", ".docx", ".pdf")
MAX_DOC_BYTES = 50 * 1024**2          # a document file
MAX_DOCX_UNPACKED = 200 * 1024**2     # what a .docx's zip members unpack to, together
MAX_DOCX_MEMBERS = 10_000             # members of a .docx's zip
MAX_PDF_PAGES = 2_000                 # pages of a PDF
MAX_CHUNKS_PER_JOB = 5_000            # chunks one generation job sends to the endpoint


class GenerateError(ValueError):
    """A problem with a request, a document or a backend, stated in one line."""


class DocumentError(GenerateError):
    pass


def check_document(path: str | Path) -> Path:
    """Cheap checks at submit time: exists, a known type, within the size limit, opens."""
    path = Path(path)
    if path.is_dir():
        raise DocumentError(f"{path}: a folder, not a document (give the txt, md, docx or pdf files in it)")
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
        _check_docx_zip(path)
    elif suffix == ".pdf":
        with path.open("rb") as fh:
            if b"%PDF-" not in fh.read(1024):
                raise DocumentError(f"{path.name}: not a PDF (no %PDF- header); is it another kind of file named .pdf?")
    else:
        _check_text(path)   # decoding is cheap (no parsing): a .txt that is not text is refused before a job
    return path


def _check_text(path: Path) -> None:
    """A .txt or .md document decodes as ``_decode_text`` will decode it, read in blocks (a document is at
    most ``MAX_DOC_BYTES``): DocumentError naming the first bad byte otherwise."""
    import codecs

    with path.open("rb") as fh:
        head = fh.read(2)
        if head in (b"\xff\xfe", b"\xfe\xff"):
            return
        decoder = codecs.getincrementaldecoder("utf-8-sig")()
        offset, block = 0, head + fh.read(1024**2 - 2)
        while True:
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                raise DocumentError(f"{path.name}: not UTF-8 text (byte {offset + exc.start}: {exc.reason}); "
                                    "save it as UTF-8 first") from None
            if not block:
                return
            offset += len(block)
            block = fh.read(1024**2)


def _check_docx_zip(path: Path) -> None:
    """A .docx is a zip archive: its directory (read without unpacking anything) must hold the document
    and unpack to no more than ``MAX_DOCX_UNPACKED`` (a zip bomb is refused before it is opened)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise DocumentError(f"{path.name}: not a readable .docx file (not a zip archive: {exc})") from None
    if len(infos) > MAX_DOCX_MEMBERS:
        raise DocumentError(f"{path.name}: {len(infos)} parts in the archive, more than a .docx holds "
                            f"(limit {MAX_DOCX_MEMBERS})")
    if not any(i.filename == "word/document.xml" for i in infos):
        raise DocumentError(f"{path.name}: not a readable .docx file (no word/document.xml: save it from Word "
                            "as .docx)")
    unpacked = sum(i.file_size for i in infos)
    if unpacked > MAX_DOCX_UNPACKED:
        raise DocumentError(f"{path.name}: unpacks to {unpacked / 1024**2:,.0f} MB, over the "
                            f"{MAX_DOCX_UNPACKED // 1024**2} MB limit for a .docx (a zip bomb, or a document to "
                            "split into smaller files)")


def _open_docx(path: Path):
    import zipfile

    import docx

    _check_docx_zip(path)   # the zip reader stops each part at its declared size, so this bounds unpacking
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
        pages = len(reader.pages)
        if pages > MAX_PDF_PAGES:
            raise DocumentError(f"{path.name}: {pages:,} pages, over the limit of {MAX_PDF_PAGES:,} pages for a "
                                "document; split it into smaller PDFs")
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
