"""A Gemma 4 that needs no download: Gemma 4's real tokenizer rebuilt from the vocab-only GGUF that
ships in llama.cpp's ``models/`` folder, and a ``Gemma4ForCausalLM`` with random weights of any size.

For benches and tests of the pipeline on Gemma 4's architecture (no weights can be fetched on the
GPU box or in CI). Loss does not fall on random weights; speed, memory, shapes, the export and the
prompt format are what such a model shows.

    python bench/gemma4_random.py OUT_DIR [--layers 8 --hidden 640]
    python bench/gemma4_random.py OUT_DIR --shape e4b [--tiny] [--device cuda]

``--shape`` builds one of Gemma 4's published configurations (``SHAPES``) exactly, laid out like the hub's
checkpoint (``Gemma4ForConditionalGeneration`` with its vision and, on E2B/E4B, audio towers, and the
processor beside the tokenizer); ``--tiny`` keeps every structural feature of that shape (per-layer
inputs, shared KV layers, the double-wide MLP, the wide global heads, the mixture of experts, the towers)
at a size a CPU builds in seconds, for tests of the load paths a real checkpoint would take.

The tokenizer is checked against llama.cpp's own reference tokenizations (the ``.inp``/``.out``
files beside the vocab GGUF) by ``check_against_llama_cpp``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VOCAB = "ggml-vocab-gemma-4.gguf"
TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_BYTE = 1, 3, 4, 6


def vocab_gguf(llama_cpp_dir: Path | None = None) -> Path:
    if llama_cpp_dir is None:
        sys.path.insert(0, str(REPO))
        from core import paths

        llama_cpp_dir = paths.llama_cpp_dir()
    path = Path(llama_cpp_dir) / "models" / VOCAB
    if not path.exists():
        raise FileNotFoundError(f"{path}: llama.cpp's Gemma 4 vocabulary is missing (the setup command unpacks it)")
    return path


def _field(reader, name: str):
    import gguf

    f = reader.fields[name]
    if f.types[-1] == gguf.GGUFValueType.STRING:
        values = [bytes(f.parts[i]).decode("utf-8") for i in f.data]
    else:
        values = [f.parts[i].tolist()[0] for i in f.data]
    return values if f.types[0] == gguf.GGUFValueType.ARRAY else values[0]


def build_tokenizer(out_dir: Path, vocab: Path | None = None) -> Path:
    """Gemma 4's tokenizer as a transformers fast tokenizer (tokenizer.json, its config, the chat
    template), laid out like Gemma's own: SentencePiece-style BPE with byte fallback, spaces as ``▁``."""
    import gguf
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    reader = gguf.GGUFReader(str(vocab or vocab_gguf()))
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ")) for m in _field(reader, "tokenizer.ggml.merges")]
    bad = [m for m in merges if len(m) != 2]
    if bad:
        raise ValueError(f"{len(bad)} merges are not two tokens, e.g. {bad[0]}")
    bos, eos = tokens[_field(reader, "tokenizer.ggml.bos_token_id")], tokens[_field(reader, "tokenizer.ggml.eos_token_id")]
    unk, pad = tokens[_field(reader, "tokenizer.ggml.unknown_token_id")], tokens[_field(reader, "tokenizer.ggml.padding_token_id")]
    bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, unk_token=unk, fuse_unk=True,
                     byte_fallback=True)
    tok = Tokenizer(bpe)
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                       special_tokens=[(bos, tokens.index(bos))])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, kind in zip(tokens, types) if kind == TOKEN_CONTROL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False)
                    for t, kind in zip(tokens, types) if kind == TOKEN_USER_DEFINED])
    named = {bos, eos, unk, pad}
    # the other control tokens (<|turn>, <turn|>, <mask>, …) are special too: llama.cpp's converter keeps
    # only the tokenizer's special tokens as control tokens, and its chat prompts need <|turn> as one
    extra = [t for t, kind in zip(tokens, types) if kind == TOKEN_CONTROL and t not in named]
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, unk_token=unk, pad_token=pad,
                                   additional_special_tokens=extra, padding_side="left")
    fast.chat_template = _field(reader, "tokenizer.chat_template")
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    config_path = out_dir / "tokenizer_config.json"   # a class name every transformers 5 release loads
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    return out_dir


