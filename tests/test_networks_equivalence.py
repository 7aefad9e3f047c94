"""The matmul forms of networks.py equal the flax modules they replace (values, gradients,
parameter trees and initial values): the patch-matmul convolutions against nn.Conv /
nn.ConvTranspose, GaussianHead and the fused z/eta heads of MeasurementEncoder against
nn.Dense heads, networks.Dense (its own kernel gradient) against nn.Dense."""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl_jax.models import networks

SIZES = [(14, 14), (7, 7), (9, 14), (3, 5), (1, 2)]


def _pair(kind, features):
    if kind == "conv":
        return nn.Conv(features, (4, 4), strides=(2, 2)), networks.Conv4x4s2(features)
    return nn.ConvTranspose(features, (4, 4), strides=(2, 2)), networks.ConvTranspose4x4s2(features)


@pytest.mark.parametrize("kind", ["conv", "transpose"])
@pytest.mark.parametrize("size", SIZES)
def test_matches_flax(kind, size):
    x = jax.random.normal(jax.random.PRNGKey(0), (2,) + size + (3,))
    ref, ours = _pair(kind, 6)
    params = ref.init(jax.random.PRNGKey(1), x)
    ours_params = ours.init(jax.random.PRNGKey(1), x)
    # Same parameter names, shapes and initial values (drop-in for checkpoints).
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, ours_params)
    params = jax.tree_util.tree_map(  # a non-zero bias, so the bias path is checked too
        lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
    y_ref, y = ref.apply(params, x), ours.apply(params, x)
    assert y.shape == y_ref.shape
    scale = float(jnp.max(jnp.abs(y_ref)))
    np.testing.assert_allclose(y, y_ref, atol=1e-5 * scale)

    w = jax.random.normal(jax.random.PRNGKey(3), y.shape)
    g_ref = jax.grad(lambda p, x: jnp.sum(w * ref.apply(p, x)), argnums=(0, 1))(params, x)
    g = jax.grad(lambda p, x: jnp.sum(w * ours.apply(p, x)), argnums=(0, 1))(params, x)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4 * float(jnp.max(jnp.abs(b)))),
        g, g_ref)


def test_stacked_over_measurements_matches_per_measurement_flax():
    """Under nn.vmap (independent kernels per measurement) each measurement's output is the
    flax convolution with that measurement's kernel."""
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 3, 14, 14, 2))   # (B, K, H, W, C)
    stacked = networks.stacked(networks.Conv4x4s2)(8)
    params = stacked.init(jax.random.PRNGKey(1), x)
    y = stacked.apply(params, x)
    assert y.shape == (4, 3, 7, 7, 8)
    for k in range(3):
        p_k = jax.tree_util.tree_map(lambda p: p[k], params)
        np.testing.assert_allclose(
            y[:, k], nn.Conv(8, (4, 4), strides=(2, 2)).apply(p_k, x[:, k]), atol=1e-5)


def test_conv_encoder_decoder_parameter_tree_unchanged():
    """The conv encoder/decoder keep flax's module names (Conv_i, ConvTranspose_i)."""
    x = jnp.zeros((2, 14, 14, 3))
    enc = networks.FeatureEncoder("conv", (16,)).init(jax.random.PRNGKey(0), x)["params"]
    assert set(enc) == {"Conv_0", "Conv_1", "Dense_0"}
    assert enc["Conv_1"]["kernel"].shape == (4, 4, 32, 64)
    dec = networks.MeasurementDecoder("conv", (16,), (14, 14, 3)).init(
        jax.random.PRNGKey(0), jnp.zeros((2, 5)))["params"]
    assert set(dec) == {"MLP_0", "ConvTranspose_0", "ConvTranspose_1"}
    assert dec["ConvTranspose_1"]["kernel"].shape == (4, 4, 32, 3)


