"""Command line: ``python -m crl_jax.main --config=configs/synthetic.py --workdir=DIR``.

Parses flags, applies the host settings once (:func:`crl_jax.host.setup`, before any JAX
computation) and calls :func:`crl_jax.experiments.run`. A bad flag, config field, file or
workdir ends the command with one line on stderr and exit code 2 (``crl_jax.cli``; ``--debug``
keeps the traceback). ``main(argv)`` can be called in-process (tests); it returns the exit code.
"""
from __future__ import annotations

import sys

from absl import flags, logging

from crl_jax import cli, experiments, host, parallel, workdir

PROG = "python -m crl_jax.main"
EXAMPLE = "configs/synthetic.py"


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, reports and "
                        "plots.", flag_values=fv)
    flags.DEFINE_string("coordinator", "", "Multi-process runs: host:port of process 0 "
                        "(else $CRL_JAX_COORDINATOR; see docs/DISTRIBUTED.md).", flag_values=fv)
    flags.DEFINE_integer("num_processes", 0, "Multi-process runs: number of processes "
                         "(else $CRL_JAX_NUM_PROCESSES).", flag_values=fv)
    flags.DEFINE_integer("process_id", -1, "Multi-process runs: index of this process "
                         "(else $CRL_JAX_PROCESS_ID).", flag_values=fv)


def parse(argv):
    """The parsed flags of ``argv`` (argv[0] the program): ``.config``, ``.workdir``, ...;
    None after printing ``--help``. Raises crl_jax.errors.UsageError."""
    return cli.parse_config_flags(
        argv, _define, required=("config", "workdir"), example=EXAMPLE,
        config_help="Training config file (e.g. configs/synthetic.py or "
                    "configs/synthetic.py:case2). --debug: keep the traceback of an error.")


def _main(argv) -> int:
    fv = parse(argv)
    if fv is None:
        return 0
    workdir.prepare(fv.workdir)
    logging.set_verbosity(logging.WARNING)  # keep Orbax's per-save INFO lines off the console
    host.setup(fv.config, verbose=True)     # first: JAX reads these when its backend starts
    parallel.maybe_initialize_distributed(fv.coordinator, fv.num_processes, fv.process_id)
    experiments.run(fv.config, fv.workdir)
    return 0


def main(argv=None) -> int:
    return cli.run(_main, sys.argv if argv is None else argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
