"""Property-based tests of the corpus readers (hypothesis): any JSON value in any field and any
bytes give either a valid Corpus equal to an independent parse with the json module, or a clean
one-line InputError — never another exception."""

import gzip
import json
import math
import zlib

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from jaxsel.data import read_corpus, read_jsonl
from jaxsel.errors import InputError

SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Every JSON value, lone surrogates and non-finite floats included (json.dumps writes those as
# "\ud800" escapes and NaN/Infinity literals, which the reader must refuse cleanly).
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(alphabet=st.characters(exclude_categories=[]), max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(alphabet=st.characters(), max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
# Mostly plausible ids and texts (so many corpora are valid), any JSON value otherwise; other
# fields anything; sometimes the id or text field is missing.
records = st.builds(
    lambda id_, text, extra, drop: {
        k: v for k, v in {**extra, "id": id_, "text": text}.items() if k != drop
    },
    st.integers(0, 20) | st.text(max_size=3) | st.floats(-5, 5) | json_values,
    st.text(min_size=1, max_size=10) | json_values,
    st.dictionaries(st.text(max_size=4), json_values, max_size=3),
    st.sampled_from([None] * 8 + ["id", "text"]),
)


def _has_surrogate(v) -> bool:
    if isinstance(v, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in v)
    if isinstance(v, dict):
        return any(_has_surrogate(k) or _has_surrogate(x) for k, x in v.items())
    if isinstance(v, list):
        return any(_has_surrogate(x) for x in v)
    return False


def _has_nonfinite(v) -> bool:
    if isinstance(v, float):
        return not math.isfinite(v)
    if isinstance(v, dict):
        return any(_has_nonfinite(x) for x in v.values())
    if isinstance(v, list):
        return any(_has_nonfinite(x) for x in v)
    return False


def _valid_id(v) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, float):
        return math.isfinite(v)
    return isinstance(v, int) or isinstance(v, str)


def expected(lines: list[bytes]):
    """The independent model: json.loads per non-blank line, then the documented policy.
    Returns (ids, texts, records) or None where the reader must refuse."""
    ids, texts, recs = [], [], []
    for n, raw in enumerate(lines):
        if n == 0 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):
            return None
        if not isinstance(rec, dict) or _has_surrogate(rec) or _has_nonfinite(rec):
            return None
        if "text" not in rec or "id" not in rec or not _valid_id(rec["id"]):
            return None
        if not isinstance(rec["text"], str) or not rec["text"].strip():
            return None
        if rec["id"] in ids:
            return None
        ids.append(rec["id"])
        texts.append(rec["text"])
        recs.append(rec)
    return (tuple(ids), tuple(texts), tuple(recs)) if ids else None


def _same(a, b) -> bool:
    """Equal with the same JSON types (1 != 1.0 != True here)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    return type(a) is type(b) and a == b


def check(path, lines: list[bytes]) -> None:
    want = expected(lines)
    try:
        c = read_jsonl(path)
    except InputError as e:
        assert want is None, f"refused valid input: {e}"
        msg = str(e)
        assert "\n" not in msg and str(path) in msg
        return
    assert want is not None, "accepted input the policy refuses"
    event("valid corpus")
    assert _same(list(c.ids), list(want[0])) and c.texts == want[1]
    assert all(map(_same, c.records, want[2]))


def _split_lf(data: bytes) -> list[bytes]:  # binary file iteration splits on b"\n" only
    parts = data.split(b"\n")
    return [p + b"\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


@SETTINGS
@given(st.lists(records, min_size=1, max_size=6), st.booleans(), st.booleans())
def test_any_json_in_any_field(tmp_path, recs, ascii_only, bom):
    lines = []
    for r in recs:
        text = json.dumps(r, ensure_ascii=ascii_only or _has_surrogate(r))
        lines.append(text.encode("utf-8") + b"\n")
    if bom:
        lines[0] = b"\xef\xbb\xbf" + lines[0]
    p = tmp_path / "p.jsonl"
    p.write_bytes(b"".join(lines))
    check(p, lines)


@SETTINGS
@given(st.binary(max_size=300))
def test_any_bytes(tmp_path, data):
    p = tmp_path / "p.jsonl"
    p.write_bytes(data)
    check(p, _split_lf(data))


good_line = st.builds(
    lambda i, t: json.dumps({"id": i, "text": t}).encode() + b"\n",
    st.integers(0, 50) | st.text(max_size=3),
    st.text(min_size=1, max_size=8),
)


@SETTINGS
@given(st.lists(good_line, min_size=1, max_size=8), st.binary(max_size=20), st.integers(0, 400))
def test_gzip_any_damage(tmp_path, lines, junk, cut):
    """A .jsonl.gz with bytes spliced into its stream: the right records, or a clean error."""
    gz = gzip.compress(b"".join(lines), mtime=0)
    cut = min(cut, len(gz))
    damaged = gz[:cut] + junk + gz[cut + len(junk) :]
    p = tmp_path / "p.jsonl.gz"
    p.write_bytes(damaged)
    try:
        plain = gzip.decompress(damaged)
    except (OSError, EOFError, zlib.error):
        with pytest.raises(InputError, match="p.jsonl.gz"):
            read_jsonl(p)
        return
    check(p, _split_lf(plain))


@SETTINGS
@given(st.dictionaries(st.sampled_from(["a.txt", "b.md", "c"]), st.binary(max_size=40)))
def test_text_dir_any_bytes(tmp_path_factory, files):
    root = tmp_path_factory.mktemp("d")
    for name, data in files.items():
        (root / name).write_bytes(data)
    want = []
    for name in sorted(files):
        try:
            text = files[name].decode("utf-8")
        except UnicodeDecodeError:
            want = None
            break
        if not text.strip():
            want = None
            break
        want.append((name, text))
    try:
        c = read_corpus(root)
    except InputError as e:
        assert not want, f"refused valid input: {e}"
        return
    assert list(zip(c.ids, c.texts, strict=True)) == want
