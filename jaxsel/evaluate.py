"""Evaluation of a selection on a pool with a `domain` field: domain mix, precision@K, and
precision by length bucket (compression scores are length-biased, so report both)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from jaxsel.errors import InputError, JaxselError
from jaxsel.stats import length_buckets, spearman


def domain_mix(domains: Sequence[str]) -> dict[str, float]:
    """Fraction of each domain in a selection, largest first."""
    if not domains:
        return {}
    c = Counter(domains)
    return {d: n / len(domains) for d, n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))}


def precision_at_k(ranked_domains: Sequence[str], domain: str, k: int) -> float:
    """Fraction of the first k ranked items whose domain is `domain`."""
    if k <= 0 or k > len(ranked_domains):
        raise InputError(f"k={k} outside 1..{len(ranked_domains)}")
    return sum(d == domain for d in ranked_domains[:k]) / k


def precision_curve(ranked_domains: Sequence[str], domain: str) -> np.ndarray:
    """Precision@K of `domain` for every K = 1..len(ranked_domains) (entry K-1), float64."""
    if not len(ranked_domains):
        raise InputError("precision curve of an empty ranking")
    hits = np.cumsum(np.asarray(ranked_domains, dtype=object) == domain, dtype=np.float64)
    return hits / np.arange(1, hits.size + 1)


def precision_by_bucket(
    ranking: np.ndarray,
    domains: Sequence[str],
    lengths: Sequence[int],
    domain: str,
    k: int,
    n_buckets: int = 4,
) -> list[dict]:
    """Per length bucket: precision@k' of the ranking restricted to that bucket, where
    k' = round(k * bucket share of the target domain) (at least 1). Answers "does the method
    find the domain among documents of similar length", free of the length prior."""
    doms = np.asarray(domains)
    buckets = length_buckets(lengths, n_buckets)
    lengths = np.asarray(lengths)
    total = max(1, int((doms == domain).sum()))
    out = []
    for b in range(n_buckets):
        in_b = buckets[ranking] == b
        r = ranking[in_b]
        share = int((doms[buckets == b] == domain).sum())
        kb = max(1, round(k * share / total))
        kb = min(kb, r.size)
        out.append(
            {
                "bucket": b,
                "bytes": f"{int(lengths[buckets == b].min())}-{int(lengths[buckets == b].max())}",
                "k": kb,
                "precision": float((doms[r[:kb]] == domain).mean()) if kb else float("nan"),
                "selected_of_top_k": int(np.isin(ranking[:k], r).sum()),
            }
        )
    return out


def domains_of(pool, field: str) -> list[str]:
    """The `field` value of every pool record, as strings; a pool without it is an error."""
    domains = [str(d) for d in pool.field(field)]
    if all(d == "None" for d in domains):
        raise JaxselError(f"pool has no {field!r} field")
    return domains


def selection_report(
    pool, rows: Sequence[tuple[str, dict]], domain: str, field: str, k: int | None, name: str
) -> dict:
    """Domain mix and precision@k of a selection (records, best first) or of a score file
    ({id, score} per pool item, then ranked; k defaults to a tenth of the pool and precision by
    length bucket is added).

    Args:
      rows: (location "file:line", record) of every line of the file named `name`.
    """
    ranking, is_scores = selection_ranking(pool, rows, name)
    domains = domains_of(pool, field)
    # default cut-off: a tenth of the pool for scores (at least 1), the whole selection otherwise
    if k is None:
        k = max(1, len(pool) // 10) if is_scores else len(ranking)
    ranked = [domains[i] for i in ranking]
    report = {
        "k": k,
        "precision_at_k": precision_at_k(ranked, domain, k),
        "base_rate": domains.count(domain) / len(domains),
        "domain_mix": domain_mix(ranked[:k]),
    }
    if is_scores:
        report["by_length_bucket"] = precision_by_bucket(ranking, domains, pool.nbytes(), domain, k)
    return report


def selection_positions(pool, rows: Sequence[tuple[str, dict]], name: str) -> list[int]:
    """Pool indices of a selection file's rows, in file order. An empty file, a record without
    an id, an id not in the pool or a duplicate is an InputError naming the file (and line).

    Args:
      rows: (location "file:line", record) of every line of the file named `name`.
    """
    from jaxsel.data.corpus import check_id

    if not rows:
        raise InputError(f"{name}: empty selection")
    pos = {i: n for n, i in enumerate(pool.ids)}
    sel, seen = [], set()
    for loc, rec in rows:
        if "id" not in rec:
            raise InputError(f"{loc}: missing field 'id'")
        i = check_id(rec["id"], loc)
        if i not in pos:
            raise InputError(f"{loc}: id {i!r} is not in the pool")
        if i in seen:
            raise InputError(f"{loc}: duplicate id {i!r}")
        seen.add(i)
        sel.append(pos[i])
    return sel


def selection_ranking(pool, rows: Sequence[tuple[str, dict]], name: str) -> tuple[np.ndarray, bool]:
    """Pool indices of a selection file's rows, best first (a score file: all items ranked by
    score), and whether it was a score file. See `selection_report`."""
    from jaxsel.scores import Scores, score_from_json

    sel = selection_positions(pool, rows, name)
    first = rows[0][1]
    is_scores = "score" in first and len(sel) == len(pool) and "text" not in first
    if not is_scores:
        for loc, rec in rows:  # unused here, but a score that is not a number is a damaged file
            if "score" in rec:
                score_from_json(rec["score"], loc)
        return np.array(sel), False
    vals = np.empty(len(pool))
    for (loc, rec), n in zip(rows, sel, strict=True):
        vals[n] = score_from_json(rec.get("score"), loc)
    return Scores(vals, "file").ranking(), True


def compare_row(
    scores, domains: Sequence[str], lengths: Sequence[int], domain: str, ks: Sequence[int], secs
) -> dict:
    """One method's row of `jaxsel compare`: precision@k for each k, Spearman(score, bytes),
    precision by length bucket at the first k."""
    ranking = scores.ranking()
    ranked = [domains[i] for i in ranking]
    return {
        "method": scores.method,
        "seconds": round(secs, 3),
        **{f"P@{k}": precision_at_k(ranked, domain, k) for k in ks},
        "spearman_score_vs_bytes": spearman(scores.values, lengths),
        "by_length_bucket": precision_by_bucket(ranking, domains, lengths, domain, ks[0]),
    }
