"""`jaxsel` command line: dispatch to a command (`jaxsel.commands`: each a Config whose fields
are its flags, and a run function), one-line errors and signals. Errors a user can cause print
one line (`error: ...`) and exit with status 2."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from jaxsel import commands, host
from jaxsel.commands import common
from jaxsel.errors import JaxselError
from jaxsel.version import __version__


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
    if isinstance(e, common.Terminated):
        return 143, f"terminated {resume}"
    return 130, f"interrupted {resume}"


def _stop_now(code: int) -> None:
    """A stopped process of a several-process job exits at once: JAX's exit barrier would hold
    it until every peer ends; the peers see it go and stop within seconds (`parallel.leave`)."""
    if "jaxsel.parallel" in sys.modules:  # (a job that never started JAX has no peers)
        from jaxsel import parallel

        parallel.exit_now(code)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    before = signal.getsignal(signal.SIGTERM)
    common.trap_sigterm()
    try:
        return _main(argv)
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, before)


def _main(argv: list[str]) -> int:
    verbose = any(a in ("-v", "--verbose") for a in argv[:1])
    argv = argv[1:] if verbose else argv
    # jaxsel's own progress lines; other libraries' INFO (absl, jax, orbax) only with -v
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("jaxsel").setLevel(logging.INFO)
    if argv[:1] == ["--version"]:
        print(f"jaxsel {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands.COMMANDS:
        lines = [f"  {name:<10} {line}" for name, line in commands.COMMANDS.items()]
        usage = "usage: jaxsel [-v] {" + ",".join(commands.COMMANDS) + "} ... | --version"
        print(usage + "\n" + "\n".join(lines), file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if argv[0] == "compress" and "--info" in argv:  # `compress --info ARCHIVE` is `info ARCHIVE`
        argv = ["info", *(a for a in argv[1:] if a != "--info")]
    host.use_compile_cache()
    try:
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


if __name__ == "__main__":
    sys.exit(main())
