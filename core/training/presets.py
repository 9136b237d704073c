"""Named training presets: the guide's settings and the CPU demo passes."""
from __future__ import annotations

from typing import Any

from core.i18n import M
from core.training.config import TrainConfig

_CPU_QUICK = {
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "max_seq_length": 256,
    "packing": False,
    "learning_rate": 5e-4,
    "warmup_ratio": 0.05,
}


DEMO_PRESET = "demo pass (CPU, 40 steps)"
FIT_PRESET = "guide, fit to this GPU"


PRESETS: dict[str, dict[str, Any]] = {
    "guide (r=16)": {},
    # the quick test's settings, twice the steps: on the bundled internal-notes sample the default model
    # passes the evaluation gate, and its q8_0 GGUF answers like the merged model (README, Deploy); the
    # Train page's default
    DEMO_PRESET: {"max_steps": 40, **_CPU_QUICK},
    "quick test (CPU, 20 steps)": {"max_steps": 20, **_CPU_QUICK},
    # the guide's settings and tokens per optimizer step, the batch refitted to the GPU (core.training.batch_fit)
    FIT_PRESET: {"fit_to_gpu": True},
    "r=8 (fast)": {"lora_r": 8, "lora_alpha": 8},
    "r=32 (quality)": {"lora_r": 32, "lora_alpha": 32},
}

# what a page calls each preset (the CLI takes the names above)
TITLES = {"guide (r=16)": M("guide (r=16)"), DEMO_PRESET: M("demo pass (CPU, 40 steps)"),
          "quick test (CPU, 20 steps)": M("quick test (CPU, 20 steps)"), FIT_PRESET: M("guide, fit to this GPU"),
          "r=8 (fast)": M("r=8 (fast)"), "r=32 (quality)": M("r=32 (quality)")}


def preset(name: str, **overrides: Any) -> TrainConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset '{name}' (one of: {', '.join(PRESETS)})")
    return TrainConfig.from_dict({**PRESETS[name], **overrides})