class _FlaxGaussianHead(nn.Module):
    """GaussianHead as first written: two nn.Dense (mean; log-variance from zero kernel and
    bias -2), the log-variance clipped to (-12, 6)."""

    dim: int

    @nn.compact
    def __call__(self, h):
        mean = nn.Dense(self.dim)(h)
        logvar = nn.Dense(self.dim, kernel_init=nn.initializers.zeros,
                          bias_init=nn.initializers.constant(-2.0))(h)
        return mean, jnp.clip(logvar, -12.0, 6.0)


@pytest.mark.parametrize("lead", [(5,), (2, 5)])
def test_gaussian_head_matches_two_flax_dense(lead):
    """GaussianHead (one dense product of both heads): nn.Dense's parameter tree and initial
    values, the same outputs (clipping included) and gradients, also vmapped over seeds."""
    h = jax.random.normal(jax.random.PRNGKey(0), lead + (16,))
    ref, ours = _FlaxGaussianHead(3), networks.GaussianHead(3)
    params = ref.init(jax.random.PRNGKey(1), h)
    jax.tree_util.tree_map(np.testing.assert_array_equal, params,
                           ours.init(jax.random.PRNGKey(1), h))
    params = jax.tree_util.tree_map(
        lambda p: 3.0 * jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
    outs_ref = ref.apply(params, h)
    assert float(jnp.max(outs_ref[1])) == 6.0 and float(jnp.min(outs_ref[1])) == -12.0
    for a, b in zip(ours.apply(params, h), outs_ref):
        assert a.shape == b.shape == lead + (3,)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    w = jax.random.normal(jax.random.PRNGKey(3), (2,) + lead + (3,))

    def grads(module, p, h):
        def loss(p, h):
            mean, logvar = module.apply(p, h)
            return jnp.sum(w[0] * jnp.tanh(mean) + w[1] * logvar)
        return jax.grad(loss, (0, 1))(p, h)

    tol = dict(rtol=1e-5, atol=1e-5)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, **tol),
                           grads(ours, params, h), grads(ref, params, h))
    seeds = jax.tree_util.tree_map(lambda p: jnp.stack([p, 0.5 * p]), params)
    hs = jnp.stack([h, h - 1.0])
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, **tol),
                           jax.vmap(lambda p, h: grads(ours, p, h))(seeds, hs),
                           jax.vmap(lambda p, h: grads(ref, p, h))(seeds, hs))


class _TwoHeadEncoder(nn.Module):
    """MeasurementEncoder as first written: one GaussianHead (nn.Dense) per latent group."""

    latent_dim: int
    eta_dim: int

    @nn.compact
    def __call__(self, x):
        h = networks.FeatureEncoder("mlp", (16,))(x)
        z_mean, z_logvar = _FlaxGaussianHead(self.latent_dim, name="GaussianHead_0")(h)
        if self.eta_dim > 0:
            eta_mean, eta_logvar = _FlaxGaussianHead(self.eta_dim, name="GaussianHead_1")(h)
        else:
            eta_mean = eta_logvar = jnp.zeros(h.shape[:-1] + (0,), h.dtype)
        return h, z_mean, z_logvar, eta_mean, eta_logvar


@pytest.mark.parametrize("eta_dim", [0, 1, 2])
def test_fused_heads_match_two_gaussian_heads(eta_dim):
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 3, 10))      # (B, K, obs)
    ref = networks.stacked(_TwoHeadEncoder)(3, eta_dim)
    ours = networks.stacked(networks.MeasurementEncoder)("mlp", (16,), 3, eta_dim)
    params = ref.init(jax.random.PRNGKey(1), x)
    jax.tree_util.tree_map(np.testing.assert_array_equal, params,
                           ours.init(jax.random.PRNGKey(1), x))
    # Random parameters (the logvar heads start at zero) and a large scale so that the
    # log-variance clipping at (-12, 6) is exercised as well.
    params = jax.tree_util.tree_map(
        lambda p: 3.0 * jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
    outs_ref, outs = ref.apply(params, x), ours.apply(params, x)
    assert float(jnp.max(outs_ref[2])) == 6.0 or float(jnp.min(outs_ref[2])) == -12.0
    for a, b in zip(outs, outs_ref):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_conv_encoder_decoder_same_on_both_backends_paths(monkeypatch):
    """The library-conv path (GPU/TPU) and the patch path (CPU) give the same networks."""
    assert networks.matmul_convolutions() == (jax.default_backend() == "cpu")
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 14, 14, 3))
    code = jax.random.normal(jax.random.PRNGKey(1), (2, 5))
    enc = networks.FeatureEncoder("conv", (16,))
    dec = networks.MeasurementDecoder("conv", (16,), (14, 14, 3))
    outs = {}
    for patches in (True, False):
        monkeypatch.setattr(networks, "matmul_convolutions", lambda p=patches: p)
        pe = enc.init(jax.random.PRNGKey(2), x)
        pd = dec.init(jax.random.PRNGKey(3), code)
        outs[patches] = (pe, enc.apply(pe, x), pd, dec.apply(pd, code))
    for a, b in zip(outs[True], outs[False]):
        jax.tree_util.tree_map(lambda u, v: np.testing.assert_allclose(u, v, atol=1e-5), a, b)


