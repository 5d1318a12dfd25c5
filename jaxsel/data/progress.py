"""Progress a user can plan by: a bar over the parts of a pool whose total is known before any
document is read, and an ETA from the rate of new work only.

The unit is picked per pool (`part_sizes`): rows when every part's row count is in metadata
(Parquet row groups, TFDS shards, arrow files of a saved `datasets.Dataset`), else bytes on
disk (JSON Lines byte ranges, compressed JSON Lines, text directories, or a mix). A batch knows
its part (its first key column); it is credited as it completes, by its rows, or by its texts'
UTF-8 bytes scaled to the part's bytes on disk (a gzip file's own trailer gives its compression
ratio), never past the part's share, and the rest of a part's share when its last batch is done,
so the bar ends exactly at its total. The count of documents and their rate stay in the postfix.

Batches read back from a resumed job's shards advance the bar but not its rate: the ETA is that
of the work left.
"""

from __future__ import annotations

import functools
import os
import struct
import sys
import time
from collections.abc import Sequence

from tqdm.auto import tqdm

from jaxsel.data.formats import Part

ROW_KINDS = ("parquet", "tfds", "hf")


def part_rows(part: Part) -> int | None:
    """The number of rows of a part from metadata alone (None: not known without reading it).
    Empty texts skipped on reading are among them."""
    if part.kind == "tfds":
        return part.stop - part.start
    if not os.path.isfile(part.path):  # a URL: its metadata would be another remote read
        return None
    if part.kind == "parquet":
        return _parquet_rows(part.path)[part.start]
    if part.kind == "hf":
        return _arrow_rows(part.path)
    return None


@functools.lru_cache(maxsize=256)
def _parquet_rows(path: str) -> tuple[int, ...]:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    return tuple(meta.row_group(g).num_rows for g in range(meta.num_row_groups))


@functools.lru_cache(maxsize=256)
def _arrow_rows(path: str) -> int:
    import pyarrow as pa

    with pa.memory_map(path) as m:
        return sum(b.num_rows for b in pa.ipc.open_stream(m))


def part_sizes(parts: Sequence[Part]) -> tuple[str, list[int]]:
    """(unit, size of each part in it): ("row", rows) when metadata gives every part's rows,
    else ("B", bytes on disk)."""
    if parts and all(p.kind in ROW_KINDS for p in parts):
        rows = [part_rows(p) for p in parts]
        if None not in rows:
            return "row", rows
    return "B", [max(p.nbytes, 0) for p in parts]


