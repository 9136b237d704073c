"""The static engine (core.evaluation.static_generation): the batch chosen from memory, one prompt
length and one batch size for a whole evaluation, and the same greedy answers as the plain batches.
On the CPU transformers does not compile the step, but every shape the model sees is the compiled
step's shape on CUDA; the test counts them."""
import pytest
import torch

from core import prompt_format
from core.evaluation import inference, static_generation
from core.evaluation.inference import Decoding

PAIRS = [{"instruction": "Thủ đô của Việt Nam là gì?"},
         {"instruction": "Trả lời khách hàng sau một cách lịch sự.",
          "input": "Tháng này tôi bị trừ tiền cước internet hai lần, mỗi lần 220.000đ. Kiểm tra giúp tôi với!"},
         {"instruction": "Xin chào"},
         {"instruction": "Tóm tắt điều khoản sau.", "input": "ĐIỀU 3: Bên B hoàn thành dự án trong 90 ngày."},
         {"instruction": "Giải thích ngắn gọn: hợp đồng lao động có thời hạn là gì?"}]


class _Config:   # the fields of a Gemma 3 1B text config that the estimate reads
    num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim = 26, 4, 1, 256
    hidden_size, intermediate_size, vocab_size = 1152, 6912, 262144


def test_the_batch_is_the_largest_power_of_two_that_fits_half_the_free_memory():
    row = static_generation.bytes_per_row(_Config, cache_len=320, prompt_len=256)
    # 26 layers × K and V × 1 head × 256 × bf16 × 320 positions, the prefill, two float32 logit rows
    assert row == 26 * 2 * 256 * 2 * 320 + 256 * (6 * 1152 + 3 * 6912 + 2 * 4 * 256) * 2 + 2 * 262144 * 4
    lengths = [40, 250, 100] * 200   # 600 prompts, the longest 250 tokens
    p = static_generation.plan(lengths, 64, config=_Config, free_bytes=64 * 2**30)
    assert (p.prompt_len, p.cache_len) == (256, 320)   # rounded up to a multiple of 64, plus the new tokens
    fits = int(64 * 2**30 * 0.5) // row
    assert p.batch == min(256, 1 << (fits.bit_length() - 1)) and p.batches == -(-600 // p.batch)
    small = static_generation.plan(lengths, 64, config=_Config, free_bytes=2 * 2**30)
    assert small.batch < p.batch and small.batch * row <= 2**30 < 2 * small.batch * row
    assert static_generation.plan([10] * 5, 8, config=_Config, free_bytes=64 * 2**30).batch == 8   # 5 prompts: 8
    assert static_generation.plan(lengths, 64, config=_Config, free_bytes=None).batch == 8         # no GPU
    asked = static_generation.plan(lengths, 64, config=_Config, free_bytes=64 * 2**30, requested_batch=12)
    assert asked.batch == 12 and "as asked" in asked.reason


def test_a_last_batch_is_filled_up_with_copies_and_keeps_the_shape():
    p = static_generation.Plan(batch=4, prompt_len=64, cache_len=72, batches=2, reason="")
    assert list(static_generation.batches([5, 1, 0, 3, 2, 4], p)) == [([5, 1, 0, 3], [5, 1, 0, 3]),
                                                                       ([2, 4], [2, 4, 4, 4])]


@pytest.fixture(scope="module")
def loaded(default_model):
    return inference.load(str(default_model), None, "chat", dtype=torch.float32, device="cpu")


def test_the_static_engine_sees_one_shape_and_answers_like_the_plain_batches(loaded):
    prompts = [prompt_format.render_prompt(p, "chat", loaded.tokenizer) for p in PAIRS]
    decoding = Decoding(max_new_tokens=10, batch_size=2)   # three batches, the last one filled up
    plain_info: dict = {}
    plain = inference.generate(loaded, prompts, decoding, engine="dynamic", info=plain_info)
    plain_ids = plain_info.pop("new_ids")
    assert plain_info == {"engine": "dynamic", "batch": 2}

    seen: list[tuple] = []

    def shapes(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        cache = kwargs.get("cache", kwargs.get("past_key_values"))   # the name in transformers 5.2x, and before
        longest = getattr(cache, "get_max_length", None) or getattr(cache, "get_max_cache_shape", None)   # 5.2x, before
        seen.append((tuple(ids.shape), type(cache).__name__, longest() if longest else None))

    hook = loaded.model.register_forward_pre_hook(shapes, with_kwargs=True)
    info: dict = {}
    phases: list[str] = []
    progress: list[tuple[int, int]] = []
    try:
        static = inference.generate(loaded, prompts, decoding, lambda d, t: progress.append((d, t)),
                                    on_phase=phases.append, engine="static", info=info)
    finally:
        hook.remove()
    assert static == plain and all(static)   # float32, greedy: the padding changes nothing
    assert info["new_ids"] == plain_ids and all(0 < len(ids) <= 10 for ids in plain_ids)   # the same token ids too
    plan = info["plan"]
    assert info["engine"] == "static" and plan["batch"] == 2 and plan["batches"] == 3 and plan["prompt_len"] % 64 == 0
    assert plan["cache_len"] == plan["prompt_len"] + 10
    # every forward: a prefill of [2, prompt_len] or a decoding step of [2, 1], always on one static cache length
    assert {s for s, _, _ in seen} == {(2, plan["prompt_len"]), (2, 1)}
    caches = {(kind, length) for _, kind, length in seen}
    assert len(caches) == 1 and caches <= {("StaticCache", plan["cache_len"]), ("StaticCache", plan["cache_len"] - 1)}
    assert phases == ["compiling", "generating", "generating"] and progress == [(2, 5), (4, 5), (5, 5)]


def test_an_unknown_engine_is_named(loaded, monkeypatch):
    monkeypatch.setenv("VITUNE_GENERATION", "fast")
    with pytest.raises(ValueError, match="'fast' is not one of: auto, static, dynamic"):
        inference.generate(loaded, ["x"], Decoding(max_new_tokens=1))
    monkeypatch.setenv("VITUNE_GENERATION", "static")
    assert inference.engine_for(loaded) == "static"
    monkeypatch.delenv("VITUNE_GENERATION")
    assert inference.engine_for(loaded) == "dynamic"   # auto on a CPU


def test_a_gemma4_model_answers_the_same_through_the_static_engine(default_model, tmp_path):
    """Gemma 4's layers (sliding and full attention, per-layer inputs): a tiny one with random weights,
    built from its config beside the default model's tokenizer, in float32 — the static engine's padded
    prompts and static cache give the plain batches' token ids (the H200 check in docs/performance.md)."""
    import shutil

    from transformers import Gemma4ForCausalLM, Gemma4TextConfig

    tok_files = [f for f in default_model.iterdir() if f.name.startswith(("tokenizer", "special_tokens", "chat_template"))]
    for f in tok_files:
        shutil.copy(f, tmp_path / f.name)
    torch.manual_seed(0)
    config = Gemma4TextConfig(vocab_size=262144, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=32, hidden_size_per_layer_input=16,
                              pad_token_id=0, eos_token_id=1, bos_token_id=2, max_position_embeddings=1024)
    Gemma4ForCausalLM(config).save_pretrained(tmp_path)
    loaded = inference.load(str(tmp_path), None, "chat", dtype=torch.float32, device="cpu")
    assert type(loaded.model).__name__ == "Gemma4ForCausalLM"
    assert set(loaded.model.config.layer_types) == {"sliding_attention", "full_attention"}
    prompts = [prompt_format.render_prompt(p, "chat", loaded.tokenizer) for p in PAIRS]
    decoding = Decoding(max_new_tokens=12, batch_size=2)
    plain_info: dict = {}
    inference.generate(loaded, prompts, decoding, engine="dynamic", info=plain_info)
    info: dict = {}
    inference.generate(loaded, prompts, decoding, engine="static", info=info)
    assert info["engine"] == "static" and not info.get("fallback")
    assert info["new_ids"] == plain_info["new_ids"] and all(len(ids) == 12 for ids in info["new_ids"])
