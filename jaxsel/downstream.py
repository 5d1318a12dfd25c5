"""Downstream evaluation: does a selection train a better model? (the papers' yardstick)

For every selection (a list of pool texts, best first) the same frozen LM gets a fresh LoRA (or,
with `full`, a fresh dense delta on every weight: full fine-tuning), fine-tuned on the
selection's first N tokens, and the held-out target's cross-entropy
(nats/token) is measured every `eval_every` training tokens, next to the untrained model's.
Every selection gets exactly the same N, number of steps, learning-rate schedule and seed: the
selection's texts, each after the separator token, are concatenated in rank order into one token
stream, and its first `rows * seq_len + 1` tokens are cut into `rows = N / seq_len` overlapping
rows of `seq_len + 1` tokens (seq_len predicted tokens each). Selections are therefore compared
at equal token budgets, never at equal document counts (short documents would win that).

Built on the LM runtime (`jaxsel.lm`): `train_adapter`'s loop (`train_tokens`) and
`score_texts` for the held-out cross-entropy, truncating each held-out text to its first
`eval_max_tokens` tokens.

With a work directory (`CurveStore`), every finished (selection, seed) curve is committed as it
ends and a rerun reuses the ones that verify: an interrupted comparison resumes at the curve it
was in, and raising `seeds` trains only the new seeds.

The fine-tuning seed (LoRA init, batch order) alone moves one selection's CE by up to 0.09
nats on HumanEval at 16k tokens (README, "Selection quality"), so `seeds` > 1 fine-tunes every
selection with several seeds and reports their mean, and `paired_bootstrap` gives a confidence
interval for the difference of two selections over resamples of the held-out texts. That
interval does not see the seed noise (it resamples texts of the seed-mean NLL): the table also
gives each seed's difference from the baseline's run with the same seed (same LoRA init and
batch order), the evidence to read when seeds disagree.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np

from jaxsel import shards
from jaxsel.errors import InputError
from jaxsel.flags import option
from jaxsel.lm import TrainConfig, score_texts, train_tokens
from jaxsel.lm.adapters import init_full
from jaxsel.lm.train import check_context
from jaxsel.models import llama
from jaxsel.models.llama import LORA_TARGETS

log = logging.getLogger(__name__)

LORA_LR = 2e-3  # default peak LR of LoRA fine-tuning
FULL_LR = 5e-5  # default peak LR of full fine-tuning


@dataclasses.dataclass(frozen=True)
class DownstreamConfig:
    """Downstream fine-tuning settings (the CPU-small default finishes in minutes)."""

    tokens: int = option(
        50_000,
        "N, training tokens per selection (a multiple of seq_len * batch_size is exact; "
        "otherwise rounded down to whole rows)",
    )
    seq_len: int = option(256, "predicted tokens per training row")
    batch_size: int = option(8, "rows per optimizer step")
    lr: float | None = option(
        None,
        f"peak learning rate (linear warm-up, cosine decay to 0); None: {LORA_LR} for the "
        f"LoRA, {FULL_LR} for full fine-tuning",
    )
    warmup_steps: int = option(2, "warm-up steps (optimizer steps)")
    rank: int = option(8, "LoRA rank")
    alpha: float = option(16.0, "LoRA alpha (scale alpha / rank)")
    targets: tuple[str, ...] = option(("wq", "wk", "wv", "wo"), "LoRA projections, in every layer")
    doc_tokens: int = option(
        0,
        "each selected text contributes at most its first N tokens (0: whole texts; a small "
        "budget of whole documents is only the ranking's first few documents)",
    )
    eval_every: int = option(
        10_000, "training tokens between held-out evaluations (0: only at the end)"
    )
    eval_max_tokens: int = option(256, "held-out texts are truncated to this many tokens")
    eval_batch_size: int = option(8, "held-out texts per scoring call")
    seed: int = option(0, "LoRA init and batch order (the same for every selection)")
    seeds: int = option(
        1,
        "fine-tune every selection with seeds seed .. seed + N - 1 and report the mean curve "
        "and each row's seed range (one seed's CE can move by more than the difference "
        "between two selections)",
    )
    full: bool = option(
        False,
        "full fine-tuning (every weight trainable) instead of the LoRA (rank, alpha "
        "and targets are then unused)",
    )

    def __post_init__(self):
        if self.lr is None:
            object.__setattr__(self, "lr", FULL_LR if self.full else LORA_LR)
        for name in ("tokens", "seq_len", "batch_size", "rank", "eval_max_tokens", "seeds"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"downstream: {name} must be a positive integer, got {v!r}")
        if self.tokens < self.seq_len:
            raise InputError(
                f"downstream: tokens={self.tokens} is less than one row of seq_len={self.seq_len}"
            )
        if self.eval_every < 0 or self.doc_tokens < 0:
            raise InputError(
                "downstream: eval_every and doc_tokens must be >= 0, got "
                f"{self.eval_every}, {self.doc_tokens}"
            )
        bad = [t for t in self.targets if t not in LORA_TARGETS]
        if bad or not self.targets:
            raise InputError(f"downstream: LoRA targets must be among {LORA_TARGETS}, got {bad}")

    @property
    def rows(self) -> int:
        return self.tokens // self.seq_len

    @property
    def steps(self) -> int:
        return -(-self.rows // self.batch_size)

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            lr=self.lr,
            steps=self.steps,
            batch_size=self.batch_size,
            seed=self.seed,
            max_tokens=self.seq_len,
            schedule="cosine",
            warmup_steps=min(self.warmup_steps, self.steps - 1),
            group=1,
        )


class Curve(NamedTuple):
    """Held-out cross-entropy of one selection: ce[i] (nats/token) after tokens[i] training
    tokens (tokens[0] = 0 is the untrained model); final_nll / final_tokens: each held-out text's
    NLL sum (nats) and token count after the last step (ce[-1] = sum(final_nll) /
    sum(final_tokens)), for paired comparisons of selections over the same texts. Over several
    fine-tuning seeds, ce, train_loss and final_nll are means over the seeds (every seed scores
    the same texts, so the mean CE is the CE of the mean per-text NLL) and ce_seeds[s] is seed
    s's own curve."""

    name: str
    tokens: list[int]
    ce: list[float]
    train_loss: list[float]  # per optimizer step
    final_nll: list[float]
    final_tokens: list[int]
    ce_seeds: list[list[float]]


