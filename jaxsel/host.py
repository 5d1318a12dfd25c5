"""The host a job runs on: its CPU as XLA:CPU compiles for it, and the on-disk cache of compiled
programs the command line keeps per CPU.

A SmolLM2 decode step takes seconds to compile on a 2-core CPU and every `jaxsel` command is a
new process: with the cache a second `jaxsel decompress` runs its first step after ~1 s instead
of ~4 s (`docs/finezip.md`, forged archives). JAX's cache key covers the program, the compile
options, $XLA_FLAGS, jaxlib's and the backend's versions, not the host CPU; the directory is per
`cpu_signature`, so a home directory shared by machines of different CPUs never loads code
compiled for another instruction set. JAX writes an entry in place (process 0 of a
several-process job only): a reader that meets one half-written, or one torn by `kill -9`,
warns and compiles again; `rm -r` of the directory (or JAXSEL_COMPILE_CACHE=off) clears that.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import re
import sys
from pathlib import Path

log = logging.getLogger(__name__)

# JAX's default is 1 s; on 2 cores most of a command's programs compile in 0.1-1 s each.
MIN_COMPILE_SECONDS = 0.1

# /proc/cpuinfo flags that change what XLA:CPU (LLVM) may emit: vector and bit-manipulation
# extensions (x86), SIMD/SVE/matrix extensions (Arm). The rest (mitigations, virtualisation)
# would only make the record differ between hosts that compute the same floats.
_ISA_FLAGS = re.compile(
    r"(sse|ssse|avx|fma|f16c|amx|bmi|popcnt|abm|movbe|adx|aes|pclmul|sha|vaes|vpclmul|gfni"
    r"|asimd|sve|sme(?!p)|bf16|i8mm|fphp).*"
)


def cpu_signature() -> str:
    """The host CPU as XLA:CPU compiles for it, in ~50 header bytes: architecture, vendor and
    model (LLVM tunes code per model, e.g. the preferred vector width) and a digest of the
    instruction-set extensions, e.g. "x86_64 GenuineIntel 6/143 isa:0123456789ab". From
    /proc/cpuinfo (Linux); elsewhere the architecture and `platform.processor()`. The core count
    is left out: a tiny model's archive decoded bit-exactly on 1 of the 2 cores it was made with."""
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if not key.strip() and info:  # end of the first processor's block
                break
            info.setdefault(key.strip(), value.strip())
    except OSError:
        info = {"model": platform.processor()}
    vendor = info.get("vendor_id") or info.get("CPU implementer", "")
    model = "/".join(info[k] for k in ("cpu family", "model", "CPU part") if info.get(k))
    flags = (info.get("flags") or info.get("Features") or "").split()
    isa = " ".join(sorted(f for f in flags if _ISA_FLAGS.fullmatch(f)))
    isa = f"isa:{hashlib.sha256(isa.encode()).hexdigest()[:12]}" if isa else ""
    return " ".join(x for x in (platform.machine(), vendor, model, isa) if x)


def compile_cache_dir() -> Path | None:
    """Where the command line keeps compiled programs: $JAXSEL_COMPILE_CACHE (a directory, or
    "off"), else xla/ under jaxsel's cache ($JAXSEL_CACHE, ~/.cache/jaxsel); one subdirectory
    per `cpu_signature`. None when off, or when the user set JAX's own cache directory."""
    from jaxsel.data.defaults import cache_dir

    setting = os.environ.get("JAXSEL_COMPILE_CACHE", "")
    if setting == "off" or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return None
    base = Path(setting) if setting else cache_dir() / "xla"
    return base / hashlib.sha256(cpu_signature().encode()).hexdigest()[:16]


def use_compile_cache() -> Path | None:
    """Turns on JAX's persistent compilation cache at `compile_cache_dir()` for this process and
    the processes it starts (JAX reads $JAX_COMPILATION_CACHE_DIR when imported), caching every
    program that took more than `MIN_COMPILE_SECONDS` to compile unless
    $JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS says otherwise. The command line calls it before
    JAX is imported; once JAX is (a notebook, a test calling `cli.main`) it does nothing: JAX's
    configuration is then the caller's (`jax_compilation_cache_dir`). A directory that cannot
    be made leaves the cache off, with an INFO line. The cache runs what it holds, so it lives
    in the user's own directory (mode 0700): JAX's docs, "the compilation cache is considered
    trusted"."""
    where = compile_cache_dir()
    if where is None or "jax" in sys.modules:
        return None
    try:
        where.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        log.info("no compilation cache (%s)", e)
        return None
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(where)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", str(MIN_COMPILE_SECONDS))
    return where
