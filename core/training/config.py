"""Training configuration: the guide's defaults, validation, and YAML in and out."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, asdict
from pathlib import Path
from typing import Any

from core import paths, prompt_format

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CHECKPOINTS_PER_RUN = 4   # a run saves at least this many checkpoints, however short it is
MAX_GPUS = 64             # one job's ranks at most (one box: torchrun --standalone)


@dataclass
class TrainConfig:
    base_model: str = ""                  # a local folder or a model name; "" means the embedded default
    prompt_format: str = prompt_format.DEFAULT_FORMAT
    lora_r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(PROJECTIONS))
    learning_rate: float = 2e-4
    lr_scheduler_type: str = "linear"
    warmup_ratio: float = 0.1
    num_train_epochs: float = 3.0
    max_steps: int = -1                   # > 0 overrides epochs
    per_device_train_batch_size: int = 2
    gradient_accumulation_steps: int = 4
    max_seq_length: int = 2048
    packing: bool = True
    optim: str = "adamw_8bit"
    weight_decay: float = 0.01
    seed: int = 42
    logging_steps: int = 1
    save_steps: int = 200                 # a checkpoint every N optimizer steps (resume starts from the last)
    eval_steps: int = 0                   # > 0: eval loss on the test split every N steps, best checkpoint kept
    eval_max_rows: int = 200              # test pairs used for the eval loss
    load_in_4bit: bool = True             # on CUDA; CPU trains the 16/32-bit base with LoRA
    backend: str = "auto"                 # auto | unsloth | hf-bnb | hf
    fit_to_gpu: bool = False              # batch × accumulation refitted to the GPU's free memory, same tokens a step
    gpus: int = 1                         # > 1: one job across N GPUs, a torchrun rank each (DDP); the batch and
                                          # accumulation are per GPU, so a step takes N times the rows

    def resolved_base_model(self) -> str:
        return self.base_model or str(paths.default_base_model_dir())

    def validate(self) -> "TrainConfig":
        prompt_format.check_format(self.prompt_format)
        from core.models import check_base_model

        check_base_model(self.base_model)
        problems = []
        if self.lora_r <= 0:
            problems.append("lora_r must be positive")
        if not 0 < self.learning_rate < 1:
            problems.append("learning_rate must be between 0 and 1")
        if self.per_device_train_batch_size <= 0 or self.gradient_accumulation_steps <= 0:
            problems.append("batch size and accumulation must be positive")
        if self.max_seq_length < 32:
            problems.append("max_seq_length must be at least 32")
        # the trainer reads max_steps <= 0 as "by epochs": a typo (-5, 0) would train for hours
        if self.max_steps < -1 or self.max_steps == 0:
            problems.append(f"max_steps must be positive (or -1: train by num_train_epochs), not {self.max_steps}")
        elif self.max_steps <= 0 and self.num_train_epochs <= 0:
            problems.append("set max_steps or num_train_epochs")
        if self.save_steps <= 0:
            problems.append("save_steps must be positive")
        if self.eval_steps < 0 or self.eval_max_rows <= 0:
            problems.append("eval_steps must be 0 (off) or positive, eval_max_rows positive")
        elif self.eval_steps and self.save_steps % self.eval_steps:
            problems.append(f"save_steps ({self.save_steps}) must be a multiple of eval_steps ({self.eval_steps}) "
                            "so that the best checkpoint can be kept")
        if self.backend not in ("auto", "unsloth", "hf-bnb", "hf"):
            problems.append(f"unknown backend '{self.backend}'")
        if not 1 <= self.gpus <= MAX_GPUS:
            problems.append(f"gpus must be between 1 and {MAX_GPUS} (the GPUs one job trains on), not {self.gpus}")
        elif self.gpus > 1 and self.backend == "unsloth":
            problems.append(f"gpus: {self.gpus} cannot train with backend unsloth: across GPUs the studio trains with "
                            "transformers + PEFT (backend auto or hf-bnb; docs/training.md says why)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def checkpoint_steps(self, total_steps: int | None = None) -> int:
        """How often the run saves a checkpoint: every ``save_steps``, but at least ``CHECKPOINTS_PER_RUN``
        times in a run of ``max_steps`` (or ``total_steps``, the trainer's count for a run by epochs), so that a
        short run, the 40-step demo preset's, has a checkpoint to resume from; a multiple of ``eval_steps``
        when the eval loss is on (the best checkpoint is one that was evaluated)."""
        total = self.max_steps if self.max_steps > 0 else total_steps
        every = self.save_steps
        if total and total > 0:
            every = min(every, max(1, math.ceil(total / CHECKPOINTS_PER_RUN)))
        if self.eval_steps:
            every = max(self.eval_steps, every // self.eval_steps * self.eval_steps)
        return every

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown training setting(s): {', '.join(unknown)}")
        problems = [p for f in dataclasses.fields(cls) if f.name in data for p in [_type_problem(f, data[f.name])] if p]
        if problems:
            raise ValueError("; ".join(problems))
        return cls(**{k: float(v) if isinstance(v, int) and _kind(f) is float else v
                      for f in dataclasses.fields(cls) for k, v in data.items() if k == f.name}).validate()


def _kind(f: dataclasses.Field) -> type:
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return type(default)


def _type_problem(f: dataclasses.Field, value: Any) -> str | None:
    """Why ``value`` cannot be setting ``f`` (None when it can): the type of the setting's default."""
    kind = _kind(f)
    words = {int: "a whole number", float: "a number", str: "text", bool: "true or false",
             list: "a list of module names"}[kind]
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind is list:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    else:
        ok = isinstance(value, kind)
    return None if ok else f"{f.name} must be {words}, not {value!r}"


def to_yaml(cfg: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)


def from_yaml(text: str) -> TrainConfig:
    import yaml

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ValueError(f"{where}not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(data, dict):
        raise ValueError("a training config must be a YAML mapping of settings")
    return TrainConfig.from_dict(data)


MAX_CONFIG_BYTES = 1024**2


def load_file(path: str | Path) -> TrainConfig:
    """A YAML training config; ValueError naming the file and what is wrong with it."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ValueError(f"{path}: {path.stat().st_size:,} bytes is too large for a training config")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: a folder, not a YAML training config") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start}); a training config is YAML, e.g. from "
                         "`python -m core train --print-config`") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not text.strip():
        raise ValueError(f"{path}: empty, no settings in it; a training config is YAML, e.g. from "
                         "`python -m core train --print-config`")
    try:
        return from_yaml(text)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
