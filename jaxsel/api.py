"""The notebook API: `jaxsel.score` and `jaxsel.select` on the one method contract.

    import jaxsel
    s = jaxsel.score(pool, target, method="zipfit", compressor="gzip")   # Scores, pool order
    best = jaxsel.select(pool, target, method="dsir", k=100)             # records, best first

`pool` and `target` may be a list of texts (or of records), a `Corpus`, a path (JSONL(.gz),
Parquet, a directory of text files, `tfds:NAME:SPLIT` with `data_dir`, `hf:PATH`), a pandas
DataFrame or a Hugging Face `Dataset` (records without an id field are numbered); keyword options
are the method's Config fields, and an unknown one is an error. `select` answers in the pool's
own type: a DataFrame for a DataFrame, a `Dataset` for a Dataset (each with a "score" column),
else a list of records.

Models loaded by one call (an LM, an encoder) are kept for the next ones in this process, so a
second `jaxsel.score(..., method="embed-sim")` does not load the encoder again;
`forget_models()` lets them go.
"""

from __future__ import annotations

import os

from jaxsel import methods, pipeline
from jaxsel.data.adapters import as_corpus, as_source, inputs_of
from jaxsel.data.outputs import check_job
from jaxsel.data.writers import out_spec
from jaxsel.errors import InputError
from jaxsel.flags import check_options
from jaxsel.scores import Scores, check_rule

_MODELS: dict = {}  # loaded models kept across calls in this process (`forget_models`)


def forget_models() -> None:
    """Drops the models that earlier calls loaded (their memory is freed once unreferenced)."""
    _MODELS.clear()


def _as_callers_type(pool, records: list[dict]):
    """The selected records in the pool's own container type (DataFrame, Dataset) or a list."""
    module = type(pool).__module__
    if module.startswith("pandas") and hasattr(pool, "columns"):
        import pandas as pd

        return pd.DataFrame.from_records(records, columns=[*pool.columns, "score"])
    if module.startswith("datasets") and isinstance(getattr(pool, "column_names", None), list):
        import datasets

        columns = {c: [r[c] for r in records] for c in [*pool.column_names, "score"]}
        return datasets.Dataset.from_dict(columns)
    return records


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
    target_fields: tuple[str, str | None] | None = None,
    on_empty: str = "error",
    data_dir: str | os.PathLike | None = None,
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
      target_fields: the target's (text field, id field) when they differ from the pool's.
      on_empty: "error" or "skip" (logged) for documents with an empty text.
      data_dir: TFDS data directory of `tfds:` inputs.
      workdir: directory for resumable shards.
      **config: the method's options (fields of its Config).
    """
    _check_on_empty(on_empty)
    m, cfg = _method(method, config)
    source = as_source(pool, text_field, id_field, on_empty, data_dir)
    target = _target(target, target_fields or (text_field, id_field), on_empty, data_dir)
    with methods.Run(workdir, progress, models=_MODELS) as run:
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
    out_format: str | None = None,
    out_shards: int | None = None,
    max_rows_per_file: int | None = None,
    text_field: str = "text",
    id_field: str | None = "id",
    target_fields: tuple[str, str | None] | None = None,
    on_empty: str = "error",
    data_dir: str | os.PathLike | None = None,
    workdir: str | os.PathLike | None = None,
    progress: bool = False,
    **config,
):
    """The selected records (every input field plus "score"), best first, ties by pool order:
    a DataFrame for a DataFrame pool, a `Dataset` for a Dataset, else a list of dicts.

    Exactly one rule: `k` (top-K), `threshold` (score > threshold) or `budget_bytes` (the
    best-first prefix within a byte budget). With `out` the records are also written there,
    with a `<out>.meta.json` sidecar, byte for byte as `jaxsel select --out` writes them:
    `out_format` (None: by the name's extension, .jsonl, .jsonl.gz, .jsonl.zst, .parquet,
    .array_record; "hf": a `datasets.save_to_disk` directory), and `out_shards=N` (N files) or
    `max_rows_per_file=N` (files of N rows) for a directory of files (these need `out_format`).
    """
    check_rule(k, threshold, budget_bytes)  # before any input is read
    _check_on_empty(on_empty)
    m, cfg = _method(method, config)
    source = as_source(pool, text_field, id_field, on_empty, data_dir)
    if out is None and (out_format, out_shards, max_rows_per_file) != (None, None, None):
        raise InputError("out_format, out_shards and max_rows_per_file describe out; give out")
    for name, value in (("out_shards", out_shards), ("max_rows_per_file", max_rows_per_file)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise InputError(f"{name} must be an integer, got {value!r}")
    spec = (
        None
        if out is None
        else out_spec(out, out_format, out_shards, max_rows_per_file, what="out")
    )
    inputs = inputs_of(source, target, data_dir=data_dir)
    check_job([] if spec is None else spec.outputs("out"), inputs, workdir)
    given = target
    target = _target(target, target_fields or (text_field, id_field), on_empty, data_dir)
    with methods.Run(workdir, progress, models=_MODELS) as run:
        sel = pipeline.select(
            m, source, target, cfg, run, k=k, threshold=threshold, budget_bytes=budget_bytes
        )
    if spec is not None:
        rule = {"top_k": k, "threshold": threshold, "budget_bytes": budget_bytes}
        paths = {"pool": pool, "target": given, "workdir": workdir}
        options = {n: str(v) for n, v in paths.items() if isinstance(v, (str, os.PathLike))}
        options |= {"text_field": text_field, "id_field": id_field or "", **rule, **config}
        options |= {"out_format": spec.format, "out_shards": out_shards}
        options |= {"max_rows_per_file": max_rows_per_file}
        how = pipeline.provenance("jaxsel.select", m, cfg, source, given or target)
        pipeline.write_selection(
            spec, source, sel, {"method": method, **options, "provenance": how}
        )
    return _as_callers_type(pool, pipeline.selected_records(source, sel))


def _target(target, fields, on_empty, data_dir):
    return None if target is None else as_corpus(target, *fields, on_empty, data_dir)


def _check_on_empty(on_empty) -> None:
    if on_empty not in ("error", "skip"):
        raise InputError(f"on_empty must be 'error' or 'skip', got {on_empty!r}")