class CurveStore(shards.VerifiedStore):
    """Finished fine-tuning curves of one comparison (`shards.VerifiedStore`).

    The record is everything a curve depends on besides its training tokens and seed: the
    model's fingerprint, the held-out texts' fingerprint and the fine-tuning settings (without
    `seed` and `seeds`). A unit is one (training rows, seed) curve,
    `curve-<sha256 of the rows>[:16]-s<seed>-<tag>.json` with the tag over the rows' digest, the
    seed and the file's bytes: a selection is recognised by the tokens it trains on, whatever
    it is called, and a curve is reused only when it verifies."""

    def __init__(self, workdir, model: str, heldout: Sequence[str], config: DownstreamConfig):
        settings = dataclasses.asdict(config)
        del settings["seed"], settings["seeds"]
        record = {
            "format": 1,
            "job": "downstream curves",
            "model": model,
            "heldout": shards.fingerprint_texts(heldout),
            "finetune": settings,
        }
        super().__init__(workdir, record)

    @staticmethod
    def digest(rows: np.ndarray) -> str:
        """sha256 of the training rows (shape and int32 bytes)."""
        arr = np.ascontiguousarray(rows, np.int32)
        return hashlib.sha256(repr(arr.shape).encode() + arr.tobytes()).hexdigest()

    def _stem(self, digest: str, seed: int) -> str:
        return f"curve-{digest[:16]}-s{seed}"

    def _tag(self, digest: str, seed: int, data: bytes) -> str:
        return self.tag(digest.encode(), str(seed).encode(), data)

    def load(self, rows: np.ndarray, seed: int, name: str) -> Curve | None:
        """The curve of these rows and seed if a file verifies (others are logged and removed)."""
        digest, found = self.digest(rows), None
        for p, tag in self.candidates(self._stem(digest, seed), ".json"):
            try:
                data = self.read(p)
            except (OSError, InputError):
                data = b""
            if found is None and tag == self._tag(digest, seed, data):
                found = Curve(name, **json.loads(data))
                continue
            self.discard(p, why="damaged or from another job (does not verify); redoing it")
        if found is not None:
            log.info("downstream %s (seed %d): reusing its verified curve", name, seed)
        return found

    def save(self, rows: np.ndarray, seed: int, curve: Curve) -> None:
        """Commits a finished curve under its verifying name."""
        digest = self.digest(rows)
        fields = curve._asdict()
        del fields["name"]
        data = json.dumps(fields, sort_keys=True).encode()
        self.commit(
            self.at(f"{self._stem(digest, seed)}-{self._tag(digest, seed, data)}.json"), data
        )


