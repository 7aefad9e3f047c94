"""Command line: ``python -m crl_jax.main --config=configs/synthetic.py --workdir=DIR``.

Parses flags, applies the host settings once (:func:`crl_jax.host.setup`, before any JAX
computation) and calls :func:`crl_jax.experiments.run`.
"""
from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from crl_jax import experiments, host, parallel

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Training config file (e.g. configs/synthetic.py or "
    "configs/synthetic.py:case2).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, reports and plots.")
flags.DEFINE_string("coordinator", "", "Multi-process runs: host:port of process 0 "
                    "(else $CRL_JAX_COORDINATOR; see docs/DISTRIBUTED.md).")
flags.DEFINE_integer("num_processes", 0, "Multi-process runs: number of processes "
                     "(else $CRL_JAX_NUM_PROCESSES).")
flags.DEFINE_integer("process_id", -1, "Multi-process runs: index of this process "
                     "(else $CRL_JAX_PROCESS_ID).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # keep Orbax's per-save INFO lines off the console
    host.setup(FLAGS.config, verbose=True)   # first: JAX reads these when its backend starts
    parallel.maybe_initialize_distributed(FLAGS.coordinator, FLAGS.num_processes,
                                          FLAGS.process_id)
    experiments.run(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
