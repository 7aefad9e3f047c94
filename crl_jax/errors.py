"""Errors a user can fix, and how the command-line entry points show them.

Every exception here carries ``exit_code``: the command-line wrappers (:mod:`crl_jax.cli`)
print its message as one line on stderr and exit with that code, without a traceback
(``--debug`` or ``CRL_JAX_DEBUG=1`` keeps it). Library callers catch them like any other
exception; :class:`UserError` subclasses :class:`ValueError` where older code raised one.
"""
from __future__ import annotations

import sys

EXIT_USER_ERROR = 2      # bad input: fix what the message names and rerun
EXIT_DIVERGED = 3        # training stopped on a non-finite or exploding loss


class UserError(Exception):
    """Bad input (a config field, a file, a workdir): the message names it and the fix."""

    exit_code = EXIT_USER_ERROR


class UsageError(UserError):
    """A bad or missing command-line flag."""


class DataError(UserError, ValueError):
    """A data file is missing, damaged or holds values the model cannot use."""


class WorkdirError(UserError):
    """The workdir cannot be used: not a directory, not writable, or in use by another run."""


class ResumeError(UserError, ValueError):
    """The workdir holds a run that the given config cannot continue."""


class CheckpointError(UserError):
    """No checkpoint of the workdir can be restored."""


def warn(message: str) -> None:
    """One warning line on stderr (a fault that was repaired and the run goes on)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)
