import pytest

from core import prompt_format as pf

PAIR = {"instruction": "Tóm tắt điều khoản quan trọng trong hợp đồng sau.",
        "input": "ĐIỀU 3: Bên B cam kết hoàn thành dự án trong vòng 90 ngày.",
        "output": "Thời hạn thực hiện 90 ngày từ ngày ký."}


def test_alpaca_vi_is_the_guides_format():
    assert pf.render_prompt(PAIR, "alpaca-vi", None) == (
        "### Hướng dẫn:\nTóm tắt điều khoản quan trọng trong hợp đồng sau.\n\n"
        "### Đầu vào:\nĐIỀU 3: Bên B cam kết hoàn thành dự án trong vòng 90 ngày.\n\n### Phản hồi:\n")
    no_input = dict(PAIR, input="")
    assert pf.render_training_text(no_input, "alpaca-vi", None) == (
        "### Hướng dẫn:\nTóm tắt điều khoản quan trọng trong hợp đồng sau.\n\n### Phản hồi:\n"
        "Thời hạn thực hiện 90 ngày từ ngày ký.")


@pytest.mark.parametrize("fmt", pf.FORMATS)
def test_prompt_is_a_prefix_of_the_training_text(fmt, tokenizer):
    prompt = pf.render_prompt(PAIR, fmt, tokenizer)
    text = pf.render_training_text(PAIR, fmt, tokenizer)
    assert text.startswith(prompt) and PAIR["output"] in text[len(prompt):]
    assert not prompt.startswith(tokenizer.bos_token)  # the tokenizer adds BOS, once
    ids = tokenizer(prompt)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[1] != tokenizer.bos_token_id


def test_chat_format_is_gemmas_turns(tokenizer):
    assert pf.render_prompt({"instruction": "Xin chào"}, "chat", tokenizer) == (
        "<start_of_turn>user\nXin chào<end_of_turn>\n<start_of_turn>model\n")


@pytest.mark.parametrize("fmt", pf.FORMATS)
@pytest.mark.parametrize("system", [None, "Bạn là trợ lý CSKH của Sao Việt."])
def test_ollama_template_renders_the_training_prompt(fmt, system, tokenizer):
    template = pf.ollama_template(fmt, tokenizer)
    question = "Khách hàng phàn nàn về hóa đơn sai, phải xử lý thế nào?"
    expected = pf.render_prompt({"instruction": question}, fmt, tokenizer, system=system)
    assert pf.render_ollama_template(template, question, system) == expected


def test_unknown_format_is_refused():
    with pytest.raises(pf.FormatError, match="unknown prompt format 'vicuna'"):
        pf.render_prompt(PAIR, "vicuna", None)


def test_clean_answer_cuts_at_stop_strings():
    assert pf.clean_answer("Dạ, vâng.<end_of_turn>\nrác", "chat") == "Dạ, vâng."
    assert pf.clean_answer("Trả lời.\n\n### Hướng dẫn:\nthêm", "alpaca-vi") == "Trả lời."


# Gemma 4's turn markup (roles user / model, a system turn of its own, a thinking channel that
# enable_thinking=False keeps closed), written here as a small template of the same shape.
GEMMA4_STYLE = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<|turn>' + ('model' if m['role'] == 'assistant' else m['role']) + '\n' + m['content'] | trim + '<turn|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|turn>model\n' }}"
    "{% if enable_thinking is defined and enable_thinking %}{{ '<|channel>thought\n' }}{% endif %}{% endif %}"
)


def test_a_gemma_4_template_drives_prompts_stops_and_the_modelfile():
    tok = pf.TemplateTokenizer(GEMMA4_STYLE)
    prompt = pf.render_prompt(PAIR, "chat", tok)
    assert prompt == f"<|turn>user\n{pf.user_message(PAIR)}<turn|>\n<|turn>model\n"  # no thinking channel
    text = pf.render_training_text(PAIR, "chat", tok)
    assert text == prompt + PAIR["output"] + "<turn|>\n"
    assert pf.turn_end(tok) == "<turn|>" and pf.stop_strings("chat", tok) == ["<turn|>", "<eos>"]
    assert pf.clean_answer("Thời hạn 90 ngày.<turn|>\n<|turn>user", "chat") == "Thời hạn 90 ngày."
    template = pf.ollama_template("chat", tok)
    assert pf.render_ollama_template(template, "Xin chào", "Bạn là trợ lý.") == pf.render_prompt(
        {"instruction": "Xin chào"}, "chat", tok, system="Bạn là trợ lý.")
    assert pf.render_ollama_template(template, "Xin chào") == pf.render_prompt({"instruction": "Xin chào"}, "chat", tok)


def test_the_gemma_3_turn_end_is_read_from_the_default_models_template(tokenizer):
    assert pf.turn_end(tokenizer) == "<end_of_turn>"
    assert pf.stop_strings("chat", tokenizer) == ["<end_of_turn>", "<eos>"]
    assert tokenizer.convert_tokens_to_ids("<end_of_turn>") in pf.stop_token_ids("chat", tokenizer)
