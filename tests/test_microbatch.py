"""Gradient accumulation over microbatches (``train.microbatch_size``)."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import synthetic as synthetic_config
from crl_jax import config_validation, input_pipeline, methods, parallel, steps, train
from crl_jax.experiments import synthetic as experiment
from crl_jax.host import autotune, memory
from crl_jax.methods.base import Method


@dataclasses.dataclass(frozen=True)
class _LeastSquares(Method):
    """A key-free per-sample loss (mean squared error of a linear map) plus an L1 on the
    weights, so the microbatched gradient must equal the one-pass gradient exactly."""

    per_sample_loss: bool = True

    def init(self, key, xs):
        return {"w": jax.random.normal(key, (xs[0].shape[-1], 2)), "b": jnp.zeros(2)}

    def loss(self, params, xs, key):
        x, y = xs[0][:, 0], xs[1][:, 0, :2]
        per_sample = jnp.sum((x @ params["w"] + params["b"] - y) ** 2, axis=-1)
        mse, l1 = jnp.mean(per_sample), jnp.sum(jnp.abs(params["w"]))
        return mse + 0.1 * l1, {"loss": mse + 0.1 * l1, "mse": mse, "l1": l1}


def _batch(num_seeds=2, batch=48):
    k1, k2 = jax.random.split(jax.random.PRNGKey(3))
    return (jax.random.normal(k1, (num_seeds, batch, 1, 5)),
            jax.random.normal(k2, (num_seeds, batch, 1, 4)))


def _states(method, batch, num_seeds=2):
    tx = optax.sgd(0.1)
    example = tuple(x[0] for x in batch)
    return steps.create_train_states(method, example, tx, seed=0, num_seeds=num_seeds)


def test_split_is_strided_and_covers_every_row_once():
    x = jnp.arange(12 * 2).reshape(12, 2)
    (chunks,) = steps.split_microbatches((x,), 3)
    assert chunks.shape == (3, 4, 2)
    np.testing.assert_array_equal(chunks[1, :, 0], x[1::3, 0])
    np.testing.assert_array_equal(np.sort(np.asarray(chunks).reshape(-1)), np.arange(24))


@pytest.mark.parametrize("microbatches", [2, 4, 12])
def test_deterministic_loss_same_update_as_one_pass(microbatches):
    method = _LeastSquares(name="lsq", layout=None)
    batch = _batch()
    one = jax.jit(steps.make_train_step(method, 1))
    many = jax.jit(steps.make_train_step(method, microbatches))
    s1, t1 = one(_states(method, batch), batch)
    s2, t2 = many(_states(method, batch), batch)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 s1.params, s2.params)
    for name in ("loss", "mse", "l1", "grad_norm"):
        np.testing.assert_allclose(t1[name], t2[name], rtol=1e-5, atol=1e-6)
    # and the update is not trivially zero
    assert np.abs(np.asarray(s1.params["w"]) - np.asarray(_states(method, batch).params["w"])).max() > 1e-3


def _personax(batch_size=48, num_seeds=2):
    config = synthetic_config.get_config("smoke")
    config.model.name = "personax_vae"    # a one-stage method whose loss takes microbatches
    config.loss.sparsity = "weights"      # (the L1 on S is a batch statistic: one pass only)
    config.train.batch_size, config.train.num_seeds = batch_size, num_seeds
    process, method, mesh = experiment.setup(config, None,
                                             mesh=parallel.make_mesh(jax.devices()[:1]))
    source = input_pipeline.BatchSource.from_process(process, config.data, config.train,
                                                     parallel.batch_sharding(mesh))
    return config, method, mesh, source, experiment.model_layout(process.spec)


def test_personax_gradient_is_mean_of_chunk_gradients_with_folded_keys():
    config, method, mesh, source, layout = _personax()
    assert method.per_sample_loss
    batch = source(0)
    n = 3
    state0 = train.init_state(method, config, mesh, layout)
    params0 = jax.device_get(state0.params)
    state, terms = jax.jit(steps.make_train_step(method, n))(state0, batch)

    # By hand, seed 0: chunk j = rows j, j + n, ...; key fold_in(step key, j).
    seed = 0
    p0 = jax.tree.map(lambda a: a[seed], params0)
    rng = jax.device_get(state.rng)[seed]
    key = jax.random.fold_in(rng, 0)
    xs = tuple(np.asarray(x[seed]) for x in batch)
    # jitted (one program for the three chunks; op by op, the loss and its gradient
    # compiled hundreds of small programs)
    loss_and_grad = jax.jit(jax.value_and_grad(lambda p, c, k: method.loss(p, c, k)[0]))
    chunk_losses, grads = [], []
    for j in range(n):
        chunk = tuple(x[j::n] for x in xs)
        loss, grad = loss_and_grad(p0, chunk, jax.random.fold_in(key, j))
        chunk_losses.append(float(loss))
        grads.append(grad)
    mean_grad = jax.tree.map(lambda *g: sum(g) / n, *grads)
    np.testing.assert_allclose(terms["loss"][seed], np.mean(chunk_losses), rtol=1e-5)
    np.testing.assert_allclose(terms["grad_norm"][seed], optax.global_norm(mean_grad), rtol=1e-4)
    # a different chunk count draws different noise, hence a different loss estimate
    _, terms_one = jax.jit(steps.make_train_step(method, 1))(
        train.init_state(method, config, mesh, layout), batch)
    assert not np.allclose(terms_one["loss"][seed], terms["loss"][seed], rtol=1e-6)


def test_contrastive_method_refuses_microbatches():
    config, method, mesh, source, layout = _personax()
    config.model.name = "mcl"
    mcl = methods.build_method("mcl", method.layout, config)
    assert not mcl.per_sample_loss
    with pytest.raises(ValueError, match="per-sample mean"):
        steps.make_train_step(mcl, 2)
    config.train.microbatch_size = 16
    with pytest.raises(config_validation.ConfigError, match="train.microbatch_size"):
        config_validation.validate_against_method(config, mcl)
    # auto is allowed and keeps one pass (a sweep over methods can set it for all)
    config.train.microbatch_size = -1
    config_validation.validate_against_method(config, mcl)
    state = train.init_state(mcl, config, mesh, layout)
    assert autotune.resolve_microbatches(config, mcl, mesh, state, source(0)) == 1


@pytest.mark.parametrize("value, devices, match", [
    (10, 1, "does not divide train.batch_size"),
    (-2, 1, "must be 0"),
    (12, 8, "not divisible by the 8 devices"),
])
def test_invalid_microbatch_size_is_one_clear_error(value, devices, match):
    config = synthetic_config.get_config("smoke")
    config.train.batch_size = 48
    config.train.microbatch_size = value
    with pytest.raises(config_validation.ConfigError, match=match):
        config_validation.validate(config, n_devices=devices)


def test_choose_microbatches_one_pass_under_budget_then_chunks_under_their_share():
    mb = 2**20
    assert (autotune.AUTO_MICROBATCH_TEMP_MB, autotune.AUTO_MICROBATCH_TEMP_MB_ASYNC,
            autotune.AUTO_MICROBATCH_CHUNK_MB, autotune.AUTO_MICROBATCH_CHUNK_SHARE) == (
        100.0, 60.0, 45.0, 0.75)
    # the cases measured in docs/PERFORMANCE.md (*Dispatch*), default budget (inline):
    assert autotune.choose_microbatches(26 * mb, 512, 1) == 1     # default run, 3 seeds x 512
    assert autotune.choose_microbatches(67 * mb, 1024, 1) == 1    # M = 8 at batch 1024
    assert autotune.choose_microbatches(67 * mb, 4096, 1) == 1    # numerical_case2 at 4096
    assert autotune.choose_microbatches(100 * mb, 1024, 1) == 1   # at the budget: one pass
    assert autotune.choose_microbatches(133 * mb, 8192, 1) == 4   # 3 does not split 8192
    assert autotune.choose_microbatches(266 * mb, 16384, 1) == 8  # shares of 33 MB <= 45
    # asynchronous dispatch's budget (*The auto rule since tune_malloc*)
    assert autotune.choose_microbatches(60 * mb, 1024, 1, budget_mb=60) == 1
    assert autotune.choose_microbatches(74 * mb, 1024, 1, budget_mb=60) == 2    # shares of 37
    assert autotune.choose_microbatches(83 * mb, 1024, 1, budget_mb=60) == 2    # 41.5 <= 45
    assert autotune.choose_microbatches(110 * mb, 1024, 1, budget_mb=60) == 4   # 55 > 45
    # an explicit budget: one pass up to it, then chunks of at most 0.75 of it
    assert autotune.choose_microbatches(32 * mb, 512, 1, budget_mb=32) == 1
    assert autotune.choose_microbatches(33 * mb, 512, 1, budget_mb=32) == 2
    assert autotune.choose_microbatches(49 * mb, 512, 1, budget_mb=32) == 4   # 24.5 > 24
    # 8 devices: only 1, 2, 3, 6 chunks keep every chunk a multiple of 8 rows
    assert autotune.choose_microbatches(70 * mb, 48, 8, budget_mb=32) == 3
    assert autotune.choose_microbatches(70 * mb, 64, 8, budget_mb=32) == 4
    # nothing fits: as many chunks as the devices allow
    assert autotune.choose_microbatches(10_000 * mb, 64, 8, budget_mb=32) == 8


def test_choose_microbatches_keeps_chunks_large_against_the_parameters():
    """No chunk's share of the temporaries below 3x the parameters' bytes: the conv image
    model (26 MB of parameters) measured fastest in few large chunks (docs/PERFORMANCE.md)."""
    mb = 2**20
    assert autotune.AUTO_MICROBATCH_MIN_SHARE_OVER_PARAMS == 3.0
    image = 25.6 * mb
    assert autotune.choose_microbatches(206 * mb, 64, 1, param_bytes=image) == 2      # not 8
    assert autotune.choose_microbatches(743 * mb, 256, 1, param_bytes=image) == 8     # not 32
    assert autotune.choose_microbatches(2889 * mb, 1024, 1, param_bytes=image) == 32  # not 128
    # small models are not limited by it: numerical_case2 at 4096, 8 seeds x 512
    assert autotune.choose_microbatches(110 * mb, 4096, 1, param_bytes=0.86 * mb) == 4
    assert autotune.choose_microbatches(110 * mb, 512, 1, param_bytes=8 * 0.86 * mb) == 4
    # parameters as large as the temporaries: one chunk is all the cap allows
    assert autotune.choose_microbatches(150 * mb, 64, 1, param_bytes=50 * mb) == 1
    # the cap counts only counts the devices allow (8 devices: 1, 2, 4, 8 for 64 rows)
    assert autotune.choose_microbatches(700 * mb, 64, 8, param_bytes=40 * mb) == 4


def test_resolve_microbatches_explicit_and_auto(capsys, monkeypatch):
    monkeypatch.setattr(memory, "cpu_dispatch_mode", lambda: "inline")
    config, method, mesh, source, layout = _personax(batch_size=48)
    state = train.init_state(method, config, mesh, layout)
    config.train.microbatch_size = 0
    assert autotune.resolve_microbatches(config, method, mesh, state, source(0)) == 1
    config.train.microbatch_size = 12
    assert autotune.resolve_microbatches(config, method, mesh, state, source(0)) == 4
    # auto: one pass under the budget; with a tiny budget it must split and say so
    config.train.microbatch_size = -1
    n_default = autotune.resolve_microbatches(config, method, mesh, state, source(0))
    assert n_default == 1  # the smoke model's temporaries are far below the budget
    old = autotune.AUTO_MICROBATCH_TEMP_MB, autotune.AUTO_MICROBATCH_MIN_SHARE_OVER_PARAMS
    try:  # read at call time by choose_microbatches
        autotune.AUTO_MICROBATCH_TEMP_MB, autotune.AUTO_MICROBATCH_MIN_SHARE_OVER_PARAMS = 1e-3, 0.0
        n = autotune.resolve_microbatches(config, method, mesh, state, source(0))
        # the parameter floor alone (here far above a chunk's share) keeps one pass
        autotune.AUTO_MICROBATCH_MIN_SHARE_OVER_PARAMS = 1e6
        n_floor = autotune.resolve_microbatches(config, method, mesh, state, source(0))
    finally:
        autotune.AUTO_MICROBATCH_TEMP_MB, autotune.AUTO_MICROBATCH_MIN_SHARE_OVER_PARAMS = old
    assert n_floor == 1
    assert n > 1 and 48 % n == 0
    assert "(auto)" in capsys.readouterr().out


@pytest.mark.parametrize("dispatch, expected", [("inline", 1), ("async", 2)])
def test_auto_budget_follows_the_cpu_dispatch(monkeypatch, dispatch, expected):
    """80 MB of temporaries: one pass inline (the main arena reuses them), 2 chunks with
    asynchronous dispatch (above a worker thread's 64 MiB arena heap)."""
    config, method, mesh, source, layout = _personax(batch_size=48)
    state = train.init_state(method, config, mesh, layout)
    config.train.microbatch_size = -1
    monkeypatch.setattr(memory, "cpu_dispatch_mode", lambda: dispatch)
    assert autotune.resolve_microbatches(config, method, mesh, state, source(0),
                                      one_pass_temp_bytes=80 * 2**20) == expected


def test_training_with_microbatches_runs_and_learns(tmp_path):
    config = synthetic_config.get_config("smoke")
    config.eval.plots = False
    config.model.name = "personax_vae"    # personax's stage A compares rows: one pass only
    config.loss.sparsity = "weights"      # and so does the VAE's L1 on S
    config.train.microbatch_size = 16
    process, method, mesh = experiment.setup(config, str(tmp_path))
    batches = input_pipeline.BatchSource.from_process(
        process, config.data, config.train, parallel.batch_sharding(mesh))
    layout = experiment.model_layout(process.spec)
    settings = autotune.loop_settings(config, method, mesh, batches, layout)
    assert settings["microbatches"] == 64 // 16
    state, step = train.train(config, str(tmp_path), method, mesh, batches, layout, **settings)
    assert step == config.train.steps
    import json
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["loss"] < records[0]["loss"]
    assert all(r["microbatches"] == 64 // 16 for r in records)


def test_loop_settings_resolve_auto_from_the_step_shapes_alone(monkeypatch):
    """train.microbatch_size = -1 is resolved before training, from the shapes of the state
    (train.abstract_state: nothing computed) and the compiled one-pass step."""
    config, method, mesh, source, layout = _personax(batch_size=48)
    config.train.microbatch_size = -1
    monkeypatch.setattr(memory, "cpu_dispatch_mode", lambda: "inline")
    abstract = train.abstract_state(method, config, mesh, layout)
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(abstract.params))
    assert autotune.loop_settings(config, method, mesh, source, layout) == {
        "microbatches": 1, "steps_per_call": 10}
    monkeypatch.setattr(autotune, "AUTO_MICROBATCH_TEMP_MB", 1e-3)
    monkeypatch.setattr(autotune, "AUTO_MICROBATCH_MIN_SHARE_OVER_PARAMS", 0.0)
    n = autotune.loop_settings(config, method, mesh, source, layout)["microbatches"]
    state = train.init_state(method, config, mesh, layout)
    assert n > 1 and n == autotune.resolve_microbatches(config, method, mesh, state, source(0))


def test_vae_with_the_l1_on_s_is_one_pass_only(tmp_path):
    """The L1 on the dependence S is a batch statistic (Jacobians times a batch std): chunks
    would change the gradient, so such a config is refused; the L1 on |W| takes chunks."""
    config = synthetic_config.get_config("smoke")
    config.model.name = "personax_vae"
    config.train.microbatch_size = 16
    with pytest.raises(config_validation.ConfigError, match="loss.sparsity = 'weights'"):
        experiment.setup(config, str(tmp_path / "s"))
    config.loss.lambda_sparse = 0.0        # no penalty: the loss is per-sample again
    assert experiment.setup(config, str(tmp_path / "zero"))[1].per_sample_loss
    config.loss.lambda_sparse, config.loss.sparsity = 1.0, "weights"
    assert experiment.setup(config, str(tmp_path / "w"))[1].per_sample_loss
