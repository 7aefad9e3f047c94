"""Run a grid of training runs and aggregate them.

    python -m crl_jax.sweep --config=configs/sweeps/methods.py --workdir=DIR
    python -m crl_jax.sweep --config=configs/sweeps/measurements.py:smoke --workdir=DIR \\
        --config.base.train.num_seeds=5        # any base field, as with crl_jax.main
    python -m crl_jax.sweep ... --sweep_index=3    # one entry (cluster job arrays)
    python -m crl_jax.sweep ... --aggregate_only   # re-aggregate what has finished

Each entry runs :func:`crl_jax.experiments.run` in ``DIR/<entry-name>/`` (the seeds of an entry
train together on the vmapped seed axis). An entry with a ``report.json`` is finished and
skipped; an interrupted entry resumes from its checkpoints. An entry whose training diverges
gets a ``failed.json`` and the sweep goes on; rerunning retries it. After running every entry
(not after ``--sweep_index``, so that array jobs do not race), the sweep writes
``DIR/results.csv``, ``DIR/summary.md`` and ``DIR/plots/*.png`` (see crl_jax/sweeps/).
"""
from __future__ import annotations

import json
import os
import shlex
import sys
import time

import jax

from crl_jax import cli, config_validation, experiments, host, parallel, train, workdir
from crl_jax.errors import UsageError
from crl_jax.experiments import synthetic as synthetic_experiment
from crl_jax.sweeps import aggregate, grid, plots


def _validate(entries) -> None:
    """Every entry's config is checked before the first run starts."""
    n_devices = jax.device_count()
    for e in entries:
        try:
            config_validation.validate(e.config, n_devices=n_devices)
            if e.config.data.get("source", "synthetic") == "synthetic":
                config_validation.validate_against_spec(
                    e.config, synthetic_experiment.build_spec(e.config.data))
        except config_validation.ConfigError as err:
            raise config_validation.ConfigError(f"sweep entry {e.index} ({e.name}): {err}") from err
        except ValueError as err:
            raise ValueError(f"sweep entry {e.index} ({e.name}): {err}") from err


def _fmt_seconds(s: float) -> str:
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m{int(s % 60):02d}s"


def aggregate_sweep(sweep_config, workdir: str, entries=None, command: str | None = None) -> dict:
    """Write results.csv, summary.md and plots/ from the finished entries; returns paths."""
    entries = grid.make_entries(sweep_config) if entries is None else entries
    fields = list(dict.fromkeys(f for e in entries for f in e.setting))
    df = aggregate.collect(workdir, entries, sweep_config.name)
    state = aggregate.status(workdir, entries)
    csv = os.path.join(workdir, "results.csv")
    aggregate.write_atomic(csv, df.to_csv(index=False))
    summary = os.path.join(workdir, "summary.md")
    aggregate.write_atomic(summary, aggregate.summary_markdown(
        df, entries, fields, sweep_config.name, state, command))
    figures = plots.all_figures(df, fields, os.path.join(workdir, "plots"))
    return {"results_csv": csv, "summary_md": summary, "figures": figures, "rows": len(df),
            "done": [e.name for e in state["done"]], "failed": [e.name for e in state["failed"]],
            "pending": [e.name for e in state["pending"]]}


