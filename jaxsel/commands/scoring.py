"""What `jaxsel score` and `jaxsel select` share: a pool scored by a method whose flags join the
command's once --method is known (two-phase parsing), options from a `--config` file, the
prelude that readies a job (`prepare`: output checked, method built, the job's processes and the
engine of its CPU stage, pool and target), and the output's sidecar."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
from collections.abc import Callable
from typing import Any, NamedTuple

from jaxsel import flags, methods
from jaxsel.commands import common
from jaxsel.data.writers import OUT_FORMATS
from jaxsel.errors import InputError
from jaxsel.flags import option


@dataclasses.dataclass(frozen=True)
class Hosts:
    """Many hosts (JAX multi-controller; automatic on TPU pods, SLURM srun and Open MPI)."""

    coordinator: str | None = option(None, "address of process 0", metavar="HOST:PORT")
    num_processes: int | None = option(None, "number of processes of the job")
    process_id: int | None = option(None, "this process's id, 0 .. N-1")


@dataclasses.dataclass(frozen=True)
class Engine:
    """The engine of the CPU stage (zipfit, zipfit-fast, dsir)."""

    engine: str = option(
        "local",
        "local: this process; ray: Ray Data map_batches on a Ray cluster",
        choices=("local", "ray"),
    )
    ray_address: str | None = option(None, "a running Ray cluster (None: start a local one)")
    ray_workers: int | None = option(None, "Ray actors at once (None: all CPUs)")


@dataclasses.dataclass(frozen=True)
class Output:
    """How --out is written (its provenance goes to <out>.meta.json)."""

    out_format: str | None = option(
        None,
        "format of --out (None: by its extension: .jsonl, .jsonl.gz, .jsonl.zst, .parquet, "
        ".array_record); hf: a datasets.save_to_disk directory",
        choices=tuple(OUT_FORMATS),
    )
    out_shards: int | None = option(None, "write --out as a directory of N files")
    max_rows_per_file: int | None = option(None, "write --out as a directory of files of N rows")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Common:
    """The options of every scoring job; the method's own follow (`--method NAME --help`)."""

    method: str = option("zipfit", "the method (see below)")
    config: str | None = option(
        None,
        "options from a JSON (or YAML) file: keys are the flags without dashes, e.g. "
        '{"method": "zipfit", "top_k": 100}; an output\'s .meta.json is one (flags given here '
        "win)",
        metavar="FILE",
        input=True,
    )
    print_config: bool = option(False, "print the resolved options as JSON and exit")
    data: common.Data = common.data()
    workdir: str | None = option(None, "directory for resumable shards of long scoring jobs")
    progress: bool = option(True, "progress bar on stderr")
    hosts: Hosts = option(Hosts(), Hosts.__doc__.rstrip("."), prefix="")
    cpu_stage: Engine = option(Engine(), Engine.__doc__.rstrip("."), prefix="")
    output: Output = option(Output(), Output.__doc__.rstrip("."), prefix="")


# options a sidecar does not record: how one run is placed and shown, not what it computes
RUN_ONLY = ("progress", "coordinator", "num_processes", "process_id", "ray_address")


class Job(NamedTuple):
    """A parsed scoring command."""

    config: Any  # the command's Config
    method: methods.Entry
    method_config: Any  # the method's Config
    options: dict  # resolved options by name: what --print-config prints, a sidecar records
    argv: list[str]