def pack_tokens(
    tokenizer,
    texts: Sequence[str],
    budget: int,
    seq_len: int,
    name: str,
    doc_tokens: int = 0,
    separator: bool = True,
) -> tuple[np.ndarray, int]:
    """The first `rows * seq_len + 1` tokens of the separator-joined stream, as [rows, seq_len + 1]
    overlapping rows (row i = stream[i * seq_len : (i + 1) * seq_len + 1]; rows = budget //
    seq_len), and the number of texts they draw on. Each text is preceded by the tokenizer's
    `bos_id` (the document separator the model was pretrained with; `separator=False` joins the
    texts with nothing between them). With `doc_tokens` > 0 each text contributes only its first
    doc_tokens tokens, so the budget spans more of the ranking. A selection with fewer tokens is
    an InputError naming it and its size."""
    rows = budget // seq_len
    need = rows * seq_len + 1
    bos = [] if tokenizer.bos_id is None or not separator else [tokenizer.bos_id]
    stream: list[int] = []
    used = 0
    for s in range(0, len(texts), 256):
        for ids in tokenizer.encode_batch(list(texts[s : s + 256])):
            if len(stream) >= need:
                break
            stream.extend(bos + (ids[:doc_tokens] if doc_tokens else ids))
            used += 1
    if len(stream) < need:
        raise InputError(
            f"downstream: selection {name!r} holds {len(stream)} tokens ({len(texts)} texts), "
            f"fewer than the budget of {rows * seq_len} training tokens (+1); lower --tokens or "
            "select more"
        )
    arr = np.asarray(stream[:need], np.int32)
    idx = np.arange(rows)[:, None] * seq_len + np.arange(seq_len + 1)[None]
    return arr[idx], used


def read_selection(path, pool) -> list[int]:
    """Pool indices of a `jaxsel select` output (records with an `id`, best first), in file
    order. An id not in the pool, a duplicate or a record without an id is an InputError naming
    the file and line (`jaxsel.evaluate.selection_positions`)."""
    from jaxsel.data.formats import iter_jsonl
    from jaxsel.evaluate import selection_positions

    return selection_positions(pool, [(loc, rec) for _, loc, rec in iter_jsonl(path)], path)


def split_heldout(target, fraction: float, seed: int = 0):
    """(target for selection, held-out split): a seeded random `fraction` of the target's items
    is held out (at least 1), the rest stays the target; both keep the target's order."""
    n = len(target)
    if not 0 < fraction < 1 or n < 2:
        raise InputError(
            f"downstream: cannot hold out a fraction {fraction} of a {n}-item target (need "
            "0 < fraction < 1 and at least 2 items)"
        )
    k = min(n - 1, max(1, round(n * fraction)))
    held = np.zeros(n, bool)
    held[np.random.default_rng(seed).permutation(n)[:k]] = True
    return target.subset(np.flatnonzero(~held)), target.subset(np.flatnonzero(held))


