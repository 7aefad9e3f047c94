"""What every command-line entry point shares: one-line errors and flag parsing.

    sys.exit(cli.run(_main, sys.argv, prog="crl_jax.main"))

:func:`run` calls ``_main(argv)``; an error the user can fix (:mod:`crl_jax.errors`, a config
check, a missing or damaged file, a ``ValueError`` / ``OSError`` raised by this repository's
own checks) becomes one line on stderr, ``PROG: error: MESSAGE``, and the exit code 2
(3: training diverged; 130 / 143: stopped by SIGINT / SIGTERM). Anything else is a bug and
keeps its traceback. ``--debug`` anywhere on the command line, or ``CRL_JAX_DEBUG=1``, keeps the
traceback of every error. SIGTERM outside the training loop ends the run like Ctrl-C does
(the workdir lock is released); inside it, the loop saves a checkpoint first
(:func:`crl_jax.train.train`).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Callable, Sequence

from crl_jax.errors import EXIT_USER_ERROR, UsageError

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_OURS = tuple(os.path.join(_ROOT, d) + os.sep for d in ("crl_jax", "synthetic", "configs"))
DEBUG_ENV = "CRL_JAX_DEBUG"


class Terminated(KeyboardInterrupt):
    """SIGTERM outside the training loop (raised so that cleanup code runs)."""

    signum = signal.SIGTERM


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def _raised_here(exc: BaseException) -> bool:
    """Whether the innermost frame of ``exc`` is in this repository (a deliberate check)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(_OURS)


def explain(exc: BaseException) -> tuple[int, str] | None:
    """(exit code, one-line message) for an error the user can act on, else None."""
    if isinstance(exc, KeyboardInterrupt):
        code = getattr(exc, "exit_code", 128 + int(getattr(exc, "signum", signal.SIGINT)))
        msg = str(exc) if str(exc) else (
            f"stopped by {signal.Signals(code - 128).name} outside the training loop; nothing "
            f"was saved by the stop; rerunning the same command resumes from the last "
            f"checkpoint, if there is one")
        return code, one_line(msg)
    code = getattr(exc, "exit_code", None)
    if isinstance(code, int):
        return code, one_line(exc)
    if isinstance(exc, (ValueError, OSError)) and _raised_here(exc):
        return EXIT_USER_ERROR, one_line(exc)
    return None


def debug_requested(argv: Sequence[str]) -> tuple[list[str], bool]:
    """argv without ``--debug``, and whether it (or CRL_JAX_DEBUG=1) asked for tracebacks."""
    rest = [a for a in argv if a != "--debug"]
    env = os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")
    return rest, env or len(rest) != len(argv)


def _raise_terminated(signum, frame):
    raise Terminated()


def run(fn: Callable[[list[str]], int | None], argv: Sequence[str], prog: str) -> int:
    """Call ``fn(argv)`` (without ``--debug``); returns the process exit code."""
    argv, debug = debug_requested(list(argv))
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return int(fn(argv) or 0)
    except BaseException as exc:  # noqa: BLE001 - sorted into user errors and bugs below
        explained = None if debug or isinstance(exc, SystemExit) else explain(exc)
        if explained is None:
            raise
        code, message = explained
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
        return code
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag raises :class:`UsageError` (one line, exit code 2)."""

    def error(self, message):
        raise UsageError(f"{message} (see python -m {self.prog.removeprefix('python -m ')} --help)")


# ------------------------------------------------------------------------------------------
# absl / ml_collections flags (crl_jax.main, crl_jax.sweep)


def _config_arg(argv: Sequence[str]) -> str | None:
    for i, a in enumerate(argv):
        if a.startswith("--config="):
            return a.split("=", 1)[1]
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _check_config_file(spec: str | None, example: str) -> None:
    if spec is None:
        return
    path = spec.split(":", 1)[0]
    if not path:
        raise UsageError(f"--config is empty; pass a config file, e.g. --config={example}")
    if not os.path.isfile(path):
        what = "is a directory" if os.path.isdir(path) else "not found"
        raise UsageError(f"--config={spec}: {path} {what}; pass a Python config file, e.g. "
                         f"--config={example} (paths are relative to the current directory "
                         f"{os.getcwd()})")
    if not path.endswith(".py"):
        raise UsageError(f"--config={spec}: {path} is not a Python config file (.py with a "
                         f"get_config function), e.g. --config={example}")


def _last_error_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    last = lines[-1] if lines else str(text)
    head, sep, tail = last.partition(": ")
    return tail if sep and head.replace(".", "").isidentifier() and head[0].isupper() else last


def parse_config_flags(argv: Sequence[str], define: Callable, *, required: Sequence[str],
                       config_help: str, example: str):
    """Parse ``argv`` (argv[0] the program) into a fresh absl FlagValues holding ``--config``
    (an ml_collections config file with ``--config.field=value`` overrides) and the flags
    ``define(flag_values)`` adds. Returns it, or None after printing help for ``--help``.
    Every flag problem raises :class:`UsageError`."""
    from absl import flags
    from ml_collections import config_flags

    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, config_help, lock_config=True,
                                    flag_values=fv, sys_argv=list(argv))
    define(fv)
    if any(a in ("--help", "-h", "--helpshort", "--helpfull", "-?") for a in argv[1:]):
        print(fv.get_help())
        return None
    _check_config_file(_config_arg(argv), example)
    try:
        rest = fv(list(argv))
    except SyntaxError as e:
        raise UsageError(f"--config={_config_arg(argv)}: not a valid Python config file "
                         f"({e.msg}, {e.filename} line {e.lineno})") from None
    except AttributeError as e:   # an override of a field the config does not have
        bad = [a.split("=", 1)[0] for a in argv if a.startswith("--config.")
               and str(e).strip("\"'") in a.split("=", 1)[0].split(".")]
        raise UsageError(f"{bad[0] if bad else str(e)}: the config has no such field; the "
                         f"fields and their meaning are in configs/default.py") from None
    except flags.UnrecognizedFlagError as e:
        raise UsageError(f"unknown flag --{e.flagname}; see --help") from None
    except flags.Error as e:
        raise UsageError(_last_error_line(e)) from None
    except (OSError, ValueError) as e:
        raise UsageError(f"--config={_config_arg(argv)}: {_last_error_line(e)}") from None
    if len(rest) > 1:
        raise UsageError(f"unexpected arguments {rest[1:]}; flags take the form --name=value")
    for name in required:
        if fv[name].value is None:
            raise UsageError(f"--{name} is required, e.g. --config={example} --workdir=DIR"
                             if name == "config" else f"--{name} is required")
    if not flags.FLAGS.is_parsed():   # absl logging reads the global flags
        flags.FLAGS.mark_as_parsed()
    return fv
