"""Do a packed row's texts stay apart under Unsloth on CUDA? The model (a folder ``build_model`` made) is
loaded as the studio's worker loads it, its cache turned off as for training on packed rows
(``batch_fit.for_packed_rows``), and one row holding two texts (``batch_fit.FixedRows``) is compared with
the second text alone, in training mode. Prints one JSON line: the largest logit difference on the second
text, packed against alone, and the same with the texts joined end to end (what no boundary gives).

    python bench/packed_rows_check.py MODEL_DIR            # Unsloth, 4-bit, on CUDA
    python bench/packed_rows_check.py MODEL_DIR --cpu      # the small pass CI runs: transformers + PEFT, float32

On the CPU (``--cpu``, or where Unsloth or CUDA is missing) the same comparison runs on transformers + PEFT in
float32, as the studio's ``hf`` backend trains: the check of the packing itself, without Unsloth's kernels.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _unsloth(model_dir: str):
    from unsloth import FastLanguageModel

    model, tok = FastLanguageModel.from_pretrained(model_name=model_dir, max_seq_length=2048, dtype=None,
                                                   load_in_4bit=True)
    return FastLanguageModel.get_peft_model(model, r=16, lora_alpha=16, target_modules=TARGETS), tok, "cuda"


def _transformers(model_dir: str):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, target_modules=TARGETS, task_type="CAUSAL_LM"))
    return model, AutoTokenizer.from_pretrained(model_dir), "cpu"


def main(model_dir: str, cpu: bool = False) -> dict:
    import torch

    from core.training import batch_fit

    unsloth = False
    if not cpu and torch.cuda.is_available():
        try:
            import unsloth  # noqa: F401
        except Exception:
            unsloth = False
        else:
            unsloth = True
    model, tok, dev = _unsloth(model_dir) if unsloth else _transformers(model_dir)
    model.train()
    batch_fit.for_packed_rows(model)
    text = getattr(tok, "tokenizer", tok)
    first = text("Hợp đồng này có hiệu lực từ ngày ký, trừ khi hai bên thỏa thuận khác.")["input_ids"]
    second = text("Khách hàng hỏi về phí chuyển khoản liên ngân hàng.")["input_ids"]
    width = 64
    batch = batch_fit.FixedRows(width, pad_id=text.pad_token_id or 0)(
        [{"input_ids": first + second, "seq_lengths": [len(first), len(second)]}])
    span = slice(len(first), len(first) + len(second))
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"].to(dev), position_ids=batch["position_ids"].to(dev)).logits[0, span]
        alone = model(input_ids=torch.tensor([second], device=dev)).logits[0]
        joined = model(input_ids=torch.tensor([first + second], device=dev)).logits[0, span]
    out = {"loader": "unsloth 4-bit (cuda)" if unsloth else f"transformers + peft, float32 ({dev})",
           "packed_vs_alone_max_abs": float((packed.float() - alone.float()).abs().max()),
           "joined_vs_alone_max_abs": float((joined.float() - alone.float()).abs().max()),
           "alone_abs_mean": float(alone.float().abs().mean()),
           "same_argmax_packed": float((packed.argmax(-1) == alone.argmax(-1)).float().mean()),
           "same_argmax_joined": float((joined.argmax(-1) == alone.argmax(-1)).float().mean())}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--cpu"]
    if len(args) != 1:
        sys.exit("usage: python bench/packed_rows_check.py MODEL_DIR [--cpu]")
    main(args[0], cpu="--cpu" in sys.argv[1:])
