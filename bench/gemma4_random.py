"""A Gemma 4 that needs no download: Gemma 4's real tokenizer rebuilt from the vocab-only GGUF that
ships in llama.cpp's ``models/`` folder, and a ``Gemma4ForCausalLM`` with random weights of any size.

For benches and tests of the pipeline on Gemma 4's architecture (no weights can be fetched on the
GPU box or in CI). Loss does not fall on random weights; speed, memory, shapes, the export and the
prompt format are what such a model shows.

    python bench/gemma4_random.py OUT_DIR [--layers 8 --hidden 640]

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
    ap.add_argument("--tokenizer-only", action="store_true")
    args = ap.parse_args()
    if args.tokenizer_only:
        build_tokenizer(args.out)
    else:
        build_model(args.out, layers=args.layers, hidden=args.hidden)
    ok, total = check_against_llama_cpp(args.out)
    print(json.dumps({"out": str(args.out), "llama_cpp_reference_tokenizations": f"{ok}/{total}"}))
