"""Coverage-guided fuzzing (atheris/libFuzzer) of FineZip's archive parser.

Every input goes through `finezip.read_header` and `finezip.decompress` with a model loader that
refuses to load: the parser must validate everything (header schema and consistency, body length
and crc32, sections, escape table, coded payload, bounded fallback decoding) before any model is
loaded, and answer every input with an `ArchiveError` (or, for a valid fallback archive, the
verified original; for a valid model archive, the request for the model, after which its
range-coded streams are decoded without a model and must stop where they run out:
`decode_streams`). Anything else -- another exception, a hang, a blown memory limit -- is a crash
that libFuzzer reports and saves.

    make fuzz                                   # the fixed budget (1,000,000 runs)
    python tests/fuzz/fuzz_archive.py -runs=100000 -max_len=4096 -dict=tests/fuzz/archive.dict \
        NEW_DIR tests/fuzz/corpus_archive
    python tests/fuzz/fuzz_archive.py --seeds tests/fuzz/corpus_archive  # (re)write the seeds

The kept corpus (tests/fuzz/corpus_archive) is the seeds (format 4; `v3-*`: format 3) plus what
the fuzzer found, minimised with `-merge=1`.
"""

import contextlib
import struct
import zlib

# the test suite replays the kept corpus without atheris (tests/finezip/test_finezip_archive.py)
import numpy as np

try:
    import atheris
except ImportError:
    atheris = None

with (
    atheris.instrument_imports(include=["jaxsel.finezip", "jaxsel.errors"])
    if atheris
    else contextlib.nullcontext()
):
    from jaxsel import finezip
    from jaxsel.errors import ArchiveError
    from jaxsel.finezip import api, coders
    from jaxsel.finezip import archive as arc


class ModelWanted(Exception):
    """Raised by the loader: the archive validated completely and decoding needs the model."""


def no_model(dtype):
    raise ModelWanted(dtype)


def repair(data: bytes) -> bytes:
    """The archive a fuzz input stands for. Its first byte picks a mode: 0 = the rest as is; 1 =
    with the header checksum recomputed; 2 = also with body_len/body_crc32 set to the body's, so
    that mutations reach the schema, the consistency checks and the body parsers instead of
    dying at a crc32 (which a mutation almost never keeps valid)."""
    if not data:
        return data
    mode, a = data[0] % 3, data[1:]
    if mode == 0 or len(a) < 9 or a[:4] != arc.MAGIC:
        return a
    n = struct.unpack_from("<I", a, 5)[0]
    raw, body = a[9 : 9 + n], a[9 + n + 4 :]
    a = a[:5] + struct.pack("<I", len(raw)) + raw + struct.pack("<I", zlib.crc32(raw)) + body
    if mode == 2 and a[4] in arc.READABLE:
        try:
            h = arc.header_json(a)[0]
        except ArchiveError:
            h = None
        if type(h) is dict:
            h["body_len"], h["body_crc32"] = len(body), zlib.crc32(body)
            a = arc.frame(h, body, a[4])
    return a


def test_one_input(data: bytes) -> None:
    data = repair(data)
    try:
        finezip.read_header(data)
    except ArchiveError:
        pass
    try:
        out = finezip.decompress(data, no_model)
    except ArchiveError:
        return
    except ModelWanted:
        decode_streams(data)
        return
    header = finezip.read_header(data)[0]  # only a valid fallback archive gets here
    if header.mode == "model" or len(out) != header.size or arc.sha256(out) != header.sha256:
        raise RuntimeError("decompress returned bytes that do not match the header")


HALVES = np.full((1, 2), 0.5, np.float32)


def decode_streams(data: bytes) -> None:
    """The range-coded streams of a valid model archive, decoded without a model under a fixed
    table of two halves (at most 4,096 tokens each): a stream either decodes its tokens or
    stops with an ArchiveError once read past its end, after at most 32 W + 3 tokens (each
    costs one bit here), never later (`coders.RangeDecoder`)."""
    parsed = finezip.parse(data)
    if parsed.header.model.coder == "rank":  # decoded whole by `parse`
        return
    for words, lens in zip(parsed.payload, api._plan(parsed.header.model).lengths(), strict=True):
        n, most, done = min(int(lens.sum()), 4096), 32 * len(words) + 3, 0
        dec = coders.RangeDecoder(words, n)
        try:
            while done < n:
                done += 1
                dec.step(HALVES)
        except ArchiveError:
            pass
        if done > most:
            raise RuntimeError(f"a stream of {len(words)} words decoded {done} tokens")


def seeds() -> dict[str, bytes]:
    """Valid archives of every kind (model payloads are well-formed but never decoded here)."""
    text = b"FineZip seed text, seed text, seed text.\r\n" * 3
    digest = arc.sha256(text)
    out = {
        f"{m}.fz": arc.pack(len(text), digest, m, body)
        for m, body in arc.fallback_candidates(text).items()
    }
    out["empty.fz"] = arc.pack(0, arc.sha256(b""), "raw", b"")
    env = arc.Environment("cpu", "cpu", 1, "x86_64", "", "0.10.2", "0.10.2", "0.5.0")
    runs = [10, 2, 40, 1, len(text) - 53]
    table = coders.varint_encode(runs)
    escape = arc.EscapeInfo(len(runs), len(table), len(table) + 3)
    lora = arc.LoraInfo(("wq", "wv"), 2, 4.0, 1, 0, 3, 8)
    n = 30
    for coder, payload in (
        ("ac", coders.pack_streams([np.array([1, 2, 3], np.uint32)])),
        ("rank", coders.encode_ranks(list(range(n)))),
    ):
        for name, extra, kw in (
            ("plain", b"", {}),
            ("escape", table + b"\xff\x04\x80", {"escape": escape}),
            ("lora", bytes(8), {"lora": lora}),
        ):
            fields = dict(
                coder=coder,
                model="f" * 64,
                tokenizer="t" * 64,
                dtype="float32",
                vocab_size=49152,
                n_tokens=n,
                context=15,
                stride=5,
                batch_size=2,
                n_batches=1,
                pad=0,
                lora=None,
                escape=None,
                environment=env,
            )
            info = arc.ModelInfo(**{**fields, **kw})
            out[f"model-{coder}-{name}.fz"] = arc.pack(
                len(text), digest, "model", extra + payload, info
            )
    # valid up to the model, but its 3 words cannot code its 2,000 tokens: `decode_streams`
    # stops it after 98
    info = arc.ModelInfo(**{**fields, "coder": "ac", "n_tokens": 2000, "pad": 2000 // 64})
    payload = coders.pack_streams([np.array([1, 2, 3], np.uint32)])
    out["model-ac-overread.fz"] = arc.pack(2000, digest, "model", payload + bytes(31), info)
    return out


def seed_files() -> dict[str, bytes]:
    """Every seed in format 4 and 3 (`v3-`), as is (mode byte 0) and to repair (mode 2)."""
    out = {}
    for name, data in seeds().items():
        header, start = arc.header_json(data)
        for prefix, version in (("", arc.VERSION), ("v3-", 3)):
            a = arc.frame(header, data[start:], version)
            out[f"{prefix}{name}"] = b"\0" + a
            out[f"{prefix}repair-{name}"] = b"\2" + a
    return out


if __name__ == "__main__":
    import harness  # when run: the test suite loads this file by path, without its folder

    harness.main(test_one_input, seed_files)
