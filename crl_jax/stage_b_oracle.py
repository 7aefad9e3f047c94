"""Stage B of ``personax`` on an oracle stage A:
``python -m crl_jax.stage_b_oracle --config=configs/synthetic.py:case2 [--lambdas=0,0.1,0.3] [--freeze_flow]``.

Stage A is replaced by the true latents (standardised), so stage B starts at the truth: does
its objective keep it? Stage B (``personax.ComponentStage``, the config's ``stage_b.*``: prior,
flows, anchor, learning rate) trains one replica per lambda for ``stage_b.steps`` steps on
fresh samples, with the within-block order set to the true topological order and the
smallest flow of ``stage_b.flow_layers`` (no order or capacity search). Printed per lambda:
the validation NLL, the MCC against the truth (overall and per latent) and the edges with
``S > eval.graph_threshold``; and the validation NLL of the true model (the true mechanisms'
density of the standardised latents): a trained prior far above it has under-fitted. ``--freeze_flow`` keeps the flows at the identity (the prior alone learns):
the NLL the prior reaches on the true coordinates. docs/MODEL.md section 2a quotes its runs.
"""
from __future__ import annotations

import dataclasses
import sys
import time
import types

import numpy as np
from absl import flags

from crl_jax import cli

PROG = "python -m crl_jax.stage_b_oracle"
EXAMPLE = "configs/synthetic.py:case2"


@dataclasses.dataclass(frozen=True)
class TrueLatents:
    """Stand-in for stage A: the representation is the input itself (the true latents)."""

    def init(self, key, xs):
        del key, xs
        return {}

    def encode(self, params, xs):
        del params
        return xs


def true_order(adjacency: np.ndarray, block_slices) -> np.ndarray:
    """(D, D) permutation matrix putting every block in a topological order of the truth."""
    from synthetic.graph import topological_order
    topo = [int(i) for i in topological_order(np.asarray(adjacency))]
    d = adjacency.shape[0]
    perm = np.arange(d)
    for sl in block_slices:
        perm[sl] = [i for i in topo if sl.start <= i < sl.stop]
    out = np.zeros((d, d), np.float32)
    out[perm, np.arange(d)] = 1.0
    return out


def check_true_density(spec) -> None:
    """ValueError unless :func:`true_nll` can compute the process's density."""
    if spec.noise != "gaussian" or spec.mechanism == "copy":
        raise ValueError(f"the true density is computed for gaussian noise and mlp/additive "
                         f"mechanisms; got data.noise={spec.noise!r} and mechanism="
                         f"{spec.mechanism!r} (set by data.preset)")


def true_nll(process, z: np.ndarray, std: np.ndarray) -> float:
    """Mean negative log-density under the true SCM of ``z`` divided by ``std`` per dimension
    (stage B's standardisation, so that the number compares with its NLL)."""
    import jax.numpy as jnp
    from synthetic import mechanisms
    spec, adj = process.spec, np.asarray(process.adjacency)
    check_true_density(spec)
    mean = np.asarray(mechanisms.conditional_mean(process.params["scm"], jnp.asarray(z), adj,
                                                  spec.mechanism), np.float64)
    scale = np.where(adj.sum(axis=1) == 0, 1.0, float(spec.noise_scale))
    nll = np.sum(0.5 * (((z - mean) / scale) ** 2 + np.log(2 * np.pi)) + np.log(scale), axis=1)
    return float(nll.mean() - np.log(np.asarray(std)).sum())


