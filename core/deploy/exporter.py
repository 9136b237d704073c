"""Export, worker side: merge the adapter, convert to GGUF, quantize, and a smoke generation.

All offline, with llama.cpp's own tools as vendored in the llama-cpp-python sdist that the setup
command unpacks: ``convert_hf_to_gguf.py`` for the f16 GGUF and ``llama_model_quantize`` (through
the llama-cpp-python binding) for q8_0 and q4_k_m. ``core.deploy.exports`` (app side) queues the job.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from core import paths, prompt_format

QUANTIZATIONS = ("f16", "q8_0", "q4_k_m")


class ExportError(RuntimeError):
    pass


def converter_script() -> Path:
    script = paths.llama_cpp_dir() / "convert_hf_to_gguf.py"
    if not script.exists():
        raise ExportError(
            f"llama.cpp's converter is missing ({script}); run the setup command in the README, "
            "which unpacks llama.cpp from the llama-cpp-python sdist"
        )
    return script


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# Architectures whose checkpoint is a multimodal wrapper around the language model. llama.cpp's
# converter registers both Gemma 4 classes for its text model (conversion/gemma.py: Gemma4Model), so
# the merged checkpoint must keep the wrapper's layout (``model.language_model.*``): it is loaded and
# saved through AutoModelForImageTextToText, not AutoModelForCausalLM (which would drop the vision
# and audio towers' config and rename the weights). The GGUF is the text model; Ollama cannot take a
# Gemma 4 safetensors LoRA adapter directly, so the studio always hands it a merged GGUF.
MULTIMODAL_ARCHITECTURES = {"Gemma4ForConditionalGeneration", "Gemma3ForConditionalGeneration"}
TEXT_ARCHITECTURES = {"Gemma3ForCausalLM", "Gemma4ForCausalLM", "Gemma2ForCausalLM", "GemmaForCausalLM",
                      "LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "MistralForCausalLM"}


def architecture(model_dir: str | Path) -> str:
    """The first entry of ``architectures`` in the model's config.json."""
    cfg = Path(model_dir) / "config.json"
    try:
        archs = json.loads(cfg.read_text(encoding="utf-8")).get("architectures") or []
    except FileNotFoundError:
        raise ExportError(f"{cfg}: no such file; is {model_dir} a transformers model folder?")
    except json.JSONDecodeError as exc:
        raise ExportError(f"{cfg}: not valid JSON ({exc.msg}, line {exc.lineno})")
    if not archs:
        raise ExportError(f"{cfg}: no 'architectures' field; llama.cpp's converter needs it")
    return archs[0]


def loader_for(arch: str) -> str:
    """Which transformers auto class merges this architecture (the converter's layout follows it)."""
    if arch in MULTIMODAL_ARCHITECTURES:
        return "AutoModelForImageTextToText"
    if arch in TEXT_ARCHITECTURES or arch.endswith("ForCausalLM"):
        return "AutoModelForCausalLM"
    raise ExportError(f"architecture {arch} is not one the studio exports (a *ForCausalLM model, "
                      f"or one of {', '.join(sorted(MULTIMODAL_ARCHITECTURES))})")


def merge(base_model: str, adapter_dir: str | None, out_dir: Path, log: Callable[[str], None]) -> Path:
    """The base model with the adapter merged in, saved in 16/32-bit safetensors with its tokenizer."""
    import torch
    import transformers

    from core.models import load_tokenizer

    cuda = torch.cuda.is_available()
    # a 4-bit-trained run is merged into a base reloaded in 16-bit (never into the 4-bit weights);
    # the CPU keeps float32
    dtype = torch.bfloat16 if cuda else torch.float32
    arch = architecture(base_model)
    loader = loader_for(arch)
    log(f"loading {base_model} ({arch}, via {loader}) in {str(dtype).replace('torch.', '')} to merge")
    model = getattr(transformers, loader).from_pretrained(base_model, dtype=dtype)
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    tokenizer = load_tokenizer(base_model)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    if loader == "AutoModelForImageTextToText":
        try:  # the processor (image/audio preprocessing) travels with a multimodal checkpoint
            transformers.AutoProcessor.from_pretrained(base_model).save_pretrained(str(out_dir))
        except Exception as exc:  # a text-only export does not need it
            log(f"no processor saved ({type(exc).__name__}: {exc}); the GGUF is the text model")
    return out_dir


