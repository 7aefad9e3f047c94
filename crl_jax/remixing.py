"""Remixing diagnostic of a finished ``personax`` run:
``python -m crl_jax.remixing WORKDIR [WORKDIR ...] [--n_components 500] [--out DIR]``.

Checks whether stage B identifies a latent only up to adding a function of its within-block
parents (z_i -> z_i + g(pa_within(z_i))): for each true latent z_i and its matched estimate
zhat_i (the MCC matching of the evaluation), the kernel-ridge R^2 of zhat_i from z_i alone (b)
against that from z_i and its true within-block parents (c). c well above b (and near d, the
whole block) while a (the MCC entry) is low says the estimate is such a remix.

The run is rebuilt as :func:`crl_jax.experiments.synthetic.run` does, but restore-only
(:func:`crl_jax.staged.train_personax` with ``restore_only=True``: nothing in the workdir is
trained, repaired, written or removed), evaluated as :func:`crl_jax.evaluation.evaluate_run`
does (fit, select on validation, MCC matching fitted on val and scored on test) and the
recomputed per-seed MCC is checked against ``report.json``. Per seed and true latent:

  a  = signed matched correlation on test (the MCC entry); a_s the Spearman one,
  b  = R^2(zhat_i | z_i),
  c  = R^2(zhat_i | z_i, true within-block parents),
  c2 = R^2(zhat_i | z_i, all true parents: within-block and cross-modal),
  f  = R^2(zhat_i | z_i, its within-block non-descendants),
  e  = R^2(zhat_i | z_i, the true latents matched to the est dims before zhat_i in its block),
  d  = R^2(zhat_i | the whole true block of z_i),

each with the evaluation's kernel ridge (:func:`crl_jax.metrics.fit_predict_r2`, kind
"kernel": RBF Nystroem ridge fitted on 'fit', tuned on 'val', scored on 'test').
Writes ``remixing.md`` and ``remixing.json`` into the workdir (or ``--out``; with several
workdirs, ``--out/<workdir name>/``). Errors (no config.json, not a personax run, unfinished
training, changed stage A) are one line on stderr and exit code 2.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from crl_jax import cli
from crl_jax.errors import UsageError, WorkdirError
from crl_jax.metrics.identifiability import descendants

PROG = "python -m crl_jax.remixing"
KEYS = ("a", "a_s", "b", "c", "c2", "f", "e", "d")
R2_KEYS = ("b", "c", "c2", "f", "e", "d")


# stage_b fields added after the first personax runs, with the value those runs trained
# with (restore reads the trained parameters from the checkpoints; only validation needs them)
TRAINED_WITH_BEFORE = {"stage_b.anchor": 0.0, "stage_b.prior_init": 0.3,
                       "stage_b.within_weight": 0.0, "stage_b.penalty": "l1",
                       "stage_b.penalty_scale": 0.1}


def load_config(workdir: str):
    """The run's config (``config.json`` without its start history); WorkdirError when the
    workdir holds no personax run."""
    import ml_collections
    from crl_jax import resume
    if not os.path.isdir(workdir):
        raise WorkdirError(f"{workdir} is not a directory")
    saved = resume.load(workdir)
    if saved is None:
        raise WorkdirError(f"{workdir} has no config.json: not the workdir of a finished run "
                           f"(python -m crl_jax.main --config=configs/synthetic.py ...)")
    saved.pop(resume.HISTORY_KEY, None)
    for field, value in TRAINED_WITH_BEFORE.items():   # runs older than these fields
        section, key = field.split(".")
        saved.setdefault(section, {}).setdefault(key, value)
    name = (saved.get("model") or {}).get("name")
    if name != "personax":
        raise WorkdirError(f"{workdir} holds a {name!r} run, not a personax one "
                           f"(config.json model.name); the remixing diagnostic needs personax")
    return ml_collections.ConfigDict(saved)


def restore_and_select(config, workdir: str):
    """(process, method, selected params, samples, est {split: (S, n, D)}): the finished run
    restored (read-only) and evaluated as crl_jax.evaluation.evaluate_run does."""
    from crl_jax import evaluation, input_pipeline, parallel, staged
    from crl_jax.errors import CheckpointError
    from crl_jax.experiments import synthetic as exp

    process, method, mesh = exp.setup(config, workdir)
    batches = input_pipeline.BatchSource.from_process(process, config.data, config.train,
                                                      parallel.batch_sharding(mesh))
    layout = exp.model_layout(process.spec)
    samples = evaluation.heldout_samples(process, config.data)
    params, _ = staged.train_personax(config, workdir, method, mesh, batches, layout,
                                      samples["val"].x, loop_settings=None, restore_only=True)
    if params is None:   # restore_only raises first; kept as a guard
        raise CheckpointError(f"{workdir}: training is not finished")
    params, est = evaluation.select_and_encode(method, params, samples, config.eval)
    return process, method, params, samples, est


def graph_relations(adj: np.ndarray, block_of: np.ndarray) -> list[dict]:
    """Per latent i: within-block / cross-modal parents and children (``adj[child, parent]``)."""
    out = []
    for i in range(adj.shape[0]):
        pa, ch = np.flatnonzero(adj[i]), np.flatnonzero(adj[:, i])
        same = lambda k: block_of[k] == block_of[i]   # noqa: E731
        out.append({"parents_within": [int(p) for p in pa if same(p)],
                    "parents_cross": [int(p) for p in pa if not same(p)],
                    "children_within": [int(c) for c in ch if same(c)],
                    "children_cross": [int(c) for c in ch if not same(c)]})
    return out


def analyse(workdir: str, n_components: int = 500, log=print) -> dict:
    """The per-seed, per-latent numbers of one workdir (see the module docstring)."""
    import chex
    from crl_jax import metrics, reporting

    t0 = time.time()
    config = load_config(workdir)
    report_path = os.path.join(workdir, "report.json")
    if not os.path.exists(report_path):
        raise WorkdirError(f"{workdir} has no report.json: the run's evaluation has not finished "
                           f"(rerun its training command)")
    with open(report_path) as f:
        report = json.load(f)["evaluation"]
    process, method, params, samples, est = restore_and_select(config, workdir)
    t_restore = time.time() - t0
    true = {s: np.asarray(samples[s].z, np.float64) for s in ("fit", "val", "test")}
    spec_blocks = process.spec.block_slices
    names = reporting.latent_names(spec_blocks)
    adj = np.asarray(process.adjacency)            # row = child, column = parent
    D = adj.shape[0]
    S = est["test"].shape[0]
    chex.assert_shape(adj, (D, D))
    chex.assert_rank([est[s] for s in est], 3)
    chex.assert_equal(est["test"].shape[1], true["test"].shape[0])
    block_of = np.empty(D, int)
    block_cols = {}
    for b, sl in enumerate(spec_blocks.values()):
        block_of[sl] = b
        block_cols[b] = np.arange(sl.start, sl.stop)
    est_block_of = np.empty(method.layout.latent_dim, int)
    for b, sl in enumerate(method.latent_blocks.values()):
        est_block_of[sl] = b
    reach = descendants(adj)
    relations = graph_relations(adj, block_of)

    res = {k: np.full((S, D), np.nan) for k in KEYS}
    matched = np.zeros((S, D), int)
    mcc = np.zeros(S)
    mcc_report = np.asarray([float(r["mcc_pearson"]) for r in report["per_seed"]])
    chex.assert_shape(mcc_report, (S,))
    same_matching = []
    for s in range(S):
        e = {sp: np.asarray(est[sp][s], np.float64) for sp in est}
        r = metrics.mcc_out_of_sample(true["val"], e["val"], true["test"], e["test"],
                                      method="pearson", blocks=spec_blocks)
        mcc[s] = r.value
        same_matching.append(
            [int(j) for j in r.matching.est_idx] == list(report["per_seed"][s]["matching"]["est_idx"]))
        true_of_est = {int(j): int(i) for i, j in zip(r.matching.true_idx, r.matching.est_idx)}
        for row, (i, j) in enumerate(zip(r.matching.true_idx, r.matching.est_idx)):
            i, j = int(i), int(j)
            matched[s, i] = j
            model_earlier = [true_of_est[k] for k in range(j)
                             if est_block_of[k] == est_block_of[j] and k in true_of_est]
            res["a"][s, i] = r.per_component[row]
            res["a_s"][s, i] = r.matching.signs[row] * metrics.correlation_matrix(
                true["test"][:, [i]], e["test"][:, [j]], method="spearman")[0, 0]
            pa_all = list(np.flatnonzero(adj[i]))
            non_desc_w = [k for k in block_cols[block_of[i]] if k != i and not reach[i, k]]
            inputs = {"b": [i], "c": [i] + relations[i]["parents_within"],
                      "c2": [i] + pa_all, "f": [i] + non_desc_w, "e": [i] + model_earlier,
                      "d": list(block_cols[block_of[i]])}
            done = {}
            for k, cols in inputs.items():
                key = tuple(sorted(int(c) for c in cols))
                if key not in done:
                    done[key] = metrics.fit_predict_r2(
                        true["fit"][:, key], e["fit"][:, [j]], true["val"][:, key],
                        e["val"][:, [j]], true["test"][:, key], e["test"][:, [j]],
                        kind="kernel", n_components=n_components, seed=0).r2
                res[k][s, i] = done[key]
        log(f"  seed {s}: MCC {mcc[s]:.4f} (report {mcc_report[s]:.4f}, matching "
            f"{'same' if same_matching[-1] else 'DIFFERENT'}), {time.time() - t0:.0f}s")
    choices = method.choices(params)
    return {"workdir": workdir, "names": names, "n_test": int(true["test"].shape[0]),
            "n_components": int(n_components), "adjacency": adj.tolist(),
            "block_of": block_of.tolist(), "relations": relations,
            "matched_est_idx": matched.tolist(), "est_block_of": est_block_of.tolist(),
            "mcc": mcc.tolist(), "mcc_report": mcc_report.tolist(),
            "same_matching": same_matching,
            "orders": np.asarray(choices["order"]).tolist(),
            "lambda": np.asarray(choices["lambda"]).tolist(),
            "seconds": {"restore": t_restore, "total": time.time() - t0},
            "per_seed": {k: res[k].tolist() for k in KEYS},
            "rows": table_rows(res, relations, names)}


def table_rows(res: dict, relations: list[dict], names: list[str]) -> list[dict]:
    """One row per true latent: its relations and the seed mean / min of each number."""
    rows = []
    for i, rel in enumerate(relations):
        row = {"latent": names[i], "index": i,
               **{k: [names[p] for p in v] for k, v in rel.items()}}
        for k in KEYS:
            col = np.asarray(res[k])[:, i]
            row[k] = float(np.nanmean(col))
            row[f"{k}_min"] = float(np.nanmin(col))
        row["a_per_seed"] = [float(v) for v in np.asarray(res["a"])[:, i]]
        rows.append(row)
    return rows


def markdown(out: dict) -> str:
    names = out["names"]
    diffs = np.abs(np.asarray(out["mcc"]) - np.asarray(out["mcc_report"]))
    lst = lambda v: ",".join(v) if v else "-"   # noqa: E731
    lines = [f"## {os.path.basename(os.path.normpath(out['workdir']))}\n",
             f"workdir `{out['workdir']}`; {len(out['mcc'])} seeds; test n={out['n_test']}; MCC "
             f"(recomputed) {np.mean(out['mcc']):.4f} vs report {np.mean(out['mcc_report']):.4f}; "
             f"max |diff| {diffs.max():.2e}; matchings identical: {all(out['same_matching'])}\n",
             f"R^2: kernel ridge (crl_jax.metrics.fit_predict_r2, kind=kernel, "
             f"{out['n_components']} landmarks) fitted on 'fit', tuned on 'val', scored on 'test'. "
             "a = signed matched corr (MCC entry); a_s = its Spearman version; "
             "b = R2(zhat_i|z_i); c = R2(zhat_i|z_i, within-block parents); "
             "c2 = R2(zhat_i|z_i, all parents); f = R2(zhat_i|z_i, within-block non-descendants); "
             "e = R2(zhat_i|z_i, true latents matched to the est dims before zhat_i in its est "
             "block); d = R2(zhat_i|whole true block). Mean over seeds; min over seeds in "
             "brackets. c well above b: zhat_i is z_i remixed with its within-block parents.\n"]
    hdr = ("| latent | within-block parents | within-block children | cross-modal parents "
           "| cross-modal children | a | a per seed | a_s | b | c | c2 | f | e | d |")
    lines += [hdr, "|" + "|".join(["---"] * (hdr.count("|") - 1)) + "|"]
    for r in out["rows"]:
        lines.append(
            f"| {r['latent']} | {lst(r['parents_within'])} | {lst(r['children_within'])} | "
            f"{lst(r['parents_cross'])} | {lst(r['children_cross'])} | {r['a']:.3f} | "
            + " ".join(f"{v:.2f}" for v in r["a_per_seed"]) + f" | {r['a_s']:.3f} | "
            + " | ".join(f"{r[k]:.3f} ({r[k + '_min']:.2f})" for k in R2_KEYS) + " |")
    lines += ["", "Per seed (true latent <- matched est dim [est block]: a / b / c / f / e / d):"]
    ps, m, eb = out["per_seed"], out["matched_est_idx"], out["est_block_of"]
    for s in range(len(m)):
        lines.append(f"- seed {s}: " + "; ".join(
            f"{names[i]}<-{m[s][i]}[{eb[m[s][i]]}] "
            + "/".join(f"{ps[k][s][i]:.2f}" for k in ("a", "b", "c", "f", "e", "d"))
            for i in range(len(names))))
    lines += ["", "chosen within-block orders per seed (stage-B prior order): "
              + "; ".join(str(o) for o in out["orders"]),
              "chosen lambda per seed: " + ", ".join(str(v) for v in out["lambda"]),
              f"\n(restore+encode {out['seconds']['restore']:.0f}s, total "
              f"{out['seconds']['total']:.0f}s)\n"]
    return "\n".join(lines)


def write(out: dict, out_dir: str) -> tuple[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    md, js = os.path.join(out_dir, "remixing.md"), os.path.join(out_dir, "remixing.json")
    with open(md, "w") as f:
        f.write(markdown(out) + "\n")
    with open(js, "w") as f:
        json.dump(out, f, indent=1)
    return md, js


def parse(argv):
    ap = cli.ArgumentParser(prog=PROG, description=__doc__,
                            formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    ap.add_argument("workdirs", nargs="+", metavar="WORKDIR")
    ap.add_argument("--n_components", type=int, default=500,
                    help="Nystroem landmarks of the kernel ridge (the evaluation uses 1000)")
    ap.add_argument("--out", default=None,
                    help="folder for remixing.md/json (default: each workdir itself)")
    args = ap.parse_args(argv)
    if args.n_components < 1:
        raise UsageError(f"--n_components must be >= 1, got {args.n_components}")
    bases = [os.path.basename(os.path.normpath(w)) for w in args.workdirs]
    if args.out and len(bases) > 1 and len(set(bases)) < len(bases):
        raise UsageError("--out with several workdirs writes OUT/<workdir name>/: the workdir "
                         "names must differ")
    return args


def _main(argv) -> int:
    args = parse(list(argv[1:]))
    from crl_jax import host
    workdirs = [os.path.abspath(w) for w in args.workdirs]
    configs = [load_config(w) for w in workdirs]       # every workdir checked before JAX work
    host.setup(configs)                                # before any JAX computation
    for w in workdirs:
        print(f"=== {w}", flush=True)
        out = analyse(w, args.n_components, log=lambda m: print(m, flush=True))
        if args.out is None:
            out_dir = w
        elif len(workdirs) == 1:
            out_dir = args.out
        else:
            out_dir = os.path.join(args.out, os.path.basename(os.path.normpath(w)))
        md, _ = write(out, out_dir)
        print(markdown(out), flush=True)
        print(f"wrote {md} (+ remixing.json)", flush=True)
    return 0


def main(argv=None) -> int:
    return cli.run(_main, sys.argv if argv is None else argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
