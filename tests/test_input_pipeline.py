"""Minibatches: fresh samples per step, or gathers from a fixed training set; per-seed slices."""
import jax
import numpy as np
import pytest

from configs import synthetic as synthetic_config
from crl_jax import input_pipeline, parallel
from crl_jax.experiments import synthetic as experiment


def _source(train_size, num_seeds=2, batch_size=32, prefetch_steps=None):
    config = synthetic_config.get_config("smoke")
    config.data.train_size = train_size
    if prefetch_steps is not None:
        config.train.prefetch_steps = prefetch_steps
    config.train.num_seeds = num_seeds
    config.train.batch_size = batch_size
    process = experiment.load_or_make_process(config.data, None)
    sharding = parallel.batch_sharding(parallel.make_mesh())
    return input_pipeline.BatchSource.from_process(process, config.data, config.train, sharding)


def test_fresh_batches_are_new_each_step_and_reproducible():
    src = _source(0)
    b0, b1 = src(0), src(1)
    assert b0[0].shape == (2, 32, 3, 7) and b0[1].shape == (2, 32, 3, 8)
    assert not np.allclose(b0[0], b1[0])
    assert not np.allclose(b0[0][0], b0[0][1]), "seeds see different examples"
    np.testing.assert_array_equal(np.asarray(src(1)[0]), np.asarray(b1[0]))
    np.testing.assert_array_equal(np.asarray(_source(0)(1)[0]), np.asarray(b1[0]))


def test_batch_of_step_is_the_process_sample_under_the_step_key():
    """source(step) draws from the process with key fold_in(fold_in(seed key, salt), step),
    per seed a consecutive slice (the key derivation moved inside the jitted sampler)."""
    src = _source(0)
    config = synthetic_config.get_config("smoke")
    process = experiment.load_or_make_process(config.data, None)
    key = jax.random.fold_in(jax.random.PRNGKey(int(config.train.seed)),
                             input_pipeline._BATCH_SALT)
    for step in (0, 7, 2**31 + 5):
        want = process.sample(jax.random.fold_in(key, step), 2 * 32).x
        for got, x in zip(src(step), want):
            np.testing.assert_allclose(np.asarray(got), np.asarray(x).reshape(got.shape),
                                       rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("train_size", [0, 50])
def test_batches_do_not_depend_on_how_many_steps_one_call_draws(train_size):
    """prefetch_steps only amortises the sampler's dispatch: the batch of every step, asked in
    any order (a resumed run starts mid-chunk), is the one of its own step key."""
    one = _source(train_size, prefetch_steps=1)
    for p in (3, 8):
        src = _source(train_size, prefetch_steps=p)
        for step in (5, 0, 1, 2, 3, 4, 9, 8, 17, 2**31 + 5):
            for got, want in zip(src(step), one(step)):
                np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="train.prefetch_steps"):
        _source(train_size, prefetch_steps=0)


@pytest.mark.parametrize("train_size", [0, 50])
def test_stacked_batches_are_the_steps_batches(train_size):
    """stacked(first, n) (one sampler call for a train.steps_per_call dispatch): the batch of
    each of the n steps on a leading axis, batch axis 2 sharded like the single steps'."""
    src = _source(train_size, prefetch_steps=3)
    for first, n in ((0, 4), (6, 2), (2**31 + 1, 5)):
        stacked = src.stacked(first, n)
        assert len(stacked) == len(src(first))
        for m, x in enumerate(stacked):
            assert x.shape == (n,) + src(first)[m].shape
            assert tuple(x.sharding.spec) == (None, None, parallel.DATA_AXIS)
            for i in range(n):
                np.testing.assert_allclose(np.asarray(x[i]), np.asarray(src(first + i)[m]),
                                           rtol=1e-6, atol=1e-6)


def test_fixed_training_set_batches_only_contain_training_rows():
    src = _source(50)
    train_rows = np.asarray(src.train_set[0]).reshape(50, -1)
    seen = set()
    for step in range(5):
        rows = np.asarray(src(step)[0]).reshape(-1, train_rows.shape[1])
        dist = np.abs(rows[:, None, :] - train_rows[None, :, :]).max(-1)
        assert np.all(dist.min(axis=1) == 0.0), "every batch row is a training row"
        seen.update(dist.argmin(axis=1).tolist())
    assert len(seen) > 40, "minibatches cover the training set"


def test_from_arrays_rejects_mismatched_rows():
    config = synthetic_config.get_config("smoke")
    sharding = parallel.batch_sharding(parallel.make_mesh())
    with pytest.raises(ValueError, match="number of rows"):
        input_pipeline.BatchSource.from_arrays(
            (np.zeros((10, 1, 3)), np.zeros((9, 1, 3))), config.train, sharding)
