"""`jaxsel` command line: host I/O and argument plumbing only; every computation lives in the
library. Errors a user can cause print one line (`error: ...`) and exit with status 2."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time

from jaxsel import commands, flags, methods
from jaxsel.data import outputs
from jaxsel.data.writers import OUT_FORMATS
from jaxsel.errors import InputError, JaxselError
from jaxsel.version import __version__

log = logging.getLogger("jaxsel")


# ----------------------------------------------------------------------------- data arguments


def _add_data_args(p: argparse.ArgumentParser, target: bool = True) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--pool",
        help="pool: JSONL(.gz), Parquet, a directory of text files, tfds:NAME[/CONFIG]:SPLIT "
        "(prepared in --data-dir) or hf:PATH (a saved datasets.Dataset); default: the embedded "
        "mixed pool",
    )
    if target:
        g.add_argument("--target", help="target/reference set, same forms (default: HumanEval)")
    g.add_argument("--text-field", default="text", help="text field of JSONL/Parquet records")
    g.add_argument(
        "--id-field",
        default="id",
        help="id field of JSONL/Parquet records ('' numbers records by line)",
    )
    g.add_argument(
        "--skip-empty", action="store_true", help="skip (and log) empty texts instead of failing"
    )
    g.add_argument("--data-dir", help="TFDS data directory of tfds: inputs (default: TFDS's own)")


def _read(path, args):
    from jaxsel.data import read_corpus

    on_empty = "skip" if args.skip_empty else "error"
    return read_corpus(path, args.text_field, args.id_field or None, on_empty, args.data_dir)


def _load_target(args):
    from jaxsel.data.defaults import humaneval_target

    return _read(args.target, args) if getattr(args, "target", None) else humaneval_target()


# Flags naming files or directories a command reads (those a parser lacks are skipped); a
# method's own input fields are marked in its Config (`input=True`) and added by `_method_parser`.
INPUT_FLAGS = ("pool", "target", "model", "input", "selection", "heldout")


def _check_outputs(args, *outs: tuple, more_inputs=()) -> None:
    """Refuses every output location (`(flag, path[, directory])`) and the workdir before any
    work, against everything the command reads (`jaxsel.data.outputs.check_job`)."""
    from jaxsel.data.adapters import inputs_of

    flags = (*INPUT_FLAGS, *getattr(args, "method_inputs", ()), "config")
    specs = [more_inputs] + [getattr(args, f, None) for f in flags]
    specs = [s for v in specs for s in (v if isinstance(v, (list, tuple)) else [v]) if s]
    inputs = inputs_of(*specs, data_dir=getattr(args, "data_dir", None))
    outputs.check_job(outs, inputs, getattr(args, "workdir", None))


# ------------------------------------------------------------------------- score and select


def _method_parser(cmd: str, argv: list[str]) -> tuple[argparse.ArgumentParser, methods.Entry]:
    """Two-phase parsing: --method picks the method, whose flags (generated from its Config)
    are then added."""
    known = _pre_parser().parse_known_args(argv)[0]
    from_file = flags.read_config_file(known.config) if known.config else {}
    method = methods.get(known.method or from_file.get("method") or "zipfit")
    p = argparse.ArgumentParser(prog=f"jaxsel {cmd}", description=f"{cmd} a pool with a method")
    p.add_argument("--method", default="zipfit", choices=methods.names())
    p.add_argument(
        "--config",
        metavar="FILE",
        help="options from a JSON (or YAML) file: keys are the flags without dashes, e.g. "
        '{"method": "zipfit", "top_k": 100}; an output\'s .meta.json is one (flags given here win)',
    )
    p.add_argument(
        "--print-config", action="store_true", help="print the resolved options as JSON and exit"
    )
    _add_data_args(p)
    p.add_argument("--workdir", help="directory for resumable shards of long scoring jobs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group(
        "many hosts (JAX multi-controller; automatic on TPU pods, SLURM srun and Open MPI)"
    )
    g.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0")
    g.add_argument("--num-processes", type=int, help="number of processes of the job")
    g.add_argument("--process-id", type=int, help="this process's id, 0 .. N-1")
    g = p.add_argument_group("engine of the CPU stage (zipfit, zipfit-fast, dsir)")
    g.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this process; ray: Ray Data map_batches on a Ray cluster (default: local)",
    )
    g.add_argument("--ray-address", help="a running Ray cluster (default: start a local one)")
    g.add_argument("--ray-workers", type=int, help="Ray actors at once (default: all CPUs)")
    g = p.add_argument_group("output (--out, with its provenance in <out>.meta.json)")
    g.add_argument(
        "--out-format",
        choices=tuple(OUT_FORMATS),
        help="format of --out (default: by its extension: .jsonl, .jsonl.gz, .jsonl.zst, "
        ".parquet, .array_record); hf: a datasets.save_to_disk directory",
    )
    g.add_argument("--out-shards", type=int, help="write --out as a directory of N files")
    g.add_argument(
        "--max-rows-per-file", type=int, help="write --out as a directory of files of N rows"
    )
    flags.add_config_args(p.add_argument_group(f"{method.name} options"), method.config_cls)
    p.set_defaults(method_inputs=methods.fields_with(method.config_cls, "input"))
    return p, method


def _pre_parser() -> argparse.ArgumentParser:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--method")
    pre.add_argument("--config")
    return pre


def _parse_args(p: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parses `argv` over the options of `--config FILE` (flags given on the command line win;
    a selection rule given there replaces the file's)."""
    path = _pre_parser().parse_known_args(argv)[0].config
    options = flags.read_config(path, p) if path else {}
    rules = ("top_k", "threshold", "budget_bytes")
    given = p.parse_args(argv, argparse.Namespace(**dict.fromkeys(rules)))
    if any(getattr(given, r) is not None for r in rules):
        options = {k: v for k, v in options.items() if k not in rules}
    p.set_defaults(**options)
    return p.parse_args(argv)


