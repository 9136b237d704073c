"""LoRA / QLoRA training, worker side: runs inside a worker process (never in the app).

Backends, chosen automatically unless the config names one:
- ``unsloth``: Unsloth ``FastLanguageModel`` (4-bit, LoRA, gradient checkpointing "unsloth") on CUDA;
- ``hf-bnb``: transformers + PEFT + bitsandbytes 4-bit on CUDA when Unsloth is not importable;
- ``hf``: transformers + PEFT in full precision (the CPU path).
The same config drives all three; the code runs under both pinned package sets.

``gpus: N`` (N > 1) trains one job across N GPUs (or N CPU ranks): ``run`` hands it to torchrun
(``core.training.ddp``), whose ranks each run ``run`` again; rank 0 alone writes metrics, checkpoints, the
adapter and the result. Across GPUs the backend is transformers + PEFT (``hf-bnb`` on CUDA), not Unsloth
(docs/training.md).
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import math
import time
from pathlib import Path
from typing import Callable

from core import prompt_format
from core.training import batch_fit, ddp
from core.training.config import TrainConfig

GIB = 1024**3


def choose_backend(requested: str = "auto", ranks: int = 1) -> str:
    """The backend of a run; ``ranks`` > 1 (a job across GPUs): transformers + PEFT, never Unsloth."""
    import torch

    if requested != "auto":
        if requested != "hf" and not torch.cuda.is_available():
            raise RuntimeError(f"backend '{requested}' needs CUDA, and this machine has none")
        if requested == "unsloth" and ranks > 1:
            raise RuntimeError(f"backend 'unsloth' does not train across GPUs here ({ranks} ranks): use auto or hf-bnb")
        return requested
    if not torch.cuda.is_available():
        return "hf"
    if ranks == 1:
        try:
            import unsloth  # noqa: F401

            return "unsloth"
        except Exception:
            pass
    try:
        import bitsandbytes  # noqa: F401

        return "hf-bnb"
    except Exception:
        return "hf"


MEMORY_CAP_ENV = "VITUNE_GPU_MEMORY_GIB"


def memory_cap(log: Callable[[str], None]) -> float | None:
    """``$VITUNE_GPU_MEMORY_GIB``: train as on a card of that many GiB. PyTorch's allocator refuses more
    (an out-of-memory error, as on the smaller card) and "fit to this GPU" sizes the batch for it. For
    sharing one large GPU, and for measuring what fits a 24 or 16 GB card on a bigger one."""
    import os

    import torch

    raw = os.environ.get(MEMORY_CAP_ENV)
    if not raw or not torch.cuda.is_available():
        return None
    try:
        cap = float(raw)
    except ValueError:
        raise ValueError(f"{MEMORY_CAP_ENV}={raw!r}: give the memory in GiB, e.g. 24") from None
    total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / GIB
    if not 0 < cap < total:
        log(f"{MEMORY_CAP_ENV}={raw}: not below this GPU's {total:.1f} GiB; no cap")
        return None
    torch.cuda.set_per_process_memory_fraction(cap / total)
    log(f"memory cap: {cap:g} GiB of this GPU's {total:.1f} GiB ({MEMORY_CAP_ENV})")
    return cap


def read_rows(path: str) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def _load(cfg: TrainConfig, backend: str, log: Callable[[str], None]):
    import torch

    base = cfg.resolved_base_model()
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=base, max_seq_length=cfg.max_seq_length, dtype=None, load_in_4bit=cfg.load_in_4bit
        )
        model = FastLanguageModel.get_peft_model(
            model,
            r=cfg.lora_r,
            target_modules=lora_targets(model, cfg.target_modules),
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            bias="none",
            use_gradient_checkpointing="unsloth",
            random_state=cfg.seed,
        )
        return model, _with_template(tokenizer, base)

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from core.models import compute_dtype, load_tokenizer

    tokenizer = load_tokenizer(base)
    kwargs: dict = {}
    if backend == "hf-bnb":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
        kwargs["dtype"] = torch.bfloat16
        if ddp.world_size() > 1:   # each rank its own GPU (one copy of the model a rank), never spread over them
            kwargs["device_map"] = {"": ddp.local_rank()}
    else:
        kwargs["dtype"] = compute_dtype()
    model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    if backend == "hf-bnb":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    torch.manual_seed(cfg.seed)   # the LoRA weights' start: the same in every run of one seed, on every rank
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=lora_targets(model, cfg.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora), tokenizer


def lora_targets(model, modules: list[str]):
    """The LoRA targets: ``modules`` (projection names) in the language model alone. A multimodal checkpoint
    (Gemma 4's hub checkpoints are ``Gemma4ForConditionalGeneration``, with vision and audio towers) has
    ``q_proj`` … in its towers too, some of them wrapped (Gemma 4's clippable linears, which PEFT cannot
    adapt); the studio trains text, so the towers keep their weights and the export their exact tensors."""
    import re

    names = [n for n, _ in model.named_modules()]
    if not any(".language_model." in f".{n}." for n in names):
        return list(modules)
    return r".*\.language_model\..*\.(" + "|".join(re.escape(m) for m in modules) + r")"


def _with_template(tokenizer, base: str):
    tok = getattr(tokenizer, "tokenizer", tokenizer)
    if not getattr(tok, "chat_template", None) and "gemma" in base.lower():
        if "gemma-4" in base.lower() or "gemma4" in base.lower():
            # Gemma 4 marks turns differently (<|turn>user … <turn|>); its -it models carry the template
            raise ValueError(f"{base} has no chat template: train an -it model (e.g. unsloth/gemma-4-E4B-it) "
                             "or use the alpaca-vi prompt format")
        tok.chat_template = prompt_format.GEMMA_CHAT_TEMPLATE
    return tokenizer


def _training_args(cfg: TrainConfig, out_dir: Path, backend: str, log: Callable[[str], None],
                   total_steps: int | None = None):
    """The SFTConfig of a run (``total_steps``: about how many optimizer steps a run by epochs makes)."""
    import torch
    from trl import SFTConfig

    from core.models import compute_dtype

    cuda = torch.cuda.is_available()
    bf16 = compute_dtype() == torch.bfloat16
    optim = cfg.optim
    if "8bit" in optim and not cuda:
        log(f"optimizer {optim} needs bitsandbytes on CUDA; using adamw_torch on this CPU")
        optim = "adamw_torch"
    fields = {f.name for f in dataclasses.fields(SFTConfig)}
    kwargs = dict(
        output_dir=str(out_dir / "checkpoints"),
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        weight_decay=cfg.weight_decay,
        optim=optim,
        seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.checkpoint_steps(total_steps),
        save_total_limit=2,
        report_to="none",
        bf16=bf16,
        fp16=cuda and not bf16,
        use_cpu=not cuda,
        packing=cfg.packing,
        # rows packed to one length by batch_fit stay rows: no padding-free joining (a new shape a batch size)
        **({"padding_free": False} if cfg.fit_to_gpu else {}),
        dataset_text_field="text",
        # counting tokens syncs the GPU every micro-step; on CUDA the packed step size is used instead
        include_num_input_tokens_seen=not cuda,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    if ddp.world_size() > 1:   # torchrun's ranks: nccl on CUDA, gloo on a CPU; every LoRA weight has a gradient
        kwargs.update(ddp_backend=ddp.backend(cuda), ddp_find_unused_parameters=False,
                      gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.eval_steps:
        kwargs.update(
            eval_strategy="steps",
            eval_steps=cfg.eval_steps,
            per_device_eval_batch_size=cfg.per_device_train_batch_size,
            load_best_model_at_end=True,
            metric_for_best_model="eval_loss",
            greater_is_better=False,
        )
        if "eval_strategy" not in fields:  # older transformers
            kwargs["evaluation_strategy"] = kwargs.pop("eval_strategy")
    # trl names the sequence length max_length (newer) or max_seq_length (older)
    kwargs["max_length" if "max_length" in fields else "max_seq_length"] = cfg.max_seq_length
    # transformers 5 takes a warmup ratio as a float warmup_steps; older releases had warmup_ratio
    if "warmup_ratio" in fields:
        kwargs["warmup_ratio"] = cfg.warmup_ratio
    else:
        kwargs["warmup_steps"] = cfg.warmup_ratio
    return SFTConfig(**{k: v for k, v in kwargs.items() if k in fields})


def run(job: dict, job_dir: Path, status, log: Callable[[str], None]) -> dict:
    """Train one run. ``status`` is the worker's status writer; metrics go to metrics.jsonl."""
    import torch

    cfg = TrainConfig.from_dict(job["config"])
    ranks = ddp.world_size()
    if cfg.gpus > 1 and not ddp.in_rank():   # the worker itself: torchrun runs the ranks, each of them this function
        return ddp.launch(job, job_dir, cfg.gpus, status, log)
    main = ddp.rank() == 0   # rank 0 alone writes metrics, the adapter and the result (the Trainer: checkpoints)
    backend = choose_backend(cfg.backend, ranks)
    log(f"backend: {backend}; base model: {cfg.resolved_base_model()}"
        + (f"; rank 0 of {ranks} ({ddp.backend(torch.cuda.is_available())})" if ranks > 1 else ""))
    status.update(backend=backend)
    cap = memory_cap(log)
    if cap:
        status.update(memory_cap_gib=cap)
    fit = None
    if cfg.fit_to_gpu:   # sized by the memory free before the model is loaded: the estimate counts its weights
        free = torch.cuda.mem_get_info()[0] / GIB if torch.cuda.is_available() else None
        if cap and free is not None:
            free = min(free, cap)
        if ranks > 1 and free is not None:   # every rank the same batch: the least free memory of their GPUs
            free = _least_across_ranks(free)
        fit = batch_fit.choose(cfg, free, backend)
        cfg = dataclasses.replace(cfg, per_device_train_batch_size=fit.batch, gradient_accumulation_steps=fit.accumulation,
                                  packing=False)
        log(f"fit to this GPU: {fit.reason}")
        status.update(fit=fit.to_dict())
    model, tokenizer = _load(cfg, backend, log)

    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTTrainer

    text_tok = getattr(tokenizer, "tokenizer", tokenizer)
    rows = read_rows(job["train_file"])
    texts = [prompt_format.render_training_text(r, cfg.prompt_format, text_tok) for r in rows]
    if fit is not None:   # rows of exactly max_seq_length tokens: one shape for every micro-step
        packed = batch_fit.pack_rows(_token_lists(text_tok, texts), cfg.max_seq_length, text_tok.eos_token_id)
        if not packed:
            raise ValueError("the dataset version's training texts have no tokens to train on")
        dataset = Dataset.from_dict({"input_ids": [r["input_ids"] for r in packed],
                                     "seq_lengths": [r["seq_lengths"] for r in packed]})
        fill = batch_fit.real_tokens(packed) / (len(packed) * cfg.max_seq_length)
        log(f"{len(texts)} training texts packed into {len(packed)} rows of {cfg.max_seq_length} tokens "
            f"({fill:.0%} text, the rest padding); every text keeps its own positions")
        fit_shown = {**fit.to_dict(), "rows": len(packed), "row_tokens": cfg.max_seq_length, "fill": round(fill, 4)}
        status.update(fit=fit_shown)
    else:
        dataset = Dataset.from_dict({"text": texts})
    eval_dataset = None
    if cfg.eval_steps:
        test_rows = read_rows(job["test_file"])[: cfg.eval_max_rows]
        if not test_rows:
            raise ValueError("eval_steps is set but the dataset version has no test pairs")
        eval_dataset = Dataset.from_dict(
            {"text": [prompt_format.render_training_text(r, cfg.prompt_format, text_tok) for r in test_rows]})
        log(f"eval loss on {len(test_rows)} test pairs every {cfg.eval_steps} steps")
    per_step = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * ranks   # rows an optimizer step
    by_epochs = math.ceil(len(dataset) / per_step) * math.ceil(cfg.num_train_epochs) if cfg.max_steps <= 0 else None
    args = _training_args(cfg, job_dir, backend, log, by_epochs)
    log(f"a checkpoint every {args.save_steps} steps")
    resume_from = job.get("resume_from")
    if resume_from:
        log(f"resuming from {resume_from}")

    metrics_path = job_dir / "metrics.jsonl"
    # a packed step's text tokens (set once the trainer has packed its rows): counting them per micro-step
    # would sync the GPU every micro-step
    packed_tokens_per_step = per_step * cfg.max_seq_length

    class Recorder(TrainerCallback):
        def __init__(self):
            self.t0 = time.time()
            self.last = (0, self.t0)

        def on_train_begin(self, args, state, control, **kw):
            # a resumed job starts counting from the checkpoint's tokens, not from zero
            self.last = (getattr(state, "num_input_tokens_seen", 0) or 0, time.time())
            # the first step compiles on CUDA (Unsloth, torch.compile: a minute or more); on a CPU it is only first
            self.phase_started = time.time()
            status.update(phase="compiling" if torch.cuda.is_available() else "first step",
                          phase_started=self.phase_started)

        def on_log(self, args, state, control, logs=None, **kw):
            if not main:   # every rank logs the same (ranks-averaged) loss: rank 0 writes it once
                return
            if logs and "eval_loss" in logs:
                with metrics_path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"step": state.global_step, "eval_loss": logs["eval_loss"],
                                         "ts": time.time()}) + "\n")
            if not logs or "loss" not in logs:
                return
            now = time.time()
            tokens = getattr(state, "num_input_tokens_seen", 0) or 0
            if fit is not None or (not tokens and cfg.packing):  # packed steps: their mean text tokens
                tokens = state.global_step * packed_tokens_per_step
            prev_tokens, prev_t = self.last
            # the pace since the last log (or since the first step ended: the compile is no throughput)
            tps = (tokens - prev_tokens) / (now - prev_t) if now > prev_t and tokens > prev_tokens else None
            self.last = (tokens, now)
            record = {
                "step": state.global_step,
                "epoch": state.epoch,
                "loss": logs.get("loss"),
                "learning_rate": logs.get("learning_rate"),
                "grad_norm": logs.get("grad_norm"),
                "tokens_per_s": tps,
                "ts": now,
            }
            if torch.cuda.is_available():
                record["gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 1024**3
            with metrics_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")

        def on_step_end(self, args, state, control, **kw):
            now = time.time()
            if not hasattr(self, "first"):   # the first step of this process, resumed or not: it compiled
                self.first = (state.global_step, now)
                tokens = getattr(state, "num_input_tokens_seen", 0) or 0
                if fit is not None or (not tokens and cfg.packing):
                    tokens = state.global_step * packed_tokens_per_step
                self.last = (tokens, now)
                self.compile_s = now - self.phase_started
                status.update(phase="training", phase_started=now, compile_s=round(self.compile_s, 2))
                log(f"first step done after {self.compile_s:.1f} s (compile and warm-up); pace and ETA count from here")
            steps, seconds = state.global_step - self.first[0], now - self.first[1]
            # the pace excludes the first step: an ETA is not the compile's
            status.update(progress={"done": state.global_step, "total": state.max_steps, "label": "steps",
                                    "per_s": steps / seconds if steps > 0 and seconds > 0 else None})

    recorder = Recorder()
    trainer_kwargs = dict(model=model, args=args, train_dataset=dataset, eval_dataset=eval_dataset,
                          callbacks=[recorder])
    if fit is not None:   # fixed [batch, max_seq_length] rows, a text's own positions, no cross-text attention
        pad = text_tok.pad_token_id if text_tok.pad_token_id is not None else text_tok.eos_token_id
        trainer_kwargs["data_collator"] = batch_fit.FixedRows(cfg.max_seq_length, pad)
        batch_fit.for_packed_rows(model)
    params = inspect.signature(SFTTrainer.__init__).parameters
    trainer_kwargs["processing_class" if "processing_class" in params else "tokenizer"] = tokenizer
    trainer = SFTTrainer(**trainer_kwargs)
    mean_row = _mean_row_tokens(trainer.train_dataset)
    if mean_row:
        packed_tokens_per_step = round(per_step * mean_row)
        status.update(tokens_per_step=packed_tokens_per_step)
    status.update(progress={"done": 0, "total": trainer.state.max_steps or cfg.max_steps, "label": "steps"})
    result = trainer.train(resume_from_checkpoint=resume_from)
    best = trainer.state.best_model_checkpoint
    if best:
        log(f"best checkpoint by eval loss: {best} ({trainer.state.best_metric:.4f}); its weights are kept")
    adapter_dir = job_dir / "adapter"
    if main:
        model.save_pretrained(str(adapter_dir))
        tokenizer.save_pretrained(str(adapter_dir))
        (adapter_dir / "vitune_run.json").write_text(
            json.dumps(
                {"base_model": cfg.resolved_base_model(), "prompt_format": cfg.prompt_format, "backend": backend},
                indent=2,
            )
        )
    return {
        "adapter_dir": str(adapter_dir),
        "backend": backend,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "train_loss": result.metrics.get("train_loss"),
        "steps": trainer.state.global_step,
        "best_checkpoint": best,
        "best_eval_loss": trainer.state.best_metric if best else None,
        "resumed_from": resume_from,
        "compile_s": round(getattr(recorder, "compile_s", 0.0), 2) or None,
        "fit": fit_shown if fit else None,   # what it chose, why, and its rows (`python -m core train` prints it)
        "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "gpus": ranks,
        "memory_cap_gib": cap,
        "peak_gpu_mem_gib": round(torch.cuda.max_memory_allocated() / GIB, 3) if torch.cuda.is_available() else None,
        "peak_gpu_reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 3) if torch.cuda.is_available() else None,
    }


def _least_across_ranks(value: float) -> float:
    """The smallest of every rank's ``value`` (torch.distributed, the ranks' process group)."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device="cuda" if torch.cuda.is_available() else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return float(t.item())


def _token_lists(tok, texts: list[str]) -> list[list[int]]:
    """The texts as token ids the way the trainer reads a text: its own BOS where the text lacks one."""
    bos = tok.bos_token or ""
    return [tok(t, add_special_tokens=not (bos and t.startswith(bos)))["input_ids"] for t in texts]


def _mean_row_tokens(dataset) -> float | None:
    """A packed training row's mean text tokens (its ``seq_lengths``), None where rows are not packed."""
    try:
        if "seq_lengths" not in dataset.column_names:
            return None
        lengths = dataset["seq_lengths"]
    except (AttributeError, TypeError):   # an iterable dataset has no columns to read up front
        return None
    return sum(sum(r) for r in lengths) / len(lengths) if len(lengths) else None
