"""`jaxsel downstream`: fine-tune the LM on each selection and compare held-out CE curves."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from jaxsel.commands import common
from jaxsel.downstream import DownstreamConfig
from jaxsel.errors import JaxselError
from jaxsel.flags import option


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """LoRA- (or --full) fine-tune the LM on the first --tokens tokens of each selection (same
    tokens, steps, LR schedule and seed for all) and report held-out target cross-entropy
    (nats/token) every --eval-every tokens, plus the untrained model's."""

    out: str = option(help="output JSON of the curves", output=True)
    data: common.Data = common.data()
    selections: tuple[str, ...] = option(
        (), "`jaxsel select` outputs (ids, best first)", input=True
    )
    methods: tuple[str, ...] = option(
        (), "methods to run on pool/target (default settings) as selections"
    )
    heldout: str | None = option(
        None,
        "held-out target split (same forms as --target); None: hold out --heldout-fraction "
        "of the target, drawn with --seed (methods then see only the rest)",
        input=True,
    )
    heldout_fraction: float = option(0.2, "share of the target held out without --heldout")
    baseline: str | None = option(
        None,
        "selection (file stem or method) to compare every other with: final CE difference and "
        "its 95% paired-bootstrap interval over the held-out texts (None: 'random' when it is "
        "among the selections)",
    )
    markdown: str | None = option(None, "also write the Markdown table here", output=True)
    plot: str | None = option(None, "also write the curves as a PNG", output=True)
    workdir: str | None = option(
        None,
        "directory keeping every finished (selection, seed) curve, and the --methods' score "
        "shards in scores-METHOD/; a rerun reuses what verifies (an interrupted comparison "
        "resumes, more --seeds train only the new ones)",
    )
    model: str | None = common.model()
    dtype: str = common.dtype()
    progress: bool = option(True, "progress bar on stderr")
    finetune: DownstreamConfig = option(DownstreamConfig(), "fine-tuning", prefix="")


def run(c: Config) -> int:
    common.check_files(c)
    from jaxsel import downstream, methods
    from jaxsel.data import fs
    from jaxsel.data.outputs import write_text
    from jaxsel.models.loaders import load_lm

    if not c.selections and not c.methods:
        raise JaxselError("downstream: give --selections files and/or --methods names")
    pool, target = c.data.load_pool(), c.data.load_target()
    if c.heldout:
        heldout = c.data.read(c.heldout)
    else:
        seed = c.finetune.seed
        target, heldout = downstream.split_heldout(target, c.heldout_fraction, seed)
    selections = {}
    for path in c.selections:
        idx = downstream.read_selection(path, pool)
        selections[Path(path).stem] = [pool.texts[i] for i in idx]
    for name in c.methods:
        wd = None if c.workdir is None else fs.join(c.workdir, f"scores-{name}")
        scores = methods.score(name, pool, target, workdir=wd, progress=c.progress)
        selections[name] = [pool.texts[i] for i in scores.ranking()]
    baseline = c.baseline or ("random" if "random" in selections else None)
    if baseline is not None and baseline not in selections:
        raise JaxselError(f"downstream: --baseline {baseline!r} is not among {list(selections)}")
    lm = load_lm(c.model, c.dtype)
    report = downstream.evaluate_selections(
        lm,
        selections,
        heldout.texts,
        c.finetune,
        target=target.texts,
        progress=c.progress,
        workdir=c.workdir,
    )
    write_text(c.out, json.dumps(report, indent=1))
    table = downstream.markdown_table(report, baseline)
    print(table)
    if c.markdown:
        write_text(c.markdown, table + "\n")
    if c.plot:
        from jaxsel.plots import downstream_curves

        downstream_curves(report, c.plot)
    return 0
