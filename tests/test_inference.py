"""Batched generation on the default model: same answers as one prompt at a time, stop strings, progress."""
import sys

import pytest
import torch

from core import prompt_format
from core.evaluation import inference
from core.evaluation.inference import Decoding
from tests.conftest import REPO

pytestmark = pytest.mark.slow

PAIRS = [{"instruction": "Thủ đô của Việt Nam là gì?"},
         {"instruction": "Trả lời khách hàng sau một cách lịch sự.",
          "input": "Tháng này tôi bị trừ tiền cước internet hai lần, mỗi lần 220.000đ. Kiểm tra giúp tôi với!"},
         {"instruction": "Xin chào"},
         {"instruction": "Tóm tắt điều khoản sau.", "input": "ĐIỀU 3: Bên B hoàn thành dự án trong 90 ngày."}]


@pytest.fixture(scope="module")
def loaded(default_model):
    return inference.load(str(default_model), None, "chat", dtype=torch.float32, device="cpu")


def test_batched_answers_equal_the_one_prompt_at_a_time_loop_in_order(loaded):
    sys.path.insert(0, str(REPO / "bench"))
    from eval_generation import loop  # the guide's loop, as the benchmark runs it

    prompts = [prompt_format.render_prompt(p, "chat", loaded.tokenizer) for p in PAIRS]
    decoding = Decoding(max_new_tokens=12, batch_size=4)
    seen = []
    batched = inference.generate(loaded, prompts, decoding, lambda done, total: seen.append((done, total)))
    assert batched == loop(loaded, prompts, decoding)  # float32, greedy: left padding changes nothing
    assert len(set(batched)) == len(batched) and all(batched)
    decoding.batch_size = 3  # two batches: sorted by length, answers still in the prompts' order
    assert inference.generate(loaded, prompts, decoding, lambda d, t: seen.append((d, t))) == batched
    assert seen == [(4, 4), (3, 4), (4, 4)]


def test_stop_strings_end_the_answer(loaded):
    prompt = prompt_format.render_prompt(PAIRS[1], "chat", loaded.tokenizer)
    full = inference.generate(loaded, [prompt], Decoding(max_new_tokens=24))[0]
    words = full.split()
    assert len(words) >= 3, full
    stop = words[2]
    cut = inference.generate(loaded, [prompt], Decoding(max_new_tokens=24, stop=[stop]))[0]
    assert cut == full[: full.find(stop)].strip() and stop not in cut