def check_against_llama_cpp(tokenizer_dir: Path, vocab: Path | None = None) -> tuple[int, int]:
    """(matching, total) of llama.cpp's reference tokenizations (no BOS) reproduced by the tokenizer."""
    from transformers import AutoTokenizer

    vocab = vocab or vocab_gguf()
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    texts = vocab.with_name(vocab.name + ".inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    expected = vocab.with_name(vocab.name + ".out").read_text(encoding="utf-8").split("\n")
    texts = [t for t in texts if t != ""] if len(texts) > len(expected) else texts
    ok = 0
    for text, want in zip(texts, expected):
        got = tok(text, add_special_tokens=False)["input_ids"]
        ok += got == [int(x) for x in want.split()]
    return ok, min(len(texts), len(expected))


# Gemma 4's published configurations, as transformers' own conversion script from Google's checkpoints
# declares them (src/transformers/models/gemma4/convert_gemma4_weights.py, `_VARIANTS`, read 2026-12-07):
# google/gemma-4-E2B-it, -E4B-it, -26B-A4B-it and -31B-it. Every layer pattern is sliding × 5 then full
# (E2B: × 4 then full); full-attention layers use 512-dim heads (`global_head_dim`); RoPE 10k sliding,
# 1M proportional (¼ of the dims) on full layers; final logits soft-capped at 30.
_ROPE = {"full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1_000_000.0},
         "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}}
_ON_DEVICE_VISION = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=16, num_attention_heads=12,
                         num_key_value_heads=12, head_dim=64, pooling_kernel_size=3, use_clipped_linears=True)
_LARGE_VISION = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                     num_key_value_heads=16, head_dim=72, pooling_kernel_size=3, use_clipped_linears=False,
                     standardize=True)
SHAPES: dict[str, dict] = {
    "e2b": dict(hub="google/gemma-4-E2B-it", vision=_ON_DEVICE_VISION, audio=True, text=dict(
        hidden_size=1536, hidden_size_per_layer_input=256, intermediate_size=4 * 1536, num_hidden_layers=35,
        layer_types=(["sliding_attention"] * 4 + ["full_attention"]) * 7, num_attention_heads=8,
        num_key_value_heads=1, attention_k_eq_v=False, num_kv_shared_layers=20, use_double_wide_mlp=True,
        global_head_dim=512)),
    "e4b": dict(hub="google/gemma-4-E4B-it", vision=_ON_DEVICE_VISION, audio=True, text=dict(
        hidden_size=2560, hidden_size_per_layer_input=256, intermediate_size=4 * 2560, num_hidden_layers=42,
        layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 7, num_attention_heads=8,
        num_key_value_heads=2, global_head_dim=512, attention_k_eq_v=False, num_kv_shared_layers=18)),
    "26b-a4b": dict(hub="google/gemma-4-26B-A4B-it", vision=_LARGE_VISION, audio=False, text=dict(
        hidden_size=2816, hidden_size_per_layer_input=0, intermediate_size=2112, num_hidden_layers=30,
        layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 5, num_attention_heads=16,
        num_key_value_heads=8, num_global_key_value_heads=2, global_head_dim=512, attention_k_eq_v=True,
        use_bidirectional_attention="vision", num_kv_shared_layers=0, enable_moe_block=True, num_experts=128,
        moe_intermediate_size=704, top_k_experts=8, sliding_window=1024, max_position_embeddings=262_144)),
    "31b": dict(hub="google/gemma-4-31B-it", vision=_LARGE_VISION, audio=False, text=dict(
        hidden_size=5376, hidden_size_per_layer_input=0, intermediate_size=4 * 5376, num_hidden_layers=60,
        layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 10, num_attention_heads=32,
        num_key_value_heads=16, num_global_key_value_heads=4, global_head_dim=512, attention_k_eq_v=True,
        use_bidirectional_attention="vision", num_kv_shared_layers=0, sliding_window=1024,
        max_position_embeddings=262_144)),
}


def _tiny(shape: dict) -> dict:
    """The same structure at a CPU's size: every feature kept, the widths and depths cut."""
    text = dict(shape["text"])
    pattern = text["layer_types"][: text["layer_types"].index("full_attention") + 1]
    text.update(hidden_size=64, intermediate_size=128 if not text.get("enable_moe_block") else 96,
                layer_types=pattern * 2, num_hidden_layers=2 * len(pattern),
                num_attention_heads=2, num_key_value_heads=1, global_head_dim=64, head_dim=32)
    if text.get("hidden_size_per_layer_input"):
        text["hidden_size_per_layer_input"] = 16
    if text.get("num_kv_shared_layers"):
        text["num_kv_shared_layers"] = len(pattern)
    if text.get("num_global_key_value_heads"):
        text["num_global_key_value_heads"] = 1
    if text.get("enable_moe_block"):
        text.update(num_experts=4, moe_intermediate_size=32, top_k_experts=2)
    vision = dict(shape["vision"], hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=2, head_dim=16)
    return dict(shape, text=text, vision=vision, audio_size=dict(hidden_size=32, num_hidden_layers=2,
                                                                 num_attention_heads=2, output_proj_dims=64))


def shape_config(name: str, *, tiny: bool = False):
    """The ``Gemma4Config`` of a published shape (its text, vision and audio parts), or of its tiny twin."""
    from transformers import Gemma4AudioConfig, Gemma4Config, Gemma4TextConfig, Gemma4VisionConfig

    shape = _tiny(SHAPES[name]) if tiny else SHAPES[name]
    text = Gemma4TextConfig(vocab_size=262144, final_logit_softcapping=30.0, rope_parameters=_ROPE,
                            **shape["text"])
    audio = Gemma4AudioConfig(**shape.get("audio_size", {})) if shape["audio"] else None
    return Gemma4Config(text_config=text, vision_config=Gemma4VisionConfig(**shape["vision"]), audio_config=audio,
                        tie_word_embeddings=True)