def run(config, lambdas, freeze_flow: bool = False, log=print) -> dict:
    """Train stage B on the true latents; returns the per-lambda results (see the docstring)."""
    import jax
    import jax.numpy as jnp
    import optax
    from crl_jax import metrics
    from crl_jax.experiments import synthetic as exp

    config = config.copy_and_resolve_references()
    with config.unlocked():
        config.model.name = "personax"
    process, method, _ = exp.setup(config, None)
    if process.spec.kind != "vector":
        raise ValueError("stage_b_oracle needs a numerical preset (the true latents of images "
                         "are rendered, not mixed)")
    check_true_density(process.spec)    # before training, not after
    d_cfg, b_cfg = config.data, config.stage_b
    layout = method.layout
    stage = dataclasses.replace(method.component_stage(len(lambdas)), block=TrueLatents())
    key = jax.random.PRNGKey(int(config.train.seed))
    k_val, k_train = jax.random.split(key)
    z_val = np.asarray(process.sample(k_val, int(d_cfg.val_size)).z)
    order = true_order(process.adjacency, list(layout.block_slices.values()))
    d = z_val.shape[1]
    params = stage.init(key, jnp.zeros((2, d)))
    ref = np.asarray(process.sample(jax.random.fold_in(k_train, 10**6), 16384).z)
    params["standardise"] = {"mean": jnp.asarray(ref.mean(0)), "std": jnp.asarray(ref.std(0))}
    params["orders"] = jnp.broadcast_to(jnp.asarray(order), (len(lambdas), d, d))
    params["lambdas"] = jnp.asarray(lambdas, jnp.float32)
    # the true latents need no unbending: the smallest flow of stage_b.flow_layers
    params["capacity"] = jnp.full_like(params["capacity"], min(method.flow_layer_candidates))
    steps = int(b_cfg.steps)
    opt = stage.optimizer(types.SimpleNamespace(steps=steps))
    opt_state = opt.init(params)
    batch = int(config.train.batch_size)

    @jax.jit
    def step(params, opt_state, i):
        z = process.sample(jax.random.fold_in(k_train, i), batch).z
        (_, m), g = jax.value_and_grad(stage.loss, has_aux=True)(params, z, None)
        if freeze_flow:
            g["replicas"]["flow"] = jax.tree.map(jnp.zeros_like, g["replicas"]["flow"])
        updates, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, m

    t0 = time.time()
    for i in range(steps):
        params, opt_state, m = step(params, opt_state, i)
        if (i + 1) % max(steps // 4, 1) == 0:
            log(f"step {i + 1}/{steps}: nll {float(m['nll']):.4f}, "
                f"penalised S {float(m['cross_dependence']):.3f} ({time.time() - t0:.0f} s)")
    scores = jax.jit(stage.scores)(params, jnp.asarray(z_val))
    r_val = (jnp.asarray(z_val) - params["standardise"]["mean"]) / params["standardise"]["std"]
    perm = np.argmax(order, axis=0)         # zhat column k is true latent perm[k]
    out = {"true_nll": true_nll(process, z_val, ref.std(0)), "lambdas": list(lambdas), "runs": []}
    log(f"true-model validation NLL of the standardised latents: {out['true_nll']:.4f}")
    threshold = float(config.eval.graph_threshold)
    for k, lam in enumerate(lambdas):
        replica = jax.tree.map(lambda a: a[k], params["replicas"])
        zhat, _ = stage.flow.apply({"params": replica["flow"]}, r_val @ order,
                                   params["capacity"][k])
        res = metrics.mcc(z_val, np.asarray(zhat))
        s_true = np.zeros((d, d))
        s_true[np.ix_(perm, perm)] = np.asarray(scores["dependence"][k])
        edges = [(int(i), int(j), round(float(s_true[i, j]), 2))
                 for i, j in zip(*np.nonzero(s_true > threshold))]
        per_latent = np.full(d, np.nan)
        per_latent[res.matching.true_idx] = res.per_component
        run_k = {"lambda": float(lam), "val_nll": float(scores["nll"][k]), "mcc": res.value,
                 "mcc_per_latent": per_latent.tolist(), "edges": edges}
        out["runs"].append(run_k)
        log(f"lambda {lam:g}: val NLL {run_k['val_nll']:.4f}, MCC {res.value:.3f}, per latent "
            f"{np.round(per_latent, 3).tolist()}, edges child<-parent (S) {edges}")
    log(f"true edges child<-parent: {[tuple(int(v) for v in e) for e in zip(*np.nonzero(np.asarray(process.adjacency)))]}")
    return out


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_list("lambdas", ["0", "0.1", "0.3"], "One replica per lambda.", flag_values=fv)
    flags.DEFINE_bool("freeze_flow", False, "Keep the flows at the identity.", flag_values=fv)


def _main(argv) -> int:
    fv = cli.parse_config_flags(argv, _define, required=("config",), example=EXAMPLE,
                                config_help="A numerical config, e.g. configs/synthetic.py:case2.")
    if fv is None:
        return 0
    try:
        lambdas = [float(v) for v in fv.lambdas]
    except ValueError:
        from crl_jax.errors import UsageError
        raise UsageError(f"--lambdas must be comma-separated numbers, got {fv.lambdas}") from None
    run(fv.config, lambdas, freeze_flow=fv.freeze_flow)
    return 0


def main(argv=None) -> int:
    return cli.run(_main, sys.argv if argv is None else argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