@pytest.mark.parametrize("n_in,n_out", [(4, 128), (128, 128), (128, 10)])
@pytest.mark.parametrize("lead", [(5,), (2, 5)])
def test_dense_equals_flax_dense_values_and_gradients(n_in, n_out, lead):
    """networks.Dense (custom kernel gradient) is nn.Dense: parameters, outputs, gradients
    with respect to the parameters and the input, also vmapped over seeds."""
    x = jax.random.normal(jax.random.PRNGKey(0), lead + (n_in,))
    ref, ours = nn.Dense(n_out), networks.Dense(n_out)
    params = ref.init(jax.random.PRNGKey(1), x)
    jax.tree_util.tree_map(np.testing.assert_array_equal, params,
                           ours.init(jax.random.PRNGKey(1), x))
    params = jax.tree_util.tree_map(
        lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
    np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), rtol=1e-5, atol=1e-5)
    w = jax.random.normal(jax.random.PRNGKey(3), lead + (n_out,))

    def grads(module, p, x):
        return jax.grad(lambda p, x: jnp.sum(w * jnp.tanh(module.apply(p, x))), (0, 1))(p, x)

    tol = dict(rtol=1e-5, atol=1e-5)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, **tol),
                           grads(ours, params, x), grads(ref, params, x))
    seeds = jax.tree_util.tree_map(lambda p: jnp.stack([p, 2.0 * p, -p]), params)
    xs = jnp.stack([x, x + 1.0, 2.0 * x])
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, **tol),
                           jax.vmap(lambda p, x: grads(ours, p, x))(seeds, xs),
                           jax.vmap(lambda p, x: grads(ref, p, x))(seeds, xs))