def text_overlap(a: Sequence[str], b: Sequence[str]) -> int:
    """Number of texts of `a` that also occur (exactly, after stripping surrounding whitespace)
    in `b`: an exact-duplicate leak between a held-out split and training data fakes a win."""

    def key(t: str) -> bytes:
        return hashlib.sha256(t.strip().encode("utf-8")).digest()

    seen = {key(t) for t in b}
    return sum(key(t) in seen for t in a)


def heldout_nll(lm, adapter, heldout: Sequence[str], config: DownstreamConfig, *, mesh=None):
    """(nll [N] float64, n_tokens [N] int64): each held-out text's token NLL sum (nats) and
    token count, truncated to its first eval_max_tokens tokens, under the model with `adapter`
    (or none); over `mesh` (default: this process's devices)."""
    res = score_texts(
        lm,
        adapter,
        heldout,
        max_tokens=config.eval_max_tokens,
        batch_size=config.eval_batch_size,
        name="downstream",
        mesh=mesh,
    )
    return -res.values.total, res.n_tokens


def heldout_ce(
    lm, adapter, heldout: Sequence[str], config: DownstreamConfig, *, mesh=None
) -> float:
    """Mean token cross-entropy (nats/token) of the held-out texts (`heldout_nll`)."""
    nll, n = heldout_nll(lm, adapter, heldout, config, mesh=mesh)
    return float(nll.sum() / max(int(n.sum()), 1))