def convert(merged_dir: Path, out_path: Path, log: Callable[[str], None]) -> Path:
    cmd = [sys.executable, str(converter_script()), str(merged_dir), "--outtype", "f16", "--outfile", str(out_path)]
    log("converting: " + " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not out_path.exists():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise ExportError(f"convert_hf_to_gguf.py failed:\n{tail}")
    return out_path


def quantize(f16_path: Path, out_path: Path, qtype: str) -> Path:
    import llama_cpp

    ftypes = {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M}
    if qtype not in ftypes:
        raise ExportError(f"unknown quantization '{qtype}' (one of: {', '.join(QUANTIZATIONS)})")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftypes[qtype]
    rc = llama_cpp.llama_model_quantize(str(f16_path).encode(), str(out_path).encode(), ctypes.byref(params))
    if rc != 0 or not out_path.exists():
        raise ExportError(f"llama.cpp's quantizer failed for {qtype} (code {rc})")
    return out_path


def llama_generate(gguf: Path, prompts: list[str], max_tokens: int = 32, n_ctx: int = 1024) -> list[list[int]]:
    """Greedy token ids from llama.cpp for each rendered prompt (BOS added by llama.cpp)."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=n_ctx, n_threads=os.cpu_count() or 2, verbose=False, seed=0)
    eos = {llm.token_eos()}
    for marker in prompt_format.TURN_ENDS:  # Gemma 3's <end_of_turn>, Gemma 4's <turn|>
        end_turn = llm.tokenize(marker.encode(), add_bos=False, special=True)
        if len(end_turn) == 1:
            eos.add(end_turn[0])
    outputs = []
    for prompt in prompts:
        llm.reset()
        tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        out: list[int] = []
        for tok in llm.generate(tokens, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
            if tok in eos or len(out) >= max_tokens:
                break
            out.append(tok)
        outputs.append(out)
    return outputs


def run(job: dict, job_dir: Path, status, log: Callable[[str], None]) -> dict:
    """In the worker: merge → f16 GGUF → quantizations → a smoke generation in llama.cpp."""
    from core.models import load_tokenizer

    measured = bool(job.get("held_out"))   # the cost of quantization, on the run's held-out answers
    steps = 2 + len([q for q in job["quantizations"] if q != "f16"]) + 1 + measured
    done = 0
    timings: dict[str, float] = {}   # seconds each step took: merge, f16, each quantization, smoke
    clock = [None, time.time()]

    def step(label: str, key: str) -> None:
        nonlocal done
        if clock[0]:
            timings[clock[0]] = round(time.time() - clock[1], 1)
        clock[:] = [key, time.time()]
        status.update(progress={"done": done, "total": steps, "label": label})
        log(label)
        done += 1

    out_dir = Path(job["out_dir"])
    name = Path(job["run_id"]).name
    step("merging the adapter into the base model", "merge")
    merged = merge(job["base_model"], job.get("adapter_dir"), out_dir / "merged", log)
    step("converting to GGUF (f16) with llama.cpp", "f16")
    f16 = convert(merged, out_dir / f"{name}-f16.gguf", log)
    files = {"f16": str(f16)}
    for q in job["quantizations"]:
        if q == "f16":
            continue
        step(f"quantizing to {q} with llama.cpp", q)
        files[q] = str(quantize(f16, out_dir / f"{name}-{q}.gguf", q))
    step("smoke test in llama.cpp", "smoke")
    tokenizer = load_tokenizer(str(merged))
    prompt = prompt_format.render_prompt({"instruction": "Xin chào, bạn là ai?"}, job["prompt_format"], tokenizer)
    primary = job["quantizations"][-1]
    ids = llama_generate(Path(files[primary]), [prompt], max_tokens=24)[0]
    smoke = tokenizer.decode(ids, skip_special_tokens=True)
    log(f"llama.cpp answered: {smoke!r}")
    cost = None
    if measured:   # perplexity of every GGUF on the held-out answers, KL of each quantization from f16
        from core.deploy import quant_cost

        step("measuring the cost of quantization (perplexity, KL from f16)", "quant_cost")
        report = quant_cost.measure(files, job["held_out"], job["prompt_format"], tokenizer, log)
        cost = str(quant_cost.write(job_dir, report))
    timings[clock[0]] = round(time.time() - clock[1], 1)
    status.update(progress={"done": steps, "total": steps, "label": "done"})
    return {
        "quant_cost": cost,
        "merged_dir": str(merged),
        "gguf": files,
        "primary": primary,
        "sha256": {q: sha256(Path(p)) for q, p in files.items()},
        "prompt_format": job["prompt_format"],
        "smoke_answer": smoke,
        "architecture": architecture(merged),
        "timings_s": timings,
    }
