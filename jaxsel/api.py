"""The notebook API: `jaxsel.score` and `jaxsel.select` on the one method contract.

    import jaxsel
    s = jaxsel.score(pool, target, method="zipfit", compressor="gzip")   # Scores, pool order
    best = jaxsel.select(pool, target, method="dsir", k=100)             # records, best first

`pool` and `target` may be a list of texts (or of records), a `Corpus`, a path (JSONL(.gz),
Parquet, a directory of text files), a pandas DataFrame or a Hugging Face `Dataset`; keyword
options are the method's Config fields, and an unknown one is an error.
"""

from __future__ import annotations

import os

from jaxsel import methods, pipeline
from jaxsel.data.adapters import as_corpus, as_source, inputs_of
from jaxsel.data.outputs import check_job
from jaxsel.data.writers import out_spec
from jaxsel.flags import check_options
from jaxsel.scores import Scores, check_rule


def _method(name: str, options: dict):
    """(method value, Config) of a registry name and keyword options, each option checked
    against its Config field first (`jaxsel.flags.check_options`)."""
    entry = methods.get(name)
    check_options(entry.config_cls, options)
    return entry(**options)


def score(
    pool,
    target=None,
    method: str = "zipfit",
    *,
    text_field: str = "text",
    id_field: str | None = "id",
    workdir: str | os.PathLike | None = None,
    progress: bool = False,
    **config,
) -> Scores:
    """One score per pool document, pool order (higher = more wanted).

    Args:
      pool, target: documents in any form listed in the module docstring (target may be None
        for methods that do not use one: random, ppl, gip).
      method: a registry name (`jaxsel.methods.names()`).
      text_field, id_field: record fields of the text and id (files, DataFrames, datasets).
      workdir: directory for resumable shards.
      **config: the method's options (fields of its Config).
    """
    m, cfg = _method(method, config)
    source = as_source(pool, text_field, id_field)
    target = None if target is None else as_corpus(target, text_field, id_field)
    with methods.Run(workdir, progress) as run:
        return pipeline.score(m, source, target, cfg, run)


def select(
    pool,
    target=None,
    method: str = "zipfit",
    *,
    k: int | None = None,
    threshold: float | None = None,
    budget_bytes: int | None = None,
    out: str | os.PathLike | None = None,
    text_field: str = "text",
    id_field: str | None = "id",
    workdir: str | os.PathLike | None = None,
    progress: bool = False,
    **config,
) -> list[dict]:
    """The selected records (every input field plus "score"), best first, ties by pool order.

    Exactly one rule: `k` (top-K), `threshold` (score > threshold) or `budget_bytes` (the
    best-first prefix within a byte budget). With `out` the records are also written there in
    the format of its name (.jsonl, .jsonl.gz, .jsonl.zst, .parquet, .array_record) with a
    `<out>.meta.json` sidecar, as `jaxsel select --out` writes them.
    """
    check_rule(k, threshold, budget_bytes)  # before any input is read
    m, cfg = _method(method, config)
    source = as_source(pool, text_field, id_field)
    spec = None if out is None else out_spec(out, what="out")
    check_job([] if spec is None else spec.outputs("out"), inputs_of(source, target), workdir)
    given = target
    target = None if target is None else as_corpus(target, text_field, id_field)
    with methods.Run(workdir, progress) as run:
        sel = pipeline.select(
            m, source, target, cfg, run, k=k, threshold=threshold, budget_bytes=budget_bytes
        )
    if spec is not None:
        rule = {"top_k": k, "threshold": threshold, "budget_bytes": budget_bytes}
        paths = {"pool": pool, "target": given, "workdir": workdir}
        options = {n: str(v) for n, v in paths.items() if isinstance(v, (str, os.PathLike))}
        options |= {"text_field": text_field, "id_field": id_field or "", **rule, **config}
        how = pipeline.provenance("jaxsel.select", m, cfg, source, given or target)
        pipeline.write_selection(
            spec, source, sel, {"method": method, **options, "provenance": how}
        )
    return pipeline.selected_records(source, sel)