def _kernel_gradient_dot_shapes(layer, n_in, n_out):
    x = jnp.ones((512, n_in))
    k, b = jnp.ones((n_in, n_out)), jnp.ones((n_out,))
    grad = jax.jit(jax.grad(lambda k: jnp.sum(jnp.tanh(layer(x, k, b)))))
    text = grad.lower(k).compile().as_text()
    return {m.group(1) for m in re.finditer(r"= f32\[([\d,]+)\]\{[\d,]*\} dot\(", text)}


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's products")
def test_dense_kernel_gradient_keeps_the_wide_side_as_output_columns():
    """The reason for networks.dense: XLA:CPU folds the transpose of autodiff's (out, in)
    kernel gradient into the product and runs a (128, 10) product several times slower than
    a (10, 128) one. networks.dense keeps the wide side as the product's columns."""
    def plain(x, k, b):
        return x @ k + b

    assert "128,10" in _kernel_gradient_dot_shapes(plain, 128, 10)   # what it avoids
    ours = _kernel_gradient_dot_shapes(networks.dense, 128, 10)
    assert "10,128" in ours and "128,10" not in ours
    ours = _kernel_gradient_dot_shapes(networks.dense, 4, 128)
    assert "4,128" in ours and "128,4" not in ours


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's layouts")
def test_dense_input_gradient_does_not_materialise_the_transposed_kernel():
    """The input gradient contracts with the kernel as stored. Written as ``dy @ kernel.T``
    it made XLA:CPU copy the transposed kernel when the layer is vmapped over seeds and
    measurements (two batch axes, as in the models), inside the microbatch loop once per
    chunk: 24.5 MB a chunk for the conv image model, its chunked step 1.2-1.3x slower."""
    seeds, meas = 1, 3
    k1, b1 = jnp.ones((seeds, meas, 32, 256)) * 0.01, jnp.zeros((seeds, meas, 256))
    k2, b2 = jnp.ones((seeds, meas, 256, 512)) * 0.01, jnp.zeros((seeds, meas, 512))
    xs = jnp.ones((4, seeds, meas, 64, 32))
    dense = jax.vmap(jax.vmap(networks.dense))

    def loss(k1, k2, xs):
        def chunk(total, x):
            h = jnp.tanh(dense(x, k1, b1))
            return total + jnp.sum(jnp.tanh(dense(h, k2, b2))), None
        return jax.lax.scan(chunk, 0.0, xs)[0]

    text = jax.jit(jax.grad(loss, (0, 1))).lower(k1, k2, xs).compile().as_text()
    transposed = re.findall(r"= f32\[1,3,512,256\]\{[\d,]*\} (?:copy|transpose)\(", text)
    assert not transposed, transposed
    assert re.search(r"= f32\[1,3,256,512\]", text)   # the kernel's own shape is there


def test_leaky_relu_matches_flax_to_one_ulp_with_its_gradient():
    x = jax.random.normal(jax.random.PRNGKey(3), (4096,)) * 10.0
    x = jnp.concatenate([x, jnp.array([0.0, -0.0, 1e-30, -1e-30, 3.0, -3.0])])
    ours, ref = networks.leaky_relu(x), nn.leaky_relu(x, networks.LEAKY_SLOPE)
    # the slope is exactly 1/5 here, float32(0.2) in flax: at most one unit in the last place
    np.testing.assert_array_max_ulp(np.asarray(ours), np.asarray(ref), maxulp=1)
    np.testing.assert_array_equal(np.sign(ours), np.sign(ref))
    assert float(networks.leaky_relu(jnp.float32(-5.0))) == -1.0
    g = jax.random.normal(jax.random.PRNGKey(4), x.shape)
    grad_ours = jax.grad(lambda v: jnp.sum(networks.leaky_relu(v) * g))(x)
    grad_ref = jax.grad(lambda v: jnp.sum(nn.leaky_relu(v, networks.LEAKY_SLOPE) * g))(x)
    np.testing.assert_array_max_ulp(np.asarray(grad_ours), np.asarray(grad_ref), maxulp=1)


def _mlp_gradient_temp_bytes(activation) -> float:
    """XLA's temporaries for the gradient of a 3-layer, 128-wide MLP on 1024 rows."""
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    params = [(jax.random.normal(k, (128, 128)) * 0.1, jnp.zeros(128)) for k in keys[:3]]
    x = jax.random.normal(keys[3], (1024, 128))

    def loss(ps):
        h = x
        for w, b in ps[:-1]:
            h = activation(networks.dense(h, w, b))
        return jnp.sum(networks.dense(h, *ps[-1]) ** 2)

    compiled = jax.jit(jax.grad(loss)).lower(params).compile()
    return float(compiled.memory_analysis().temp_size_in_bytes)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's fusion decisions")
def test_leaky_relu_backward_keeps_only_its_output():
    """With flax's leaky ReLU XLA:CPU keeps each hidden layer's product output as well as
    its activation for the backward pass (it copies the bias add and select into the mask);
    with ``networks.leaky_relu`` only the activation (the next layer's input) stays."""
    layer = 1024 * 128 * 4
    ours = _mlp_gradient_temp_bytes(networks.leaky_relu)
    flax_form = _mlp_gradient_temp_bytes(lambda h: nn.leaky_relu(h, networks.LEAKY_SLOPE))
    assert flax_form - ours >= 1.5 * layer, (ours / layer, flax_form / layer)
