"""Training configuration: the guide's defaults, presets, and YAML in and out."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, asdict
from pathlib import Path
from typing import Any

from core import paths, prompt_format

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


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

    def resolved_base_model(self) -> str:
        return self.base_model or str(paths.default_base_model_dir())

    def validate(self) -> "TrainConfig":
        prompt_format.check_format(self.prompt_format)
        problems = []
        if self.lora_r <= 0:
            problems.append("lora_r must be positive")
        if not 0 < self.learning_rate < 1:
            problems.append("learning_rate must be between 0 and 1")
        if self.per_device_train_batch_size <= 0 or self.gradient_accumulation_steps <= 0:
            problems.append("batch size and accumulation must be positive")
        if self.max_seq_length < 32:
            problems.append("max_seq_length must be at least 32")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
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
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown training setting(s): {', '.join(unknown)}")
        return cls(**data).validate()


_CPU_QUICK = {
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "max_seq_length": 256,
    "packing": False,
    "learning_rate": 5e-4,
    "warmup_ratio": 0.05,
}
DEMO_PRESET = "demo pass (CPU, 40 steps)"
PRESETS: dict[str, dict[str, Any]] = {
    "guide (r=16)": {},
    # the quick test's settings, twice the steps: on the bundled internal-notes sample the default model
    # passes the evaluation gate, and its q8_0 GGUF answers like the merged model (README, Deploy); the
    # Train page's default
    DEMO_PRESET: {"max_steps": 40, **_CPU_QUICK},
    "quick test (CPU, 20 steps)": {"max_steps": 20, **_CPU_QUICK},
    "r=8 (fast)": {"lora_r": 8, "lora_alpha": 8},
    "r=32 (quality)": {"lora_r": 32, "lora_alpha": 32},
}


def preset(name: str, **overrides: Any) -> TrainConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset '{name}' (one of: {', '.join(PRESETS)})")
    return TrainConfig.from_dict({**PRESETS[name], **overrides})


def to_yaml(cfg: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)


def from_yaml(text: str) -> TrainConfig:
    import yaml

    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError("a training config must be a YAML mapping of settings")
    return TrainConfig.from_dict(data)


def load_file(path: str | Path) -> TrainConfig:
    return from_yaml(Path(path).read_text(encoding="utf-8"))
