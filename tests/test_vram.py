"""The GPU memory estimate shown before a training job is queued."""
import json

import pytest

from core.training import presets, vram
from tests.conftest import cli


def _model(tmp_path, **shape):
    cfg = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=18, num_attention_heads=8,
               num_key_value_heads=4, head_dim=256, vocab_size=8000)
    cfg.update(shape)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return str(tmp_path)


@pytest.mark.parametrize("vocab, measured", [(8000, {"unsloth": 1.38, "hf-bnb": 2.37}),
                                             (262144, {"unsloth": 2.36, "hf-bnb": 4.35})])
def test_the_estimate_matches_the_h200_measurements(tmp_path, vocab, measured):
    """The README's H200 runs: a 1.7B Gemma, guide settings, with a small vocabulary and with Gemma's own;
    PyTorch's peak (no CUDA context) for the studio's Unsloth and HF + bitsandbytes workers."""
    cfg = presets.preset("guide (r=16)", base_model=_model(tmp_path, vocab_size=vocab))
    for backend, gib in measured.items():
        est = vram.estimate(cfg, backend)
        without_context = est["total_gib"] - est["parts"]["cuda_context"]
        assert abs(without_context - gib) / gib < 0.10, (backend, vocab, est)
    assert vram.estimate(cfg)["lora_params"] == 18 * 16 * (2 * 4096 + 2 * 3072 + 3 * 10240)


def test_the_estimate_moves_the_right_way(tmp_path):
    base = _model(tmp_path)
    small = vram.estimate(presets.preset("guide (r=16)", base_model=base))
    assert vram.estimate(presets.preset("guide (r=16)", base_model=base, load_in_4bit=False))["parts"]["weights"] > \
        3 * small["parts"]["weights"]
    assert vram.estimate(presets.preset("r=32 (quality)", base_model=base))["parts"]["lora_and_optimizer"] == \
        pytest.approx(2 * small["parts"]["lora_and_optimizer"], rel=0.05)
    longer = vram.estimate(presets.preset("guide (r=16)", base_model=base, max_seq_length=8192))
    assert longer["parts"]["activations"] == pytest.approx(4 * small["parts"]["activations"], rel=0.05)


def test_a_gemma_4_config_with_a_text_config_and_unknown_models(tmp_path):
    nested = tmp_path / "gemma4"
    nested.mkdir()
    (nested / "config.json").write_text(json.dumps({"architectures": ["Gemma4ForConditionalGeneration"], "text_config": {
        "hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 42, "num_attention_heads": 8,
        "num_key_value_heads": 2, "head_dim": 256, "vocab_size": 262144}}))
    est = vram.estimate(presets.preset("guide (r=16)", base_model=str(nested)))
    assert est["shape_from"] == "config.json" and 3 < est["total_gib"] < 20
    assert vram.estimate(presets.preset("guide (r=16)", base_model="someone/not-downloaded-7b")) is None
    fit = vram.check(presets.preset("guide (r=16)", base_model="someone/not-downloaded-7b"))
    assert fit["estimate"] is None and "unknown" in fit["message"]


def test_the_cli_prints_the_estimate_for_the_default_model(tmp_path):
    out = json.loads(cli("train", "--preset", "quick test (CPU, 20 steps)", "--estimate", home=tmp_path).stdout)
    assert out["estimate"]["base_params"] > 250e6 and out["estimate"]["shape_from"] == "config.json"
    assert out["message"].startswith("Estimated peak GPU memory")
