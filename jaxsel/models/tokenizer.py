"""Tokenizers for the causal LMs: a thin wrapper over `tokenizers.Tokenizer`.

Two sources: the byte-level BPE embedded in a GGUF file's metadata (vocab + merges + token types),
and an HF `tokenizer.json`. `encode` adds no special tokens and `decode` keeps them, so a text's
round trip is exact for any UTF-8 whose bytes all have a token in the byte-level vocabulary
(see `Tokenizer.encode`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import tokenizers
from tokenizers import decoders, models, pre_tokenizers

from jaxsel.errors import AssetError, InputError

# llama.cpp token types (gguf.TokenType): 3 = CONTROL, 4 = USER_DEFINED.
_CONTROL, _USER_DEFINED = 3, 4
# The document separator prepended so that a text's first token is predicted too.
_SEPARATORS = ("<|endoftext|>", "<|begin_of_text|>", "<s>")


class Tokenizer:
    """Text <-> token ids.

    Attributes:
      bos_id: the id prepended to a text so its first token is predicted (the document separator
        the model was trained with; SmolLM2: <|endoftext|> = 0), or None.
      eos_id: end-of-sequence id, or None.
      vocab_size: size of the tokenizer's vocabulary (<= the model's embedding rows).
      id: stable identifier: sha256 of the serialised tokenizer and the bos/eos ids.
    """

    def __init__(self, tok: tokenizers.Tokenizer, bos_id: int | None, eos_id: int | None):
        tok.no_truncation()
        tok.no_padding()
        self._tok = tok
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
        h = hashlib.sha256(tok.to_str().encode("utf-8"))
        h.update(f"|bos={bos_id}|eos={eos_id}".encode())
        self.id = h.hexdigest()[:32]

    def encode(self, text: str, strict: bool = False) -> list[int]:
        """Token ids of `text`, no special tokens added.

        A byte-level vocabulary may lack some byte symbols (SmolLM2 has no token for the control
        bytes 0x04, 0x06, 0x13, 0x14, 0x16, 0x1d); BPE then drops them silently, as transformers
        does. `strict=True` checks decode(ids) == text and raises InputError naming the first
        character lost (what a lossless coder needs).
        """
        ids = self._tok.encode(text, add_special_tokens=False).ids
        if strict:
            back = self.decode(ids)
            if back != text:
                pairs = enumerate(zip(text, back, strict=False))
                i = next((i for i, (a, b) in pairs if a != b), len(back))
                raise InputError(
                    f"text cannot be tokenised losslessly: {text[i]!r} at offset {i} has no token"
                )
        return ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` of each text (parallel in Rust)."""
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def encode_docs(
        self, texts: Sequence[str], max_tokens: int, chunk: int = 4096
    ) -> tuple[list[list[int]], list[bool]]:
        """Documents for scoring: [bos] + the first `max_tokens` ids of each text (no bos when
        the tokenizer has none), and whether each text was truncated. Encodes `chunk` texts at a
        time to bound the memory held by encodings."""
        bos = [] if self.bos_id is None else [self.bos_id]
        seqs, cut = [], []
        for s in range(0, len(texts), chunk):
            for ids in self.encode_batch(texts[s : s + chunk]):
                seqs.append(bos + ids[:max_tokens])
                cut.append(len(ids) > max_tokens)
        return seqs, cut

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`; special tokens are kept, so decode(encode(t)) == t."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, bos_id={self.bos_id}, id={self.id[:8]})"


def _separator(tok: tokenizers.Tokenizer, fallback: int | None) -> int | None:
    for s in _SEPARATORS:
        i = tok.token_to_id(s)
        if i is not None:
            return i
    return fallback


def from_gguf_metadata(
    model: str,
    pre: str,
    tokens: Sequence[str],
    token_types: Sequence[int],
    merges: Sequence[str],
    bos_id: int | None,
    eos_id: int | None,
) -> Tokenizer:
    """Byte-level BPE from a GGUF file's `tokenizer.ggml.*` fields.

    Only `model == "gpt2"` (byte-level BPE) is supported. The pre-tokenizer splits digits one by
    one and then applies the GPT-2 byte-level regex, which is what `pre` = "smollm" (and "gpt2")
    means in llama.cpp; other pre-tokenizer names are refused rather than silently mis-split.
    """
    if model != "gpt2":
        raise AssetError(f"GGUF tokenizer model {model!r} is not supported (only byte-level BPE)")
    splits = {
        "smollm": [pre_tokenizers.Digits(individual_digits=True)],
        "gpt2": [],
        "default": [],
    }
    if pre not in splits:
        raise AssetError(f"GGUF pre-tokenizer {pre!r} is not supported (known: {sorted(splits)})")
    vocab = {t: i for i, t in enumerate(tokens)}
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=pairs, ignore_merges=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [*splits[pre], pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tok.decoder = decoders.ByteLevel()
    specials = [
        tokenizers.AddedToken(t, special=True, normalized=False)
        for t, ty in zip(tokens, token_types, strict=True)
        if ty == _CONTROL
    ]
    tok.add_special_tokens(specials)
    user = [
        tokenizers.AddedToken(t, special=False, normalized=False)
        for t, ty in zip(tokens, token_types, strict=True)
        if ty == _USER_DEFINED
    ]
    if user:
        tok.add_tokens(user)
    return Tokenizer(tok, _separator(tok, bos_id), eos_id)


def from_file(path, bos_id: int | None = None, eos_id: int | None = None) -> Tokenizer:
    """An HF `tokenizer.json` (truncation and padding baked into the file are switched off)."""
    try:
        tok = tokenizers.Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
        raise AssetError(f"{path}: not a valid tokenizer.json ({e})") from e
    return Tokenizer(tok, _separator(tok, bos_id), eos_id)