def finetune_curve(
    lm,
    name: str,
    rows: np.ndarray,
    heldout: Sequence[str],
    config: DownstreamConfig,
    untrained_ce: float,
    *,
    progress: bool = False,
    mesh=None,
    store: CurveStore | None = None,
) -> Curve:
    """LoRA (or full) fine-tuning on packed rows ([rows, seq_len + 1], `pack_tokens`) with each
    of `config.seeds` seeds, held-out CE every eval_every training tokens and after the last
    step; the curve is the mean over the seeds. With a `store`, each seed's curve is read back
    when one verifies, else trained and committed (`shards.resumed`)."""

    def one_seed(cfg: DownstreamConfig) -> Curve:
        if cfg.full:
            adapter = init_full(lm.params)
        else:
            adapter = llama.init_lora(
                jax.random.key(cfg.seed),
                lm.params,
                lm.cfg,
                cfg.rank,
                cfg.alpha,
                cfg.targets,
            )
        tokens_at, ce, losses, final = [0], [untrained_ce], [], []
        per_step = cfg.batch_size * cfg.seq_len
        every = cfg.eval_every

        def on_step(step: int, loss: float, state) -> None:
            losses.append(loss)
            seen = min(step * per_step, rows.shape[0] * cfg.seq_len)
            last = step == cfg.steps
            if last or (every and seen // every > tokens_at[-1] // every):
                tokens_at.append(seen)
                nll, n = heldout_nll(lm, state.adapter, heldout, cfg, mesh=mesh)
                ce.append(float(nll.sum() / max(int(n.sum()), 1)))
                final[:] = [nll.tolist(), n.tolist()]
                log.info(
                    "downstream %s (seed %d): %d tokens, held-out CE %.4f",
                    name,
                    cfg.seed,
                    seen,
                    ce[-1],
                )

        train_tokens(
            lm.params,
            lm.cfg,
            adapter,
            list(rows),
            cfg.train_config(),
            name=f"downstream {name}",
            progress=progress,
            on_step=on_step,
            mesh=mesh,
        )
        return Curve(name, tokens_at, ce, losses, *final, [ce])

    seeds = range(config.seed, config.seed + config.seeds)
    done = shards.resumed(
        seeds,
        lambda s: one_seed(dataclasses.replace(config, seed=s, seeds=1)),
        None if store is None else lambda s: store.load(rows, s, name),
        None if store is None else lambda s, curve: store.save(rows, s, curve),
    )
    curves = [curve for _, curve, _ in done]
    ce = np.asarray([c.ce for c in curves])
    return Curve(
        name,
        curves[0].tokens,
        ce.mean(0).tolist(),
        np.mean([c.train_loss for c in curves], 0).tolist(),
        np.mean([c.final_nll for c in curves], 0).tolist(),
        curves[0].final_tokens,
        ce.tolist(),
    )


def evaluate_selections(
    lm,
    selections: dict[str, Sequence[str]],
    heldout: Sequence[str],
    config: DownstreamConfig,
    *,
    target: Sequence[str] | None = None,
    progress: bool = False,
    mesh=None,
    workdir=None,
) -> dict:
    """Curves of every selection (name -> texts, best first) on the held-out texts.

    Every selection is packed first, so a too-small one fails before any training. Returns a
    JSON-serialisable report: config, untrained CE, one curve per selection, and the number of
    held-out texts that occur exactly in the target set and in the texts each selection trains
    on (both warned about: an exact-duplicate leak fakes a win). Training and scoring run over
    `mesh` (default: this process's devices, every one holding the model and the adapter's
    training state). With a `workdir` (`CurveStore`) every finished (selection, seed) curve is
    committed there and the verified ones are reused."""
    if not heldout:
        raise InputError("downstream: the held-out split is empty")
    check_context(lm.cfg, config.seq_len, "downstream")
    check_context(lm.cfg, config.eval_max_tokens, "downstream")
    packed = {
        name: pack_tokens(
            lm.tokenizer, texts, config.tokens, config.seq_len, name, config.doc_tokens
        )
        for name, texts in selections.items()
    }
    overlap = {
        name: text_overlap(heldout, selections[name][:used]) for name, (_, used) in packed.items()
    }
    if target is not None:
        overlap["(target)"] = text_overlap(heldout, target)
    for name, n in overlap.items():
        if n:
            what = "the target set" if name == "(target)" else f"selection {name!r}"
            log.warning(
                "downstream: %d of %d held-out texts also occur in %s (an exact-duplicate leak "
                "makes CE look better than it is)",
                n,
                len(heldout),
                what,
            )
    store = None if workdir is None else CurveStore(workdir, lm.fingerprint, heldout, config)
    report = {
        "config": dataclasses.asdict(config),
        "model": lm.fingerprint,
        "heldout_texts": len(heldout),
        "overlap": overlap,
        "texts_used": {name: used for name, (_, used) in packed.items()},
        "untrained_ce": heldout_ce(lm, None, heldout, config, mesh=mesh),
        "curves": {},
    }
    for name, (rows, _) in packed.items():
        curve = finetune_curve(
            lm,
            name,
            rows,
            heldout,
            config,
            report["untrained_ce"],
            progress=progress,
            mesh=mesh,
            store=store,
        )
        report["curves"][name] = curve._asdict()
    return report


def paired_bootstrap(
    curve: dict, base: dict, *, resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """2.5% and 97.5% quantiles of final CE(curve) - CE(base) over `resamples` resamples (with
    replacement) of the held-out texts, the same texts for both: the pairing removes the texts'
    own difficulty from the comparison. `curve` and `base` are report curves (`Curve._asdict()`)
    over the same held-out texts."""
    n = len(base["final_nll"])
    if len(curve["final_nll"]) != n or list(curve["final_tokens"]) != list(base["final_tokens"]):
        raise InputError("downstream: a paired bootstrap needs curves over the same held-out texts")
    idx = np.random.default_rng(seed).integers(0, n, (resamples, n))
    tok = np.asarray(base["final_tokens"], np.float64)[idx].sum(1)
    a = np.asarray(curve["final_nll"], np.float64)[idx].sum(1) / tok
    b = np.asarray(base["final_nll"], np.float64)[idx].sum(1) / tok
    lo, hi = np.quantile(a - b, [0.025, 0.975])
    return float(lo), float(hi)


def tokens_to_reach(tokens: Sequence[int], ce: Sequence[float], level: float) -> float | None:
    """Training tokens at which the curve (ce[i] after tokens[i]) first reaches `level`, linear
    between evaluations (the first point at or below it when the curve starts there); None when
    it never does. ZIP-FIT's "x % fewer tokens" compares this with the baseline's budget."""
    for i, (t, c) in enumerate(zip(tokens, ce, strict=True)):
        if c <= level:
            if i == 0:
                return float(t)
            t0, c0 = tokens[i - 1], ce[i - 1]
            return float(t0 + (t - t0) * (c0 - level) / (c0 - c))
    return None


def _reach_cell(c: dict, level: float, budget: int) -> str:
    """`tokens_to_reach` of the mean curve as "tokens (x % fewer)", with several seeds the seeds'
    own range ("never" past the budget)."""
    at = tokens_to_reach(c["tokens"], c["ce"], level)
    if at is None:
        return "never"
    cell = f"{at:,.0f} ({1 - at / budget:.0%} fewer)"
    if len(c["ce_seeds"]) > 1:
        each = [tokens_to_reach(c["tokens"], s, level) for s in c["ce_seeds"]]
        lo = min((t for t in each if t is not None), default=None)
        hi = "never" if None in each else f"{max(each):,.0f}"
        cell += f" seeds {lo:,.0f}–{hi}" if lo is not None else " seeds never"
    return cell


def markdown_table(report: dict, baseline: str | None = None) -> str:
    """Held-out CE per selection at each evaluated token count, the change from untrained, with
    several fine-tuning seeds each row's lowest and highest seed CE, and with a `baseline`
    selection each row's final CE minus the baseline's with its 95% paired-bootstrap interval
    (over held-out texts), with several seeds the same difference per seed (each against the
    baseline's run with that seed), and the training tokens it needs to reach the baseline's
    final CE (`tokens_to_reach` on the mean curve, with the seeds' range; "x % fewer" than the
    baseline's budget)."""
    curves = report["curves"]
    if baseline is not None and baseline not in curves:
        raise InputError(f"downstream: baseline {baseline!r} is not among {sorted(curves)}")
    seeds = report["config"].get("seeds", 1) > 1
    points = sorted({t for c in curves.values() for t in c["tokens"]})
    head = ["selection", *[f"CE@{t}" for t in points], "delta vs untrained"]
    head += ["seed CE min–max"] if seeds else []
    if baseline:
        head += [f"vs {baseline} (95% bootstrap)"]
        head += [f"vs {baseline}, per seed"] if seeds else []
        head += [f"tokens to {baseline}'s final CE"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, c in curves.items():
        at = dict(zip(c["tokens"], c["ce"], strict=True))
        cells = [name, *[f"{at[t]:.4f}" if t in at else "" for t in points]]
        cells.append(f"{c['ce'][-1] - report['untrained_ce']:+.4f}")
        if seeds:
            final = [s[-1] for s in c["ce_seeds"]]
            cells.append(f"{min(final):.4f}–{max(final):.4f}")
        if baseline and name == baseline:
            cells += [""] * (3 if seeds else 2)
        elif baseline:
            base = curves[baseline]
            lo, hi = paired_bootstrap(c, base)
            cells.append(f"{c['ce'][-1] - base['ce'][-1]:+.4f} [{lo:+.4f}, {hi:+.4f}]")
            if seeds:
                pairs = zip(c["ce_seeds"], base["ce_seeds"], strict=True)
                cells.append(", ".join(f"{a[-1] - b[-1]:+.4f}" for a, b in pairs))
            cells.append(_reach_cell(c, base["ce"][-1], base["tokens"][-1]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