def run_sweep(sweep_config, workdir: str, *, sweep_index: int | None = None,
              aggregate_only: bool = False, command: str | None = None) -> dict:
    """Run (or resume) the sweep in ``workdir``; see the module docstring."""
    entries = grid.make_entries(sweep_config)
    n = len(entries)
    if sweep_index is not None and not 0 <= sweep_index < n:
        raise ValueError(f"--sweep_index={sweep_index} is out of range: sweep "
                         f"{sweep_config.name!r} has {n} entries (0..{n - 1})")
    os.makedirs(workdir, exist_ok=True)
    if aggregate_only:
        return aggregate_sweep(sweep_config, workdir, entries, command)
    selected = entries if sweep_index is None else [entries[sweep_index]]
    _validate(entries)
    aggregate.write_atomic(os.path.join(workdir, "sweep.json"), json.dumps(
        {"name": sweep_config.name, "entries": [{"index": e.index, "name": e.name,
                                                  "setting": e.setting} for e in entries]},
        indent=1, default=str))
    t0 = time.time()
    for e in selected:
        run_dir = os.path.join(workdir, e.name)
        tag = f"[sweep {sweep_config.name}] {e.index + 1}/{n} {e.name}"
        if os.path.exists(os.path.join(run_dir, "report.json")):
            print(f"{tag}: finished earlier, skipped", flush=True)
            continue
        print(f"{tag}: running (sweep elapsed {_fmt_seconds(time.time() - t0)})", flush=True)
        os.makedirs(run_dir, exist_ok=True)
        failed = os.path.join(run_dir, "failed.json")
        if os.path.exists(failed):
            os.remove(failed)
        with open(os.path.join(run_dir, "setting.json"), "w") as f:
            json.dump(e.setting, f, default=str)
        t_entry = time.time()
        try:
            experiments.run(e.config, run_dir)
        except train.TrainingDiverged as err:
            with open(failed, "w") as f:
                json.dump({"error": str(err)}, f)
            print(f"{tag}: FAILED ({err})", flush=True)
            continue
        print(f"{tag}: done in {_fmt_seconds(time.time() - t_entry)}", flush=True)
    print(f"[sweep {sweep_config.name}] {len(selected)} entr{'y' if len(selected) == 1 else 'ies'}"
          f" handled in {_fmt_seconds(time.time() - t0)}", flush=True)
    if sweep_index is not None:
        return {"ran": selected[0].name}
    out = aggregate_sweep(sweep_config, workdir, entries, command)
    print(f"[sweep {sweep_config.name}] wrote {out['results_csv']} ({out['rows']} rows), "
          f"{out['summary_md']}, {len(out['figures'])} plots", flush=True)
    return out


def selected_configs(sweep_config, sweep_index: int | None = None) -> list:
    """The training configs this process will run (all entries, or one of a job array)."""
    entries = grid.make_entries(sweep_config)
    if sweep_index is not None and 0 <= sweep_index < len(entries):
        entries = [entries[sweep_index]]
    return [e.config for e in entries]


def start(sweep_config, sweep_index: int | None = None) -> dict:
    """Host settings for the entries this process runs (they share one process, hence one
    products library: :func:`crl_jax.host.setup` picks one for all), then the distributed
    runtime when asked for; before any JAX computation."""
    settings = host.setup(selected_configs(sweep_config, sweep_index), verbose=True)
    parallel.maybe_initialize_distributed()
    return settings


PROG = "python -m crl_jax.sweep"


def _define(fv) -> None:
    from absl import flags
    flags.DEFINE_string("workdir", None, "Directory of the sweep (one subdirectory per entry).",
                        flag_values=fv)
    flags.DEFINE_integer("sweep_index", None, "Run only this entry (0-based), for job arrays.",
                         flag_values=fv)
    flags.DEFINE_bool("aggregate_only", False, "Only (re)write results.csv, summary.md, plots.",
                      flag_values=fv)


def parse(argv):
    """Parsed flags of ``argv`` (argv[0] the program); None after printing ``--help``."""
    return cli.parse_config_flags(
        argv, _define, required=("config", "workdir"), example="configs/sweeps/methods.py",
        config_help="Sweep file (configs/sweeps/NAME.py[:smoke]). --debug: keep the traceback "
                    "of an error.")


def _main(argv) -> int:
    from absl import logging
    fv = parse(argv)
    if fv is None:
        return 0
    workdir.prepare(fv.workdir)
    n = len(grid.make_entries(fv.config))
    if fv.sweep_index is not None and not 0 <= fv.sweep_index < n:
        raise UsageError(f"--sweep_index={fv.sweep_index} is out of range: sweep "
                         f"{fv.config.name!r} has {n} entries (0..{n - 1})")
    logging.set_verbosity(logging.WARNING)
    start(fv.config, fv.sweep_index)
    command = "python -m crl_jax.sweep " + " ".join(shlex.quote(a) for a in argv[1:])
    out = run_sweep(fv.config, fv.workdir, sweep_index=fv.sweep_index,
                    aggregate_only=fv.aggregate_only, command=command)
    if out.get("failed") and not fv.aggregate_only:
        raise train.TrainingDiverged(
            f"{len(out['failed'])} sweep entr{'y' if len(out['failed']) == 1 else 'ies'} "
            f"diverged: {', '.join(out['failed'])} (each has a failed.json in "
            f"{fv.workdir}); the other entries are aggregated in {out['summary_md']}")
    return 0


def main(argv=None) -> int:
    return cli.run(_main, sys.argv if argv is None else argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