def batch_count(parts: Sequence[Part], batch_size: int) -> int | None:
    """The number of batches of `batch_size` documents of `parts` when metadata gives every
    part's rows (at most that many with empty texts skipped), else None."""
    rows = [part_rows(p) for p in parts]
    return None if None in rows else sum(-(-r // batch_size) for r in rows)


def resuming_line(desc: str, done: set[tuple[int, int]], source, parts: Sequence, batch_size):
    """The log line of a resumed pass over `parts` of `source`: how many of this process's
    batches a workdir holds (`done`: the (part, first row) of its shards), of how many when
    that is known before reading (rows in metadata, an in-memory corpus)."""
    mine = {getattr(p, "index", p) for p in parts}
    found = sum(1 for part, _ in done if part in mine)
    if all(isinstance(p, Part) for p in parts):
        total = batch_count(parts, batch_size)
    else:  # an in-memory corpus (`jaxsel.data.adapters.CorpusSource`): one part
        total = -(-len(source.to_corpus()) // batch_size)
    if total is not None:
        return f"{desc}: resuming: {found} of {total} batches already done"
    begun = len({part for part, _ in done if part in mine})
    return f"{desc}: resuming: {found} batches already done, in {begun} of {len(mine)} parts"


def bytes_per_text_byte(part: Part) -> float | None:
    """Bytes on disk per UTF-8 byte of text, to credit a batch of a byte-measured part by its
    texts: 1 for uncompressed JSON Lines and text files; for a gzip file, its size over the
    uncompressed size its trailer records (when that is plausible: ISIZE is modulo 2**32);
    None when unknown (the part is credited when its last batch is done)."""
    if part.kind in ("jsonl", "text"):
        return 1.0
    if part.kind == "jsonl.gz" and os.path.isfile(part.path):
        return _gzip_ratio(part.path)
    return None


@functools.lru_cache(maxsize=256)
def _gzip_ratio(path: str) -> float | None:
    size = os.path.getsize(path)
    if size < 18:
        return None
    with open(path, "rb") as f:
        if f.read(2) != b"\x1f\x8b":
            return None
        f.seek(-4, os.SEEK_END)
        (raw,) = struct.unpack("<I", f.read(4))
    return size / raw if raw >= size else None


class PoolProgress:
    """A tqdm bar over the parts this process reads, advanced batch by batch (`of`).

    Args:
      unit: "row", "doc" (documents) or "B" (bytes; a batch is credited by its texts' bytes
        times its part's ratio, `bytes_per_text_byte`).
      sizes: part index -> its size in `unit`.
      ratios: part index -> bytes on disk per byte of text, or None ("B" only).
      desc: the bar's label (the method).
      disable: no bar (the credit is still counted: `n`, `total`, `reused`).
    """

    @classmethod
    def of(cls, source, parts: Sequence, desc: str = "", disable: bool = False) -> PoolProgress:
        """The bar of `parts` of a `Source`; of an in-memory corpus (its one part is a number:
        `jaxsel.data.adapters.CorpusSource`), in documents."""
        if not all(isinstance(p, Part) for p in parts):
            return cls("doc", {p: len(source.to_corpus()) for p in parts}, None, desc, disable)
        unit, sizes = part_sizes(parts)
        ratios = None if unit != "B" else {p.index: bytes_per_text_byte(p) for p in parts}
        return cls(
            unit, {p.index: s for p, s in zip(parts, sizes, strict=True)}, ratios, desc, disable
        )

    def __init__(
        self,
        unit: str,
        sizes: dict[int, int],
        ratios: dict[int, float | None] | None = None,
        desc: str = "",
        disable: bool = False,
    ):
        self.unit, self.size, self.ratio = unit, sizes, ratios or {}
        self.total = sum(sizes.values())
        self.credited: dict[int, int] = {}  # part -> credit so far
        self.fresh: dict[int, bool] = {}  # part -> whether any of its batches was computed
        self.current: int | None = None
        self.docs = self.new_docs = 0
        self.reused = 0  # credit of batches read back (not in the rate)
        self.start = time.perf_counter()
        scale = self.unit == "B"
        self.bar = tqdm(
            total=self.total,
            desc=desc,
            unit=self.unit,
            unit_scale=scale,
            unit_divisor=1024 if scale else 1000,
            disable=disable,
            file=sys.stderr,
            dynamic_ncols=True,
        )

    @property
    def n(self) -> int:
        return sum(self.credited.values())

    def advance(self, batch, computed: bool) -> None:
        """Credits `batch` (a `Batch` of one part): `computed` here, or read back."""
        part = int(batch.keys[0, 0])
        if part != self.current:
            self._finish(self.current)
            self.current = part
        self.docs += len(batch)
        self.new_docs += len(batch) if computed else 0
        self.fresh[part] = self.fresh.get(part, False) or computed
        ratio = self.ratio.get(part)
        if self.unit != "B":
            want = len(batch)
        elif ratio is not None:
            want = int(ratio * sum(len(t.encode("utf-8")) for t in batch.texts))
        else:
            want = 0
        self._credit(part, min(want, self.size[part] - self.credited.get(part, 0)), computed)

    def part_done(self, part: int, docs: int) -> None:
        """Credits the whole of a part computed elsewhere (`docs` documents; a Ray task)."""
        self.docs += docs
        self.new_docs += docs
        self._credit(part, self.size[part] - self.credited.get(part, 0), True)

    def end(self) -> None:
        """Credits the last part's rest: the stream has ended."""
        self._finish(self.current)
        self.current = None
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()

    def rate(self) -> float:
        """Documents computed here per second, since the bar opened."""
        return self.new_docs / max(time.perf_counter() - self.start, 1e-9)

    def _finish(self, part: int | None) -> None:
        if part is not None:
            rest = self.size[part] - self.credited.get(part, 0)
            self._credit(part, rest, self.fresh.get(part, False))

    def _credit(self, part: int, amount: int, computed: bool) -> None:
        amount = max(amount, 0)
        self.credited[part] = self.credited.get(part, 0) + amount
        self.reused += 0 if computed else amount
        bar = self.bar
        if bar.disable:
            return
        if not computed:
            credit_reused(bar, amount)
            amount = 0
        # the bar itself counts documents when its unit is "doc": the postfix adds only reuse
        said = [] if self.unit == "doc" else [f"{self.docs} doc"]
        said += [f"{self.rate():.0f} doc/s"] if self.new_docs and self.unit != "doc" else []
        old = self.docs - self.new_docs
        said += [f"{old} read back"] if old else []
        bar.set_postfix_str(", ".join(said), refresh=False)
        bar.update(amount)


def credit_reused(bar, amount: int) -> None:
    """Advances a tqdm bar by work read back rather than done: not counted in its rate, so its
    ETA is that of the work left (tqdm's moving average sees only `update`'s steps, its overall
    average counts n − initial)."""
    if not bar.disable:
        bar.n += amount
        bar.last_print_n += amount
        bar.initial += amount