def build_shape(out_dir: Path, name: str, *, tiny: bool = False, device: str = "cpu", seed: int = 0,
                tokenizer_from: Path | None = None) -> dict:
    """A published Gemma 4 shape with random weights, saved in bf16 as the hub lays the checkpoint out
    (``Gemma4ForConditionalGeneration``, towers included; tokenizer, chat template and processor beside
    it). Returns what was built: parameters in all, of the language model, of the towers."""
    import torch
    from transformers import Gemma4ForConditionalGeneration

    torch.manual_seed(seed)
    config = shape_config(name, tiny=tiny)
    config.architectures = ["Gemma4ForConditionalGeneration"]
    with torch.device(device):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            model = Gemma4ForConditionalGeneration(config)
        finally:
            torch.set_default_dtype(previous)
    model = model.to(torch.bfloat16)
    counts = {"parameters": sum(p.numel() for p in model.parameters())}
    counts["language_model"] = sum(p.numel() for n, p in model.named_parameters() if ".language_model." in f".{n}")
    counts["towers"] = counts["parameters"] - counts["language_model"]
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True, max_shard_size="5GB")
    del model
    _save_tokenizer_and_processor(out_dir, tokenizer_from)
    return {"shape": name, "tiny": tiny, "hub_name": SHAPES[name]["hub"], **counts}


def _save_tokenizer_and_processor(out_dir: Path, tokenizer_from: Path | None) -> None:
    """Gemma 4's tokenizer (rebuilt, or copied from ``tokenizer_from``) and, as on the hub, its processor
    (image, video and audio preprocessing beside the tokenizer)."""
    import shutil

    if tokenizer_from:
        for f in Path(tokenizer_from).iterdir():
            shutil.copy(f, out_dir / f.name)
    else:
        build_tokenizer(out_dir)
    from transformers import AutoTokenizer, Gemma4AudioFeatureExtractor, Gemma4ImageProcessor, Gemma4Processor

    tok = AutoTokenizer.from_pretrained(str(out_dir))
    image, audio = Gemma4ImageProcessor(), Gemma4AudioFeatureExtractor()
    try:
        from transformers import Gemma4VideoProcessor

        video = Gemma4VideoProcessor()
    except ImportError:   # the video processor needs torchvision, which the CPU set lacks (the GPU image has it)
        image.save_pretrained(str(out_dir))
        audio.save_pretrained(str(out_dir))
        return
    try:
        Gemma4Processor(feature_extractor=audio, image_processor=image, tokenizer=tok, video_processor=video,
                        chat_template=tok.chat_template).save_pretrained(str(out_dir))
    except AttributeError:   # a transformers whose processor wants the tokenizer's image/audio token names
        image.save_pretrained(str(out_dir))
        audio.save_pretrained(str(out_dir))
        video.save_pretrained(str(out_dir))


def build_model(out_dir: Path, *, layers: int = 8, hidden: int = 640, intermediate: int | None = None,
                heads: int = 4, kv_heads: int = 1, head_dim: int = 256, seed: int = 0,
                tokenizer_from: Path | None = None) -> Path:
    """A ``Gemma4ForCausalLM`` with random weights and Gemma 4's tokenizer (rebuilt from llama.cpp's vocab,
    or copied from ``tokenizer_from``, a folder ``build_tokenizer`` wrote), saved in bf16."""
    import torch
    from transformers import Gemma4ForCausalLM, Gemma4TextConfig

    torch.manual_seed(seed)
    config = Gemma4TextConfig(vocab_size=262144, hidden_size=hidden, intermediate_size=intermediate or 4 * hidden,
                              num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                              head_dim=head_dim, initializer_range=0.02, max_position_embeddings=8192)
    model = Gemma4ForCausalLM(config).to(torch.bfloat16)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    if tokenizer_from:
        import shutil

        for f in Path(tokenizer_from).iterdir():
            shutil.copy(f, out_dir / f.name)
    else:
        build_tokenizer(out_dir)
    return out_dir


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=640)
    ap.add_argument("--shape", choices=sorted(SHAPES), help="one of Gemma 4's published shapes, as the hub lays it out")
    ap.add_argument("--tiny", action="store_true", help="with --shape: its structure at a CPU's size")
    ap.add_argument("--device", default="cpu", help="where the random weights are made (cuda for the real sizes)")
    ap.add_argument("--tokenizer-only", action="store_true")
    args = ap.parse_args()
    if args.shape:
        print(json.dumps(build_shape(args.out, args.shape, tiny=args.tiny, device=args.device)))
        sys.exit(0)
    if args.tokenizer_only:
        build_tokenizer(args.out)
    else:
        build_model(args.out, layers=args.layers, hidden=args.hidden)
    ok, total = check_against_llama_cpp(args.out)
    print(json.dumps({"out": str(args.out), "llama_cpp_reference_tokenizations": f"{ok}/{total}"}))
