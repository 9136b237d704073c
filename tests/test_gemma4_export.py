"""Gemma 4 export for real, on the CPU: a tiny Gemma 4 with random weights (both classes: the text-only
``Gemma4ForCausalLM`` and the multimodal ``Gemma4ForConditionalGeneration`` that the -it checkpoints
ship as) gets a LoRA adapter, is merged, converted by llama.cpp's own converter, quantized by its own
quantizer, and llama.cpp's greedy tokens are checked against the merged model's in transformers."""
import json
import shutil

import pytest

from core import paths
from core.deploy import exporter

pytestmark = [pytest.mark.slow, pytest.mark.extended]

TEXT = dict(vocab_size=262144, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=32, initializer_range=0.3)
PROMPT = "<start_of_turn>user\nĐiều khoản phạt vi phạm hợp đồng là gì?<end_of_turn>\n<start_of_turn>model\n"


def _tiny_gemma4(folder, kind: str):
    import torch
    from transformers import Gemma4TextConfig

    torch.manual_seed(0)
    if kind == "Gemma4ForCausalLM":
        from transformers import Gemma4ForCausalLM

        model = Gemma4ForCausalLM(Gemma4TextConfig(**TEXT))
    else:
        from transformers import Gemma4Config, Gemma4ForConditionalGeneration, Gemma4VisionConfig

        vision = Gemma4VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                    num_key_value_heads=2, head_dim=16)
        model = Gemma4ForConditionalGeneration(Gemma4Config(text_config=Gemma4TextConfig(**TEXT), vision_config=vision,
                                                            audio_config=None))
    model.save_pretrained(folder)
    # the default model's tokenizer (the same 262,144-entry Gemma vocabulary) stands in for Gemma 4's
    for f in paths.default_base_model_dir().iterdir():
        if f.name.startswith("tokenizer") or f.name in ("special_tokens_map.json", "chat_template.jinja"):
            shutil.copy(f, folder / f.name)
    return folder


def _random_adapter(base, folder):
    """A LoRA adapter on the 7 projections with random (non-zero) B, as a trained run's would be."""
    import transformers
    from peft import LoraConfig, get_peft_model

    model = getattr(transformers, exporter.loader_for(exporter.architecture(base))).from_pretrained(base)
    lora = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                      target_modules=r".*language_model.*\.(q|k|v|o|gate|up|down)_proj|^model\.layers.*\.(q|k|v|o|gate|up|down)_proj")
    get_peft_model(model, lora).save_pretrained(folder)
    (folder / "vitune_run.json").write_text(json.dumps({"base_model": str(base), "prompt_format": "chat"}))
    return folder


def _hf_greedy(merged, n: int) -> list[int]:
    import torch
    import transformers

    from core.models import load_tokenizer

    tok = load_tokenizer(str(merged))
    model = getattr(transformers, exporter.loader_for(exporter.architecture(merged))).from_pretrained(merged)
    ids = tok(PROMPT, return_tensors="pt", add_special_tokens=True)["input_ids"]
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("kind", ["Gemma4ForCausalLM", "Gemma4ForConditionalGeneration"])
def test_a_gemma_4_run_exports_to_gguf_that_answers_like_the_merged_model(tmp_path, kind):
    import gguf
    from safetensors.torch import load_file

    base = _tiny_gemma4(tmp_path / "base", kind)
    adapter = _random_adapter(base, tmp_path / "adapter")
    merged = exporter.merge(str(base), str(adapter), tmp_path / "merged", lambda m: None)
    assert exporter.architecture(merged) == kind  # the wrapper's layout is kept for the converter

    before = load_file(str(base / "model.safetensors"))
    after = load_file(str(merged / "model.safetensors"))
    q = next(k for k in before if k.endswith("layers.0.self_attn.q_proj.weight") and "vision" not in k)
    assert not (before[q] == after[q]).all(), "the adapter was not merged"

    f16 = exporter.convert(merged, tmp_path / "model-f16.gguf", lambda m: None)
    reader = gguf.GGUFReader(str(f16))
    assert reader.fields["general.architecture"].contents() == "gemma4"
    q8 = exporter.quantize(f16, tmp_path / "model-q8_0.gguf", "q8_0")
    assert q8.stat().st_size < f16.stat().st_size

    expected = _hf_greedy(merged, 8)
    got = exporter.llama_generate(f16, [PROMPT], max_tokens=8)[0]
    assert got == expected, (got, expected)
    assert len(exporter.llama_generate(q8, [PROMPT], max_tokens=8)[0]) == 8  # the q8_0 file loads and answers
