"""Command line: ``python -m crl_jax.main --config=configs/synthetic.py --workdir=DIR``.

Only parses flags and calls :func:`crl_jax.train.train_and_evaluate`.
"""
from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from crl_jax import parallel, train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Training config file (e.g. configs/synthetic.py or "
    "configs/synthetic.py:case2).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, reports and plots.")
flags.DEFINE_string("coordinator", "", "Multi-process runs: host:port of process 0 "
                    "(else $CRL_JAX_COORDINATOR; see docs/PERFORMANCE.md).")
flags.DEFINE_integer("num_processes", 0, "Multi-process runs: number of processes "
                     "(else $CRL_JAX_NUM_PROCESSES).")
flags.DEFINE_integer("process_id", -1, "Multi-process runs: index of this process "
                     "(else $CRL_JAX_PROCESS_ID).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # keep Orbax's per-save INFO lines off the console
    parallel.maybe_initialize_distributed(FLAGS.coordinator, FLAGS.num_processes,
                                          FLAGS.process_id)
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