# options a sidecar does not record: how one run is placed and shown, not what it computes
RUN_ONLY = ("no_progress", "coordinator", "num_processes", "process_id", "ray_address")


def _options(p: argparse.ArgumentParser, args) -> dict:
    """The resolved options of a run by name: what `--print-config` prints and a sidecar
    records (itself a valid `--config` file)."""
    skip = (*flags.NOT_OPTIONS, *RUN_ONLY)
    return {a.dest: getattr(args, a.dest) for a in p._actions if a.dest not in skip}


def _out_spec(args):
    from jaxsel.data.writers import out_spec

    return out_spec(args.out, args.out_format, args.out_shards, args.max_rows_per_file)


def _sidecar(cmd: str, argv, p, args, method, cfg, source, target) -> dict:
    """An output's sidecar: the resolved options plus how the output was made."""
    from jaxsel import pipeline
    from jaxsel.data.sources import open_source

    if args.target:  # the target's files, not its texts, are fingerprinted
        target = open_source(args.target, data_dir=args.data_dir)
    how = pipeline.provenance(cmd, method, cfg, source, target, args.engine, ["jaxsel", cmd, *argv])
    return {**_options(p, args), "provenance": how}


def _start(args, method: methods.Method):
    """Joins the job's processes (`parallel.initialize`) and returns the CPU-stage engine, once
    the method is known to run on it."""
    from jaxsel import parallel

    parallel.initialize(args.coordinator, args.num_processes, args.process_id)
    _trap_sigterm()  # again: JAX's TPU runtime, when installed, sets its own handler on start
    if args.engine == "local":
        if args.ray_address is not None or args.ray_workers is not None:
            raise InputError("--ray-address and --ray-workers go with --engine ray")
        return None
    from jaxsel import ray_engine

    if "ray" not in method.engines:
        on_ray = [n for n in methods.names() if "ray" in methods.get(n)()[0].engines]
        raise InputError(
            f"--engine ray runs the host-pool methods ({', '.join(on_ray)}), not {method.name}"
        )
    if parallel.distributed():
        raise InputError("--engine ray runs from one process (Ray spreads the work itself)")
    return ray_engine.RayEngine(args.ray_address, args.ray_workers)


def _pool_source(args):
    """The pool as a stream (`jaxsel.data.sources`); the embedded default is in memory."""
    from jaxsel.data.adapters import CorpusSource
    from jaxsel.data.defaults import default_pool
    from jaxsel.data.sources import open_source

    if not args.pool:
        return CorpusSource(default_pool())
    on_empty = "skip" if args.skip_empty else "error"
    return open_source(
        args.pool, args.text_field, args.id_field or None, args.data_dir, on_empty=on_empty
    )


def cmd_score(argv):
    """write one score per pool item (pool order)"""
    p, method = _method_parser("score", argv)
    p.add_argument(
        "--out",
        help="output (required): one {id, score} per pool item, pool order (score null: not "
        "ranked by the method)",
    )
    args = _parse_args(p, argv)
    if args.print_config:
        print(json.dumps(_options(p, args), indent=1))
        return
    if args.out is None:
        p.error("the following arguments are required: --out")
    out = _out_spec(args)
    _check_outputs(args, *out.outputs())
    from jaxsel import parallel, pipeline
    from jaxsel.data.writers import write_output
    from jaxsel.scores import json_score

    method, cfg = method(flags.config_from_args(args, method.config_cls))
    engine = _start(args, method)
    source, target = _pool_source(args), _load_target(args)
    t0 = time.perf_counter()
    with methods.Run(args.workdir, not args.no_progress, engine=engine) as run:
        rows = pipeline.score_rows(method, source, target, cfg, run)
        if parallel.is_writer():
            meta = _sidecar("score", argv, p, args, method, cfg, source, target)
            write_output(out, ({"id": i, "score": json_score(s)} for i, s in rows), meta=meta)
        else:
            for _ in rows:  # takes part in the gathering; process 0 writes
                pass
    parallel.barrier("jaxsel: output written")  # (JAX's exit barrier would time out meanwhile)
    log.info("%s: scored the pool in %.2f s", method.name, time.perf_counter() - t0)


