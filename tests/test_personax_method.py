"""The pieces of the two-stage ``personax`` estimator: flows, the dependence S, the order
search, the lambda rule, per-replica clipping and the stage-B step's frozen parameters."""
from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import synthetic as synthetic_config
from crl_jax import methods, steps
from crl_jax.methods import personax
from crl_jax.models import causal_prior as cp
from crl_jax.models import flows, vae


# ---------------------------------------------------------------------- flows
def test_block_flow_starts_at_identity():
    x = jax.random.normal(jax.random.PRNGKey(0), (16, 3))
    flow = flows.BlockFlow(n_layers=2)
    params = flow.init(jax.random.PRNGKey(1), x)
    y, log_det = flow.apply(params, x)
    np.testing.assert_allclose(y, x, atol=1e-6)
    np.testing.assert_allclose(log_det, 0.0, atol=1e-6)


@pytest.mark.parametrize("d,layers", [(1, 1), (2, 1), (3, 2)])
def test_latent_flow_log_det_is_exact(d, layers):
    """The per-block log|det| equals the log|det| of the Jacobian computed by autodiff, for
    random (non-identity) parameters."""
    sizes = (d, 2)
    x = jax.random.normal(jax.random.PRNGKey(0), (5, d + 2))
    flow = flows.LatentFlow(sizes, n_layers=layers)
    params = flow.init(jax.random.PRNGKey(1), x)
    params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(
        jax.random.PRNGKey(p.size), p.shape), params)
    _, log_det = flow.apply(params, x)
    assert log_det.shape == (5, 2)
    jac = jax.vmap(jax.jacfwd(lambda row: flow.apply(params, row[None])[0][0]))(x)
    np.testing.assert_allclose(log_det[:, 0], np.linalg.slogdet(np.asarray(jac[:, :d, :d]))[1],
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(log_det[:, 1], np.linalg.slogdet(np.asarray(jac[:, d:, d:]))[1],
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(jac[:, :d, d:], 0.0, atol=1e-6)    # block-diagonal map


@pytest.mark.parametrize("active", [0, 1, 2])
def test_block_flow_with_fewer_active_layers_is_that_smaller_flow(active):
    """``active`` layers of a 3-layer flow act exactly as a flow of ``active`` layers with
    the same parameters: the later couplings and linear maps are the identity."""
    x = jax.random.normal(jax.random.PRNGKey(0), (16, 3))
    big = flows.BlockFlow(n_layers=3)
    params = big.init(jax.random.PRNGKey(1), x)
    params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(
        jax.random.PRNGKey(p.size), p.shape), params)
    small = flows.BlockFlow(n_layers=active)
    keep = {k: v for k, v in params["params"].items()
            if k in small.init(jax.random.PRNGKey(1), x)["params"]}
    y, log_det = big.apply(params, x, jnp.asarray(float(active)))
    y_small, log_det_small = small.apply({"params": keep}, x)
    np.testing.assert_allclose(y, y_small, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(log_det, log_det_small, rtol=1e-5, atol=1e-6)
    full = big.apply(params, x, 3.0)
    np.testing.assert_allclose(full[0], big.apply(params, x)[0], rtol=1e-6)
    if active < 3:
        assert float(jnp.max(jnp.abs(full[0] - y))) > 1e-3


# ---------------------------------------------------------------------- dependence
def test_dependence_of_a_linear_noise_model():
    """eps = z A^T: S_ij = |A_ij| std(z_j), whatever the scale of z_j."""
    a = jnp.asarray([[1.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.0, -2.0, 1.0]])
    z = jax.random.normal(jax.random.PRNGKey(0), (2000, 3)) * jnp.asarray([1.0, 3.0, 0.1])
    s = cp.dependence(lambda rows: rows @ a.T, z)
    expected = np.abs(np.asarray(a)) * np.std(np.asarray(z), axis=0)[None, :]
    np.testing.assert_allclose(s, expected, rtol=1e-5)


def test_dependence_is_scale_free_for_the_causal_prior():
    """Rescaling a parent and the weight that reads it by inverse factors leaves S as it is
    (|W| would shrink: the escape the dependence penalty closes)."""
    mask = ((False, False), (True, False))
    prior = cp.CausalPrior(mask, hidden=8)
    z = jax.random.normal(jax.random.PRNGKey(0), (500, 2))
    params = prior.init(jax.random.PRNGKey(1), z)["params"]
    s1 = prior.apply({"params": params}, z, method=prior.dependence)
    scaled = dict(params, adjacency=params["adjacency"] / 10.0)
    z2 = z.at[:, 0].multiply(10.0)
    s2 = prior.apply({"params": scaled}, z2, method=prior.dependence)
    assert s1[1, 0] > 0.01
    np.testing.assert_allclose(s2[1, 0], s1[1, 0], rtol=1e-4)


# ---------------------------------------------------------------------- orders and rules
@pytest.mark.parametrize("sizes", [(2, 2), (3, 2), (1, 3, 2)])
def test_order_candidates_try_every_permutation_of_every_block(sizes):
    mats = personax.order_candidates(sizes, cap=24)
    dim = sum(sizes)
    assert mats.shape == (max(len(list(itertools.permutations(range(d)))) for d in sizes),
                          dim, dim)
    for m in mats:       # permutation matrices that keep every block in place
        np.testing.assert_array_equal(m.sum(0), 1)
        np.testing.assert_array_equal(m.sum(1), 1)
        np.testing.assert_array_equal(m * (1 - personax.block_masks(sizes).T
                                           @ personax.block_masks(sizes)), 0)
    start = 0
    for d in sizes:
        seen = {tuple(np.argmax(m[start:start + d, start:start + d], axis=0)) for m in mats}
        assert seen == set(itertools.permutations(range(d)))
        start += d


def test_order_candidates_cap_large_blocks():
    mats = personax.order_candidates((5,), cap=10)
    assert mats.shape == (10, 5, 5)
    assert len({m.tobytes() for m in mats}) == 10
    np.testing.assert_array_equal(mats[0], np.eye(5))


def test_combine_orders_takes_each_blocks_best_replica():
    sizes = (2, 2)
    mats = personax.order_candidates(sizes, cap=24)           # replica 1 swaps both blocks
    block_loss = jnp.asarray([[1.0, 5.0], [2.0, 3.0]])        # block 0 -> 0, block 1 -> 1
    chosen = personax.combine_orders(jnp.asarray(mats), block_loss, sizes)
    expected = np.zeros((4, 4))
    expected[:2, :2] = mats[0][:2, :2]
    expected[2:, 2:] = mats[1][2:, 2:]
    np.testing.assert_array_equal(chosen, expected)


def test_choose_block_flows_takes_the_smallest_capacity_within_the_margin():
    sizes = (2, 2)
    mats = jnp.asarray(personax.order_candidates(sizes, cap=24))       # 2 orders per block
    orders = jnp.concatenate([mats, mats])                             # x capacities 1, 4
    capacity = jnp.asarray([[1.0, 1.0], [1.0, 1.0], [4.0, 4.0], [4.0, 4.0]])
    # block 0: capacity 1 within 0.05 x 2 dims of 4's best -> 1 (its order 1); block 1:
    # capacity 4 is 1 nat better -> 4 (its order 0)
    block_loss = jnp.asarray([[2.05, 3.0], [2.02, 3.1], [2.0, 2.0], [2.1, 2.5]])
    order, chosen = personax.choose_block_flows(orders, capacity, block_loss, sizes, 0.05)
    np.testing.assert_array_equal(chosen, [1.0, 4.0])
    expected = np.zeros((4, 4))
    expected[:2, :2] = np.asarray(mats[1])[:2, :2]
    expected[2:, 2:] = np.asarray(mats[0])[2:, 2:]
    np.testing.assert_array_equal(order, expected)
    # margin 0: the best replica of all wins whatever its capacity
    _, chosen = personax.choose_block_flows(orders, capacity, block_loss, sizes, 0.0)
    np.testing.assert_array_equal(chosen, [4.0, 4.0])


def test_choose_lambda_takes_the_largest_within_the_margin():
    path = jnp.asarray([3.0, 3.02, 3.05, 3.2, 3.9])
    assert int(personax.choose_lambda(path, 0.1)) == 2
    assert int(personax.choose_lambda(path, 0.01)) == 0
    assert int(personax.choose_lambda(path, 1.0)) == 4
    # not monotone: a later lambda back within the margin still counts
    assert int(personax.choose_lambda(jnp.asarray([1.0, 1.5, 1.05]), 0.1)) == 2


def test_best_restarts_takes_each_lambdas_lowest_objective():
    # 3 lambdas x 2 restarts, lambda-major
    objective = jnp.asarray([5.0, 4.0, 1.0, 2.0, 7.0, 7.5])
    np.testing.assert_array_equal(personax.best_restarts(objective, 2), [1, 2, 4])
    np.testing.assert_array_equal(personax.best_restarts(objective, 1), np.arange(6))


def test_per_replica_clip_clips_each_replica_alone():
    grads = {"w": jnp.asarray([[3.0, 4.0], [0.3, 0.4]]), "b": jnp.zeros((2, 1))}
    out, _ = personax.per_replica_clip(1.0).update(grads, optax.EmptyState())
    np.testing.assert_allclose(out["w"][0], [0.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(out["w"][1], [0.3, 0.4], rtol=1e-6)   # below the norm: kept


# ---------------------------------------------------------------------- the stage-B step
def _case1_method():
    config = synthetic_config.get_config("smoke")
    layout = vae.ModelLayout(names=("m1", "m2"), obs_shapes=((7,), (8,)),
                             n_measurements=(3, 3), latent_dims=(2, 2), eta_dims=(1, 1))
    return methods.build_method("personax", layout, config), config, layout


def _one_replica_stage():
    """A one-replica stage B of the case1 layout on random inputs: (stage, params, xs)."""
    method, _, layout = _case1_method()
    stage = method.component_stage(1)
    xs = tuple(jax.random.normal(jax.random.PRNGKey(i), (64, 3) + s)
               for i, s in enumerate(layout.obs_shapes))
    return stage, stage.init(jax.random.PRNGKey(0), xs), xs


def test_component_step_trains_only_the_replicas():
    method, config, layout = _case1_method()
    stage = method.component_stage(3)
    xs = tuple(jax.random.normal(jax.random.PRNGKey(i), (2, 32, 3) + s)
               for i, s in enumerate(layout.obs_shapes))
    tx = stage.optimizer(config.train)
    state = steps.create_train_states(stage, tuple(x[0] for x in xs), tx, 0, 2)
    params = dict(state.params, lambdas=jnp.asarray([[0.0, 0.3, 1.0]] * 2))
    state = state.replace(params=params)
    step = jax.jit(steps.make_train_step(stage))
    new, _ = step(state, xs)            # the warm-up's first learning rate is 0
    new, terms = step(new, xs)
    for key in personax.FROZEN:
        for a, b in zip(jax.tree.leaves(state.params[key]), jax.tree.leaves(new.params[key])):
            np.testing.assert_array_equal(a, b)
    moved = [float(jnp.max(jnp.abs(a - b))) for a, b in
             zip(jax.tree.leaves(state.params["replicas"]), jax.tree.leaves(new.params["replicas"]))]
    assert max(moved) > 0
    assert np.all(np.isfinite(np.asarray(terms["loss"])))


def test_component_replicas_do_not_interact():
    """The gradient of replica 0 does not depend on replica 1's parameters."""
    method, config, layout = _case1_method()
    stage = method.component_stage(2)
    xs = tuple(jax.random.normal(jax.random.PRNGKey(i), (32, 3) + s)
               for i, s in enumerate(layout.obs_shapes))
    params = stage.init(jax.random.PRNGKey(0), xs)
    params = dict(params, lambdas=jnp.asarray([0.3, 0.3]))
    grad = jax.grad(lambda p: stage.loss(p, xs, None)[0])
    g1 = grad(params)["replicas"]
    other = jax.tree.map(lambda a: a.at[1].add(0.5), params["replicas"])
    g2 = grad(dict(params, replicas=other))["replicas"]
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-6)


def test_anchor_adds_the_squared_drift_from_stage_a_coordinates():
    """stage_b.anchor * mean ||zhat - r P||^2: zero at the identity flow, and exactly that
    term once the flow has moved (the NLL and the penalty are unchanged by it)."""
    stage, params, xs = _one_replica_stage()
    stage = dataclasses.replace(stage, anchor=0.0)
    anchored = dataclasses.replace(stage, anchor=2.0)
    for p in (params, dict(params, replicas=jax.tree.map(
            lambda a: a + 0.2 * jax.random.normal(jax.random.PRNGKey(a.size), a.shape),
            params["replicas"]))):
        plain = stage.loss(p, xs, None)[0]
        with_anchor = anchored.loss(p, xs, None)[0]
        r = stage.representation(p, xs)
        zhat, _, _ = stage.replica_terms(jax.tree.map(lambda a: a[0], p["replicas"]),
                                         p["orders"][0], r)
        drift = float(jnp.mean(jnp.sum((zhat - r @ p["orders"][0]) ** 2, -1)))
        np.testing.assert_allclose(float(with_anchor - plain), 2.0 * drift, rtol=1e-4, atol=1e-6)
    assert drift > 1e-3      # the perturbed flow moved


def test_log_penalty_has_unit_slope_at_zero_and_falls_for_strong_edges():
    dep = jnp.asarray([0.0, 0.1, 1.0])
    np.testing.assert_array_equal(personax.shaped_penalty(dep, "l1", 0.1), dep)
    slope = jax.vmap(jax.grad(lambda s: personax.shaped_penalty(s, "log", 0.1)))(dep)
    np.testing.assert_allclose(slope, [1.0, 0.5, 0.1 / 1.1], rtol=1e-6)
    with pytest.raises(ValueError, match="stage_b.penalty"):
        personax.shaped_penalty(dep, "l2", 0.1)


def test_stage_penalty_uses_the_configured_shape_on_the_penalised_edges():
    """The step's penalty is sum(mask * shape(S)) for either shape, on the same S."""
    stage, params, xs = _one_replica_stage()
    replica = jax.tree.map(lambda a: a[0], params["replicas"])
    r = stage.representation(params, xs)
    zhat, _, _ = stage.replica_terms(replica, params["orders"][0], r)
    dep = stage.dependence(replica, zhat[:stage.penalty_rows])
    assert float(jnp.sum(dep * stage.penalty_mask)) > 0
    for shape in ("l1", "log"):
        shaped = dataclasses.replace(stage, penalty=shape, penalty_scale=0.1)
        _, (_, penalty) = shaped.replica_loss(replica, params["orders"][0], 0.3, r)
        expected = jnp.sum(personax.shaped_penalty(dep, shape, 0.1) * stage.penalty_mask)
        np.testing.assert_allclose(float(penalty), float(expected), rtol=1e-5)
    # the log penalty lies below the L1 for every S > 0 (slope <= 1, equal at 0)
    log, l1 = (dataclasses.replace(stage, penalty=p, penalty_scale=0.1) for p in ("log", "l1"))
    assert float(log.replica_loss(replica, params["orders"][0], 0.3, r)[1][1]) < \
        float(l1.replica_loss(replica, params["orders"][0], 0.3, r)[1][1])


def test_restarts_multiply_the_replicas_and_selection_takes_each_lambdas_best():
    """stage_b.restarts = 2: every order candidate and every lambda gets two replicas; the
    selection scores each lambda by its restart of lowest validation objective, then applies
    the lambda rule to those restarts' NLL path."""
    method, config, layout = _case1_method()
    config.stage_b.restarts = 2
    config.stage_b.lambdas = (0.0, 0.3)
    config.stage_b.flow_layers = (1, 2)
    method = methods.build_method("personax", layout, config)
    candidates = method.order_candidates()
    n = len(candidates)
    orders, capacity = method.order_replicas()       # (restart, capacity, order)
    np.testing.assert_array_equal(orders, np.concatenate([candidates] * 4))
    np.testing.assert_array_equal(capacity[:, 0], np.repeat([1, 2, 1, 2], n))
    np.testing.assert_array_equal(capacity[:, 1], capacity[:, 0])
    np.testing.assert_allclose(method.replica_lambdas, [0.0, 0.0, 0.3, 0.3])
    xs = tuple(jax.random.normal(jax.random.PRNGKey(i), (256, 3) + s)
               for i, s in enumerate(layout.obs_shapes))
    params = method.init(jax.random.PRNGKey(0), xs)
    params = dict(params, lambdas=jnp.asarray(method.replica_lambdas))
    # restart 0 of each lambda gets a badly perturbed flow: restart 1 must win both lambdas
    noise = lambda a: 3.0 * jax.random.normal(jax.random.PRNGKey(a.size), a.shape[1:])
    params["replicas"] = jax.tree.map(
        lambda a: a.at[0].add(noise(a)).at[2].add(noise(a)), params["replicas"])
    stage = method.component_stage(4)
    scores = stage.scores(params, xs)
    objective = np.asarray(scores["objective"])
    assert objective[1] < objective[0] and objective[3] < objective[2]
    chosen = method.select(jax.tree.map(lambda a: a[None], params), xs)
    restart_nll = np.asarray(scores["nll"]).reshape(2, 2)
    np.testing.assert_allclose(chosen["val_nll_restarts"][0], restart_nll, rtol=1e-5)
    np.testing.assert_allclose(chosen["val_nll_path"][0], restart_nll[:, 1], rtol=1e-5)
    lam = int(chosen["lambda_index"][0])
    for a, b in zip(jax.tree.leaves(chosen["replica"]), jax.tree.leaves(params["replicas"])):
        np.testing.assert_array_equal(a[0], b[2 * lam + 1])
    assert method.choices(chosen)["lambda"] == [(0.0, 0.3)[lam]]


# ---------------------------------------------------------------------- the staged run
def test_staged_run_reports_its_choices_and_resumes_inside_stage_b(tmp_path):
    """One command trains stage A and both stage-B phases (each in its own checkpoint
    folder); the report says which lambda and order each seed chose, the graph is read from
    S; a run stopped inside the sparsity phase resumes to the same numbers."""
    from crl_jax import experiments

    config = synthetic_config.get_config("smoke")
    config.eval.plots = False
    config.stage_b.flow_layers = (1, 2)       # the capacity choice, end to end
    full = experiments.run(config, str(tmp_path / "full"))
    for sub in ("checkpoints", "checkpoints_orders", "checkpoints_sparsity"):
        assert (tmp_path / "full" / sub).is_dir(), sub
    choices = full["evaluation"]["choices"]
    assert choices["lambdas"] == [0.0, 0.3]
    assert len(choices["lambda"]) == 2 and set(choices["lambda"]) <= {0.0, 0.3}
    assert all(sorted(o) == [0, 1, 2, 3] for o in choices["order"])
    assert np.asarray(choices["val_nll_path"]).shape == (2, 2)
    assert np.asarray(choices["val_nll_restarts"]).shape == (2, 2, 1)
    flow_layers = np.asarray(choices["flow_layers"])          # per seed and block
    assert flow_layers.shape == (2, 2) and set(flow_layers.ravel()) <= {1, 2}
    weights = np.asarray(full["evaluation"]["per_seed"][0]["graph"]["estimated_weights"])
    assert weights.shape == (4, 4) and np.all(weights >= 0)       # S, not signed W
    steps_a, steps_b = int(config.train.steps), int(config.stage_b.steps)
    assert full["stages"]["stage_steps"] == {"blocks": steps_a, "orders": steps_b,
                                             "sparsity": steps_b}

    stop = steps_a + steps_b + 10       # inside the sparsity phase
    assert experiments.run(config, str(tmp_path / "resumed"), stop_after_step=stop) is None
    resumed = experiments.run(config, str(tmp_path / "resumed"))
    np.testing.assert_allclose(resumed["evaluation"]["summary"]["mcc_pearson"]["per_seed"],
                               full["evaluation"]["summary"]["mcc_pearson"]["per_seed"],
                               rtol=1e-5)


def test_trimmed_sparsity_flows_padded_back_compute_the_same():
    """The sparsity phase trains flows with only the couplings its blocks chose; padded back
    to the method's structure (the missing couplings gated off by ``capacity``) they have
    the full flow's parameter tree and give the same validation scores."""
    from crl_jax import staged

    method, config, layout = _case1_method()
    config.stage_b.flow_layers = (1, 3)
    method = methods.build_method("personax", layout, config)
    small = staged.trimmed(method, 1)
    assert small.flow.n_layers == 1 and method.flow.n_layers == 3
    assert staged.trimmed(method, 3) is method
    xs = tuple(jax.random.normal(jax.random.PRNGKey(i), (128, 3) + s)
               for i, s in enumerate(layout.obs_shapes))
    stage = small.component_stage(2)
    params = stage.init(jax.random.PRNGKey(0), xs)
    params = dict(params, lambdas=jnp.asarray([0.0, 0.3]), capacity=jnp.ones((2, 2)))
    params["replicas"] = jax.tree.map(       # trained-looking flows
        lambda a: a + 0.2 * jax.random.normal(jax.random.PRNGKey(a.size), a.shape),
        params["replicas"])
    full = staged.padded(method, jax.tree.map(lambda a: a[None], params))
    reference = method.component_stage(2).init(jax.random.PRNGKey(1), xs)
    assert jax.tree.structure(jax.tree.map(lambda a: a[0], full)["replicas"]) == \
        jax.tree.structure(reference["replicas"])
    got = method.component_stage(2).scores(jax.tree.map(lambda a: a[0], full), xs)
    want = stage.scores(params, xs)
    np.testing.assert_allclose(got["nll"], want["nll"], rtol=1e-5)
    np.testing.assert_allclose(got["dependence"], want["dependence"], rtol=1e-4, atol=1e-6)
