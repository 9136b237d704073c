"""Ollama: ``ollama create`` from a Modelfile, a smoke prompt, ``ollama rm``.

Commands run as argument lists, never through a shell. Where no ``ollama`` binary is on PATH these
say so, and a release is still recorded with its GGUF and Modelfile (``core.deploy.releases``).
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Callable

from core.deploy import modelfile

OLLAMA_HOST = "http://127.0.0.1:11434"
NO_BINARY = ("ollama is not installed on this machine: download the Modelfile and GGUF and run "
             "`ollama create` where it is")
SMOKE_PROMPT = "Xin chào, bạn có thể giúp gì cho tôi?"


class OllamaError(RuntimeError):
    pass


def ollama_binary() -> str | None:
    return shutil.which("ollama")


def create_command(binary: str, name: str, modelfile_path: Path, gguf_quantization: str,
                   ollama_quantize: str | None = None) -> list[str]:
    """``ollama create NAME -f Modelfile [--quantize Q]``; ``--quantize`` only from an f16 GGUF."""
    modelfile.check_name(name)
    cmd = [binary, "create", name, "-f", str(modelfile_path)]
    if ollama_quantize:
        if gguf_quantization != "f16":
            raise OllamaError(f"Ollama can only quantize an f16 GGUF; this one is already {gguf_quantization}")
        if ollama_quantize not in ("q4_K_M", "q4_K_S", "q8_0"):
            raise OllamaError(f"unknown Ollama quantization '{ollama_quantize}' (q4_K_M, q4_K_S or q8_0)")
        cmd += ["--quantize", ollama_quantize]
    return cmd


def _client():
    import ollama

    return ollama.Client(host=OLLAMA_HOST, timeout=30)


def server_problem() -> str | None:
    """None when the Ollama server answers; otherwise what is wrong, in plain words."""
    try:
        _client().list()
        return None
    except Exception as exc:  # httpx.ConnectError, ConnectionError, …
        return (f"the Ollama server is not running at {OLLAMA_HOST} (start it with `ollama serve`, "
                f"then try again) [{type(exc).__name__}]")


def model_exists(name: str) -> bool:
    import ollama

    try:
        _client().show(name if ":" in name else f"{name}:latest")
        return True
    except ollama.ResponseError as exc:
        if exc.status_code == 404:
            return False
        raise


def explain(output: str) -> str:
    low = output.lower()
    if "could not connect" in low or "connection refused" in low or "is ollama running" in low:
        return f"the Ollama server is not running (start it with `ollama serve`): {output}"
    if "no such file" in low or "invalid model" in low or "unsupported" in low:
        return f"Ollama could not read the GGUF or the Modelfile: {output}"
    if "command must be one of" in low or "unknown parameter" in low:
        return f"Ollama refused a line of the Modelfile: {output}"
    return f"ollama create failed: {output}"


def ollama_create(name: str, modelfile_path: Path, on_line: Callable[[str], None] = print, *,
                  gguf_quantization: str = "q4_k_m", ollama_quantize: str | None = None,
                  replace: bool = False) -> tuple[bool, str]:
    """Run ``ollama create``, streaming its output lines to ``on_line``. Returns (created, message)."""
    modelfile.check_name(name)
    binary = ollama_binary()
    if not binary:
        return False, NO_BINARY
    cmd = create_command(binary, name, modelfile_path, gguf_quantization, ollama_quantize)
    problem = server_problem()
    if problem:
        return False, problem
    if not replace and model_exists(name):
        return False, (f"a model named {name} already exists in Ollama: choose another tag, or delete or roll "
                       "back the existing release in Releases")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip())
        on_line(line.rstrip())
    rc = proc.wait()
    if rc != 0:
        return False, explain(" | ".join(x for x in lines[-5:] if x.strip()))
    return True, "created"


def ollama_smoke(name: str, prompt: str = SMOKE_PROMPT) -> str:
    reply = _client().generate(model=name, prompt=prompt, options={"temperature": 0, "num_predict": 64})
    return reply["response"]


def ollama_remove(name: str) -> tuple[bool, str]:
    binary = ollama_binary()
    if not binary:
        return False, "ollama is not installed on this machine: nothing to remove there"
    modelfile.check_name(name)
    problem = server_problem()
    if problem:
        return False, problem
    proc = subprocess.run([binary, "rm", name], capture_output=True, text=True)
    if proc.returncode != 0:
        out = (proc.stderr or proc.stdout).strip()
        if "not found" in out.lower():
            return True, f"{name} was no longer in Ollama"
        return False, f"ollama rm failed: {out}"
    return True, f"removed {name} from Ollama"
