"""One pipeline per data source, each with ``run(config, workdir)``.

    from crl_jax import experiments
    report = experiments.run(config, "/tmp/run")     # what crl_jax.main and sweeps call

``config.data.source`` picks the pipeline: ``synthetic`` (generated data with known latents:
held-out MCC, block R² and graph scores; :mod:`crl_jax.experiments.synthetic`) or
``personax`` (a local PersonaX table: latents, PC graphs, loss terms;
:mod:`crl_jax.experiments.personax`). Both train with :func:`crl_jax.train.train` and write
their reports with :mod:`crl_jax.reporting`. For full CPU speed call
``crl_jax.host.setup(config)`` first (the command-line entry points do).

Around every pipeline: the workdir is created or rejected in one line
(:func:`crl_jax.workdir.prepare`), locked while the run uses it (``run.lock``), and a workdir
that holds progress is resumed only with a compatible config (:func:`crl_jax.resume.check`).
"""
from __future__ import annotations

import importlib

import jax

from crl_jax import config_validation, resume, workdir as workdirs
from crl_jax.config_validation import ConfigError

SOURCES = ("synthetic", "personax")


def run(config, workdir: str, *, stop_after_step=None) -> dict | None:
    """Train, evaluate and report one run of ``config`` in ``workdir``; returns the report
    (``None`` when stopped early by ``stop_after_step``, as a pre-empted job would be)."""
    source = config.data.get("source", "synthetic")
    if source not in SOURCES:
        raise ConfigError(f"config.data.source: {source!r} is not one of {list(SOURCES)}")
    # imported on use: the real-data pipeline pulls in pandas and causal-learn
    pipeline = importlib.import_module(f"crl_jax.experiments.{source}")
    config_validation.validate(config, n_devices=jax.device_count())  # before the workdir
    workdirs.prepare(workdir)
    with workdirs.lock(workdir, enabled=jax.process_index() == 0):
        if jax.process_index() == 0:
            resume.check(config, workdir)
        return pipeline.run(config, workdir, stop_after_step=stop_after_step)