def cmd_select(argv):
    """select from a pool: top-K, threshold or byte budget (default: ZIP-FIT, embedded data)"""
    p, method = _method_parser("select", argv)
    g = p.add_mutually_exclusive_group()
    g.add_argument("-k", "--top-k", type=int, help="keep the K best items")
    g.add_argument("--threshold", type=float, help="keep items scoring above this")
    g.add_argument("--budget-bytes", type=int, help="keep the best items up to this many bytes")
    p.add_argument(
        "--out", default="-", help="output of the selected records, best first (default: stdout)"
    )
    args = _parse_args(p, argv)
    if args.top_k is None and args.threshold is None and args.budget_bytes is None:
        args.top_k = 100
    if args.print_config:
        print(json.dumps(_options(p, args), indent=1))
        return
    out = _out_spec(args)
    _check_outputs(args, *out.outputs())
    from jaxsel import parallel, pipeline
    from jaxsel.scores import check_threshold

    if args.threshold is not None:
        check_threshold(args.threshold)  # before any input is read
    method, cfg = method(flags.config_from_args(args, method.config_cls))
    engine = _start(args, method)
    source, target = _pool_source(args), _load_target(args)
    t0 = time.perf_counter()
    with methods.Run(args.workdir, not args.no_progress, engine=engine) as run:
        sel = pipeline.select(
            method,
            source,
            target,
            cfg,
            run,
            k=args.top_k,
            threshold=args.threshold,
            budget_bytes=args.budget_bytes,
        )
    if parallel.is_writer():
        meta = _sidecar("select", argv, p, args, method, cfg, source, target)
        pipeline.write_selection(out, source, sel, meta)
    parallel.barrier("jaxsel: output written")  # (JAX's exit barrier would time out meanwhile)
    log.info(
        "%s: selected %d of %d items in %.2f s -> %s",
        method.name,
        len(sel.keys),
        sel.pool_size,
        time.perf_counter() - t0,
        args.out,
    )


# ------------------------------------------------------------------------------------ main

COMMANDS = {
    "score": cmd_score,
    "select": cmd_select,
}


def _tell_peers(e: Exception, message: str) -> None:
    """On several processes, a failure reaches the others at their next barrier (else they
    would wait for this one until JAX's timeouts and abort with a native trace)."""
    if "jaxsel.parallel" in sys.modules:  # (a job that never started JAX has no peers)
        from jaxsel import parallel

        if not isinstance(e, parallel.PeerFailed):
            parallel.announce_failure(message)


def _stopped(e: KeyboardInterrupt) -> tuple[int, str]:
    """Exit status and line of a job stopped by a signal (or by a peer process that died)."""
    if "jaxsel.parallel" in sys.modules:
        from jaxsel import parallel

        if parallel.lost_peer():
            return 2, f"error: {parallel.lost_peer()}"
    resume = "(finished shards are kept; rerun with the same --workdir to resume)"
    if isinstance(e, Terminated):
        return 143, f"terminated {resume}"
    return 130, f"interrupted {resume}"


def _stop_now(code: int) -> None:
    """A stopped process of a several-process job exits at once: JAX's exit barrier would hold
    it until every peer ends; the peers see it go and stop within seconds (`parallel.leave`)."""
    if "jaxsel.parallel" in sys.modules:  # (a job that never started JAX has no peers)
        from jaxsel import parallel

        parallel.exit_now(code)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as SIGINT raises KeyboardInterrupt: the job unwinds
    (compressor pools stop, finished shards stay) and exits with one line."""


def _raise_terminated(signum, frame):
    raise Terminated


def _trap_sigterm() -> None:
    """SIGTERM raises `Terminated` (signal handlers belong to the main thread)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    before = signal.getsignal(signal.SIGTERM)
    _trap_sigterm()
    try:
        return _main(argv)
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, before)


def _main(argv: list[str]) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if argv[:1] == ["--version"]:
        print(f"jaxsel {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands.COMMANDS:
        lines = [f"  {name:<10} {line}" for name, line in commands.COMMANDS.items()]
        usage = "usage: jaxsel {" + ",".join(commands.COMMANDS) + "} ... | --version"
        print(usage + "\n" + "\n".join(lines), file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if argv[0] == "compress" and "--info" in argv:  # `compress --info ARCHIVE` is `info ARCHIVE`
        argv = ["info", *(a for a in argv[1:] if a != "--info")]
    try:
        if argv[0] in COMMANDS:
            COMMANDS[argv[0]](argv[1:])
        else:
            return commands.run(argv[0], argv[1:])
    except JaxselError as e:
        _tell_peers(e, str(e))
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of stdout left (`| head`): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (no flush error at exit)
        return 0
    except Exception as e:
        _tell_peers(e, f"{type(e).__name__}: {e}")
        raise
    except KeyboardInterrupt as e:
        code, line = _stopped(e)
        print(line, file=sys.stderr)
        _stop_now(code)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
