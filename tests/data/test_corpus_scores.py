"""Corpus I/O and the selection rules: round trips, bad input, ordering and ties."""

import gzip
import json

import numpy as np
import pytest

from jaxsel.data import Corpus, read_corpus, read_jsonl, write_jsonl, write_parquet
from jaxsel.errors import InputError
from jaxsel.scores import Scores, select_budget, select_threshold, select_top_k


def _write(path, lines):
    path.write_bytes(b"".join(lines))
    return path


def test_jsonl_roundtrip_keeps_every_field(tmp_path):
    recs = [{"id": "1", "text": "héllo\r\n", "meta": {"a": [1, 2]}}, {"id": "b", "text": "x"}]
    write_jsonl(tmp_path / "p.jsonl", recs)
    c = read_jsonl(tmp_path / "p.jsonl")
    assert c.ids == ("1", "b") and c.texts == ("héllo\r\n", "x")
    assert c.records[0]["meta"] == {"a": [1, 2]}
    write_parquet(tmp_path / "p.parquet", c.records)
    assert read_corpus(tmp_path / "p.parquet").texts == c.texts


def test_gzip_and_custom_fields(tmp_path):
    p = tmp_path / "p.jsonl.gz"
    with gzip.open(p, "wt") as f:
        f.write(json.dumps({"doc": "k", "body": "text"}) + "\n\n")
    c = read_jsonl(p, text_field="body", id_field="doc")
    assert c.ids == ("k",) and c.texts == ("text",)


def test_text_dir(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "b.txt").write_text("bee")
    (tmp_path / "d" / "sub" / "a.txt").write_text("ay")
    c = read_corpus(tmp_path / "d")
    assert c.ids == ("b.txt", "sub/a.txt")


@pytest.mark.parametrize(
    "lines, msg",
    [
        ([b'{"id": 1, "text": "a"}\n', b"{not json\n"], r"p.jsonl:2: malformed JSON"),
        ([b'{"id": 1, "text": "\xff\xfe"}\n'], r"p.jsonl:1: not valid UTF-8"),
        ([b'{"id": 1}\n'], r"p.jsonl:1: missing field 'text'"),
        ([b'{"text": "a"}\n'], r"p.jsonl:1: missing field 'id'"),
        ([b'{"id": 1, "text": "a"}\n', b'{"id": 1, "text": "b"}\n'], r"p.jsonl:2: duplicate id"),
        ([b'{"id": 1, "text": "  "}\n'], r"p.jsonl:1: empty text"),
        ([b"[1, 2]\n"], r"expected a JSON object"),
        ([b'{"id": 1, "text": 5}\n'], r"text is int"),
        ([b"\n"], r"no documents"),
    ],
)
def test_bad_jsonl(tmp_path, lines, msg):
    with pytest.raises(InputError, match=msg):
        read_jsonl(_write(tmp_path / "p.jsonl", lines))


def test_skip_empty_is_explicit(tmp_path):
    p = _write(tmp_path / "p.jsonl", [b'{"id": 1, "text": ""}\n', b'{"id": 2, "text": "a"}\n'])
    assert read_jsonl(p, on_empty="skip").ids == (2,)  # ids keep their JSON type


def test_non_utf8_file_in_dir(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"\xc3\x28")
    with pytest.raises(InputError, match="bad.txt: not valid UTF-8"):
        read_corpus(tmp_path)


def test_top_k_ties_by_pool_order():
    s = Scores(np.array([0.5, 0.9, 0.5, 0.9, 0.1]), "t")
    assert select_top_k(s, 5).tolist() == [1, 3, 0, 2, 4]
    assert select_threshold(s, 0.5).tolist() == [1, 3]
    assert select_budget(s, [1, 2, 3, 4, 5], 6).tolist() == [1, 3]


def test_greedy_order_comes_first():
    s = Scores(np.array([0.0, 1.0, 2.0, 3.0]), "g", order=np.array([0, 2]))
    assert select_top_k(s, 2).tolist() == [0, 2]
    with pytest.raises(InputError, match="ranked only 2"):
        select_top_k(s, 3)


@pytest.mark.parametrize(
    "k, msg", [(0, "positive"), (-1, "positive"), (6, "larger than the pool"), (2.5, "integer")]
)
def test_bad_k(k, msg):
    with pytest.raises(InputError, match=msg):
        select_top_k(Scores(np.zeros(5), "t"), k)


def test_nan_scores_rejected():
    with pytest.raises(InputError, match="NaN"):
        Scores(np.array([0.0, np.nan]), "t")


def test_from_texts_duplicate_ids():
    with pytest.raises(InputError, match="duplicate id"):
        Corpus.from_texts(["a", "b"], ids=["x", "x"])