def parser(cmd: str, config_cls: type, argv: list[str]) -> tuple[flags.Parser, methods.Entry]:
    """The parser of `cmd` with the flags of the method that `argv` (or its --config) names."""
    known = _pre_parser().parse_known_args(argv)[0]
    from_file = flags.read_config_file(known.config) if known.config else {}
    method = methods.get(known.method or from_file.get("method") or "zipfit")
    p = flags.Parser(
        prog=f"jaxsel {cmd}",
        description=inspect.cleandoc(config_cls.__doc__),
        epilog=_methods_help(cmd) if "-h" in argv or "--help" in argv else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    flags.add_config_args(p, config_cls)
    doc = inspect.cleandoc(method.config_cls.__doc__ or "")  # what its scores mean
    flags.add_config_args(p, method.config_cls, p.add_argument_group(f"{method.name} options", doc))
    return p, method


def parse(cmd: str, config_cls: type, argv: list[str]) -> Job:
    """Parses `argv` over the options of its `--config FILE`: flags given on the command line
    win, and one of an exclusive group (a selection rule) replaces the file's."""
    p, method = parser(cmd, config_cls, argv)
    args = flags.parse_args(p, argv)
    config = flags.config_from_args(args, config_cls)
    method_config = flags.config_from_args(args, method.config_cls)
    resolved = {**_options(config), **_options(method_config)}
    return Job(config, method, method_config, resolved, argv)


def _pre_parser() -> argparse.ArgumentParser:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--method")
    pre.add_argument("--config")
    return pre


def _methods_help(cmd: str) -> str:
    lines = [f"methods (jaxsel {cmd} --method NAME --help shows its flags):"]
    for name in methods.names():
        doc = methods.get(name).config_cls.__doc__ or ""
        lines.append(f"  {name:<12} {doc.strip().splitlines()[0] if doc.strip() else ''}")
    return "\n".join(lines)


def _options(config) -> dict:
    """A Config's options by flag name (nested ones flattened), less `flags.NOT_OPTIONS` and
    `RUN_ONLY`: itself a valid `--config` file."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out |= _options(value)
        elif f.name not in (*flags.NOT_OPTIONS, *RUN_ONLY):
            out[f.name] = value
    return out


def out_spec(config, out: str):
    from jaxsel.data.writers import out_spec

    o = config.output
    return out_spec(out, o.out_format, o.out_shards, o.max_rows_per_file)


def check_files(job: Job, out) -> None:
    """`common.check_files` of a scoring job: its output files against the inputs of the
    command and of the method."""
    ins = [
        getattr(job.method_config, n) for n in methods.fields_with(job.method.config_cls, "input")
    ]
    common.check_files(job.config, more_inputs=ins, outs=out.outputs())


class Prepared(NamedTuple):
    """A scoring job ready to run (`prepare`)."""

    out: Any  # the output's spec (`jaxsel.data.writers.out_spec`)
    method: methods.Method
    config: Any  # the method's Config
    source: Any  # the pool, a stream
    target: Any  # the target set (a Corpus) or None
    run: methods.Run  # the job's context, on its engine; enter it to run


def prepare(job: Job, out: str, check: Callable[[], None] | None = None) -> Prepared:
    """What `jaxsel score` and `jaxsel select` do before scoring, in this order: the output
    `out` checked against every input, `check()` (more checks before any input is read), the
    method built, the job's processes joined and its engine started (`start`), the pool opened
    and the target loaded."""
    c = job.config
    spec = out_spec(c, out)
    check_files(job, spec)
    if check is not None:
        check()
    method, cfg = job.method(job.method_config)
    engine = start(c, method)
    source, target = pool_source(c.data), c.data.load_target()
    run = methods.Run(c.workdir, c.progress, engine=engine)
    return Prepared(spec, method, cfg, source, target, run)


def sidecar(cmd: str, job: Job, p: Prepared) -> dict:
    """An output's sidecar: the resolved options plus how the output was made."""
    from jaxsel import pipeline
    from jaxsel.data.sources import open_source

    data, target = job.config.data, p.target
    if data.target:  # the target's files, not its texts, are fingerprinted
        target = open_source(data.target, data_dir=data.data_dir)
    engine = job.config.cpu_stage.engine
    argv = ["jaxsel", cmd, *job.argv]
    prov = pipeline.provenance(cmd, p.method, p.config, p.source, target, engine, argv)
    return {**job.options, "provenance": prov}


def start(config: Common, method: methods.Method):
    """Joins the job's processes (`parallel.initialize`) and returns the CPU-stage engine, once
    the method is known to run on it."""
    from jaxsel import parallel

    h, e = config.hosts, config.cpu_stage
    parallel.initialize(h.coordinator, h.num_processes, h.process_id)
    common.trap_sigterm()  # again: JAX's TPU runtime, when installed, sets its own handler
    if e.engine == "local":
        if e.ray_address is not None or e.ray_workers is not None:
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
    return ray_engine.RayEngine(e.ray_address, e.ray_workers)


def pool_source(data: common.Data):
    """The pool as a stream (`jaxsel.data.sources`); the embedded default is in memory."""
    from jaxsel.data.adapters import CorpusSource
    from jaxsel.data.defaults import default_pool
    from jaxsel.data.sources import open_source

    if not data.pool:
        return CorpusSource(default_pool())
    on_empty = "skip" if data.skip_empty else "error"
    return open_source(
        data.pool, data.text_field, data.id_field or None, data.data_dir, on_empty=on_empty
    )


def print_options(job: Job) -> int:
    print(json.dumps(job.options, indent=1))
    return 0
