"""Before/after timings of the speed changes to the model, measured in one process.

    python benchmarks/bench_changes.py --out=bench_changes.json

Each change is compared against the code it replaced, rebuilt here, interleaved over
``--rounds`` rounds; reported is the fastest round of each and the ratio before / after. The
forms are the same maps: tests/test_networks_equivalence.py checks the conv and head forms
against flax's modules, tests/test_causal_prior.py the prior against a brute-force
change of variables, and ``sampling`` below asserts that both draw the same batch.

- ``conv``: the variant-MNIST train step with flax's ``nn.Conv``/``nn.ConvTranspose``
  (grouped convolutions under ``nn.vmap``; ``networks.matmul_convolutions() -> False``)
  against the patch matrix products used on CPU.
- ``heads``: the numerical_case2 train step with the encoder's z and eta heads as two
  ``GaussianHead`` modules (four thin products) against one fused product.
- ``prior``: forward + backward of the causal prior with the (B, D, D) parents tensor
  against the einsum form, at several latent dimensions D.
- ``leaky``: train steps with flax's ``nn.leaky_relu(x, 0.2)`` against
  ``networks.leaky_relu`` (whose backward pass keeps only its output), each in one pass and
  in the chunks ``train.microbatch_size=-1`` picks from its own temporaries; cases
  ``case2:B`` (numerical_case2 at batch B), ``seedsS:B`` (S vmapped seeds) and ``MN:B`` (the
  growth layout with N modalities). Values agree to one unit in the last place
  (tests/test_networks_equivalence.py).
- ``sampling``: drawing one numerical_case2 batch with the step's key derived by an eager
  ``fold_in`` (a separate dispatch) against deriving it inside the jitted sampler
  (``input_pipeline.BatchSource``); same batches (tests/test_input_pipeline.py).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_train as bt  # noqa: E402

from crl_jax import experiment, input_pipeline, parallel  # noqa: E402
from crl_jax.models import causal_prior, networks  # noqa: E402


class TwoHeadEncoder(nn.Module):
    """``MeasurementEncoder`` before the fused heads."""

    kind: str
    hidden: tuple
    latent_dim: int
    eta_dim: int

    @nn.compact
    def __call__(self, x):
        h = networks.FeatureEncoder(self.kind, self.hidden)(x)
        z_mean, z_logvar = networks.GaussianHead(self.latent_dim)(h)
        if self.eta_dim > 0:
            eta_mean, eta_logvar = networks.GaussianHead(self.eta_dim)(h)
        else:
            eta_mean = eta_logvar = jnp.zeros(h.shape[:-1] + (0,), h.dtype)
        return h, z_mean, z_logvar, eta_mean, eta_logvar


class ParentsPrior(causal_prior.CausalPrior):
    """``CausalPrior`` before the einsum form: materialises parents = W_i * z, (B, D, D)."""

    def _h_parents(self, p, z_i, parents):
        return self._h(p, z_i, parents @ p["w1"])

    def noise(self, z):
        parents = self.adjacency()[None, :, :] * z[:, None, :]
        per_dim = jax.vmap(jax.value_and_grad(self._h_parents, argnums=1), in_axes=(0, 0, 0))
        eps, slope = jax.vmap(per_dim, in_axes=(None, 0, 0))(self._dim_params(), z, parents)
        return eps, jnp.log(jnp.abs(slope))


class _EagerKeySampler:
    """``BatchSource.__call__`` before: eager ``fold_in``, then the jitted draw."""

    def __init__(self, process, config):
        s, b = int(config.train.num_seeds), int(config.train.batch_size)
        self.key = jax.random.fold_in(jax.random.PRNGKey(int(config.train.seed)),
                                      input_pipeline._BATCH_SALT)
        self.make = jax.jit(lambda key: tuple(x.reshape((s, b) + x.shape[1:])
                                              for x in process.sample(key, s * b).x))
        jax.block_until_ready(self.make(self.key))

    def __call__(self, step):
        return self.make(jax.random.fold_in(self.key, step))


class _SamplerRun:
    def __init__(self, source):
        self.source, self.step, self.flops = source, 0, float("nan")
        jax.block_until_ready(source(0))

    def run(self, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            self.step += 1
            out = self.source(self.step)
        jax.block_until_ready(out)
        return (time.perf_counter() - t0) / n


def change_sampling(args) -> list[dict]:
    rows = []
    for batch in args.sampling_batches:
        config = bt.model_config("numerical_case2", args.data_dir, batch)
        process = experiment.load_or_make_process(config.data, None)
        sharding = parallel.batch_sharding(parallel.make_mesh(jax.devices()[:1]))
        after = input_pipeline.BatchSource.from_process(process, config.data, config.train,
                                                        sharding)
        runners = {"before": _SamplerRun(_EagerKeySampler(process, config)),
                   "after": _SamplerRun(after)}
        for a, b in zip(runners["before"].source(3), after(3)):   # the same batch
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
        rows.append(_row("sample", f"numerical_case2 batch draw, batch {batch}", runners,
                         _compare(runners, args.rounds, args.budget)))
    return rows


def _compare(runners: dict, rounds: int, budget: float) -> dict:
    reps = {k: bt._reps(r.run(1), budget, 1, 50) for k, r in runners.items()}
    times = bt.paired_rounds(runners, reps, rounds)
    return {k: bt.summary(v) for k, v in times.items()}


def change_conv(args) -> list[dict]:
    if not bt.images_available(args.data_dir):
        print(f"skip conv: no image files under --data_dir={args.data_dir}")
        return []
    rows = []
    for batch in args.conv_batches:
        runners = {}
        for label, patches in (("before", False), ("after", True)):
            networks.matmul_convolutions = (lambda p=patches: p)
            config, method, mesh, source, layout = bt.setup_model("variant_mnist_3m", args, batch)
            runners[label] = bt.StepRunner(method, config, mesh, layout, source(0))
        networks.matmul_convolutions = _MATMUL_CONVOLUTIONS
        rows.append(_row("conv", f"variant_mnist_3m step, batch {batch}", runners,
                         _compare(runners, args.rounds, args.budget)))
    return rows


def change_heads(args) -> list[dict]:
    rows = []
    for batch in args.heads_batches:
        runners = {}
        for label, cls in (("before", TwoHeadEncoder), ("after", _MEASUREMENT_ENCODER)):
            networks.MeasurementEncoder = cls
            config, method, mesh, source, layout = bt.setup_model("numerical_case2", args, batch)
            runners[label] = bt.StepRunner(method, config, mesh, layout, source(0))
        networks.MeasurementEncoder = _MEASUREMENT_ENCODER
        rows.append(_row("heads", f"numerical_case2 step, batch {batch}", runners,
                         _compare(runners, args.rounds, args.budget)))
    return rows


def change_prior(args) -> list[dict]:
    rows = []
    for d in args.prior_dims:
        mask = tuple(tuple(bool(v) for v in row)
                     for row in causal_prior.allowed_edges_mask(0, (d // 2, d - d // 2)))
        z = jax.random.normal(jax.random.PRNGKey(0), (args.prior_batch, d))
        runners = {}
        for label, cls in (("before", ParentsPrior), ("after", causal_prior.CausalPrior)):
            module = cls(mask, hidden=16)
            params = module.init(jax.random.PRNGKey(1), z)

            def fwd_bwd(p, z, module=module):
                return jax.grad(lambda p, z: jnp.sum(module.apply(p, z)), argnums=(0, 1))(p, z)

            runners[label] = bt._Fn(fwd_bwd, params, z)
        rows.append(_row("prior", f"causal prior fwd+bwd, D={d}, batch {args.prior_batch}",
                         runners, _compare(runners, args.rounds, args.budget)))
    return rows


def _flax_leaky_relu(x):
    return nn.leaky_relu(x, networks.LEAKY_SLOPE)


_LEAKY_CASE = re.compile(r"(case2|seeds\d+|M\d+):(\d+)")


def _leaky_case(case: str, args):
    """(label, method, config, mesh, layout, batch) of one ``--leaky_cases`` entry (checked
    against ``_LEAKY_CASE`` in ``main``)."""
    kind, batch = _LEAKY_CASE.fullmatch(case).groups()
    batch = int(batch)
    if kind == "case2" or kind.startswith("seeds"):
        seeds = int(kind[5:]) if kind.startswith("seeds") else 1
        config, method, mesh, source, layout = bt.setup_model("numerical_case2", args, batch,
                                                              num_seeds=seeds)
        return (f"numerical_case2, {seeds} seed(s) x {batch}", method, config, mesh, layout,
                source(0))
    ns = argparse.Namespace(growth_batch=batch, data_dir=args.data_dir)
    layout = bt.growth_layout(m=int(kind[1:]))
    method, config, mesh, data = bt.growth_setup(layout, ns)
    return f"growth M={kind[1:]}, batch {batch}", method, config, mesh, layout, data


def change_leaky(args) -> list[dict]:
    rows = []
    for case in args.leaky_cases:
        runners = {}
        for label, fn in (("before", _flax_leaky_relu), ("after", _LEAKY_RELU)):
            networks.leaky_relu = fn
            try:
                name, method, config, mesh, layout, batch = _leaky_case(case, args)
                runners[label] = bt.step_runners(method, config, mesh, layout, batch, "both")
            finally:
                networks.leaky_relu = _LEAKY_RELU
        for mode in ("one pass", "auto"):
            pair = {k: v[mode] for k, v in runners.items()}
            what = f"{name}, {mode}: " + " -> ".join(
                f"{r.microbatches}x{r.temp_mb:.0f} MB" for r in pair.values())
            row = _row("leaky", what, pair, _compare(pair, args.rounds, args.budget))
            row.update({f"temp_mb_{k}": r.temp_mb for k, r in pair.items()},
                       **{f"chunks_{k}": r.microbatches for k, r in pair.items()})
            rows.append(row)
    return rows


def _row(change, what, runners, times) -> dict:
    row = {"change": change, "what": what, "before": times["before"], "after": times["after"],
           "speedup": times["before"]["min_s"] / times["after"]["min_s"],
           "flops_before": runners["before"].flops, "flops_after": runners["after"].flops}
    print(f"  {what}: {row['before']['min_s'] * 1e3:.1f} -> {row['after']['min_s'] * 1e3:.1f} ms "
          f"({row['speedup']:.2f}x)", flush=True)
    return row


_MATMUL_CONVOLUTIONS = networks.matmul_convolutions
_MEASUREMENT_ENCODER = networks.MeasurementEncoder
_LEAKY_RELU = networks.leaky_relu
CHANGES = {"conv": change_conv, "heads": change_heads, "prior": change_prior,
           "sampling": change_sampling, "leaky": change_leaky}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--changes", default=",".join(CHANGES))
    p.add_argument("--conv_batches", default="128")
    p.add_argument("--heads_batches", default="1024,4096")
    p.add_argument("--prior_dims", default="6,24,64")
    p.add_argument("--prior_batch", type=int, default=4096)
    p.add_argument("--sampling_batches", default="64,256,4096")
    p.add_argument("--leaky_cases", default="case2:1024,case2:4096,seeds3:512,M6:1024,M8:1024",
                   help="comma-separated case2:B, seedsS:B (S seeds) or MN:B (N modalities)")
    p.add_argument("--data_dir", default=bt.default_data_dir())
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--budget", type=float, default=0.5)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    changes = [c for c in args.changes.split(",") if c]
    if set(changes) - set(CHANGES):
        p.error(f"--changes: unknown {sorted(set(changes) - set(CHANGES))}; "
                f"choose from {list(CHANGES)}")
    for name in ("conv_batches", "heads_batches", "prior_dims", "sampling_batches"):
        setattr(args, name, bt._ints(getattr(args, name)))
    args.leaky_cases = [c for c in args.leaky_cases.split(",") if c]
    for case in args.leaky_cases:
        if not _LEAKY_CASE.fullmatch(case):
            p.error(f"--leaky_cases: bad case {case!r}; use case2:B, seedsS:B or MN:B")
    jax.config.update("jax_enable_compilation_cache", False)
    dev = jax.devices()[0]
    print(f"{dev.platform} x{jax.device_count()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for name in changes:
        rows += CHANGES[name](args)
    print(f"\n{'change':7s} {'measured':60s} {'before ms':>10s} {'after ms':>9s} {'speedup':>8s}")
    for r in rows:
        print(f"{r['change']:7s} {r['what']:60s} {r['before']['min_s'] * 1e3:10.1f} "
              f"{r['after']['min_s'] * 1e3:9.1f} {r['speedup']:8.2f}")
    out = {"info": {"command": " ".join(["benchmarks/bench_changes.py"] + sys.argv[1:]),
                    "platform": dev.platform, "cpu_count": os.cpu_count(),
                    "load_avg_at_end": os.getloadavg(), "jax": jax.__version__},
           "changes": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
        print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
