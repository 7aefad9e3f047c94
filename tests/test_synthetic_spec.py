"""Spec, presets and validation of synthetic/ (no sampling)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import synthetic
from synthetic import ModalitySpec, Spec, get_spec
from synthetic.graph import is_acyclic, topological_order


@pytest.mark.parametrize("name, n_mod, latent, obs_total", [
    ("numerical_case1", 2, 2, 15), ("numerical_case2", 2, 3, 20), ("numerical_case3", 4, 2, 30)])
def test_numerical_presets_dims(name, n_mod, latent, obs_total):
    spec = get_spec(name)
    assert spec.kind == "vector" and spec.shared_dim == 0
    assert len(spec.modalities) == n_mod
    assert all(m.latent_dim == latent and m.eta_dim == 1 for m in spec.modalities)
    assert sum(s[0] for s in spec.obs_shapes) == obs_total
    assert spec.n_measurements == (3,) * n_mod
    assert spec.latent_dim == n_mod * latent
    spec2 = get_spec(name, n_measurements=2, shared_dim=2)
    assert spec2.n_measurements == (2,) * n_mod and spec2.shared_dim == 2
    assert spec2.latent_dim == 2 + n_mod * latent
    assert spec2.mixing_input_dims == (2 + latent + 1,) * n_mod


def test_presets_listed_and_unknown_preset_error():
    assert set(synthetic.PRESETS) == {"numerical_case1", "numerical_case2", "numerical_case3", "variant_mnist_3m",
                                      "content_style"}
    with pytest.raises(ValueError, match="numerical_case1.*content_style|valid presets"):
        get_spec("numerical_case9")
    with pytest.raises(ValueError, match="unknown override.*bogus"):
        get_spec("numerical_case1", bogus=1)


def test_block_slices_cover_latent_in_order():
    spec = get_spec("numerical_case3", shared_dim=2)
    sl = spec.block_slices
    assert list(sl) == ["shared", "m1", "m2", "m3", "m4"]
    assert sl["shared"] == slice(0, 2) and sl["m1"] == slice(2, 4) and sl["m4"] == slice(8, 10)
    assert "shared" not in get_spec("numerical_case3").block_slices
    assert get_spec("numerical_case3").block_slices["m1"] == slice(0, 2)


def test_variant_mnist_spec():
    spec = get_spec("variant_mnist_3m")
    assert spec.kind == "variant_mnist"
    assert spec.obs_shapes == ((28, 28, 3), (28, 28, 1))
    assert spec.n_measurements == (3, 1)
    np.testing.assert_array_equal(np.asarray(spec.adjacency), [[0, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0]])
    assert get_spec("variant_mnist_3m", image_size=14).obs_shapes == ((14, 14, 3), (14, 14, 1))
    with pytest.raises(ValueError, match="image_size"):
        get_spec("variant_mnist_3m", image_size=20)
    with pytest.raises(ValueError, match="shared_dim"):
        get_spec("variant_mnist_3m", shared_dim=1)


def test_content_style_spec():
    spec = get_spec("content_style")
    assert spec.shared_dim == 5 and [m.latent_dim for m in spec.modalities] == [5, 5]
    assert spec.obs_shapes == ((10,), (10,)) and spec.n_measurements == (1, 1)
    adj = np.asarray(spec.adjacency)
    # only view1_j -> view2_j, nothing into content, no style-style edges inside a view
    expected = np.zeros((15, 15), int)
    expected[np.arange(10, 15), np.arange(5, 10)] = 1
    np.testing.assert_array_equal(adj, expected)
    assert get_spec("content_style", obs_dim=15).obs_shapes == ((15,), (15,))


def test_allowed_edges_mask_rules():
    spec = get_spec("numerical_case3", shared_dim=1)  # D = 1 + 4 * 2
    mask = spec.allowed_edges_mask()
    assert mask.shape == (9, 9) and mask.dtype == bool
    assert not mask[0].any()  # shared latent has no parents
    assert mask[1:, 0].all()  # s -> every modality latent
    assert not mask.diagonal().any()
    blocks = spec.block_ids()
    for child in range(1, 9):
        for parent in range(1, 9):
            if blocks[parent] > blocks[child]:  # later -> earlier modality is forbidden
                assert not mask[child, parent]
            elif blocks[parent] < blocks[child]:
                assert mask[child, parent]
    assert mask[1, 2] and mask[2, 1]  # within a modality, both directions are allowed by the rules


@pytest.mark.parametrize("field, value, match", [
    ("latent_dim", 0, r"latent_dim=0 must be an integer >= 1"),
    ("latent_dim", -2, r"latent_dim=-2"),
    ("eta_dim", -1, r"eta_dim=-1"),
    ("n_measurements", 0, r"n_measurements=0"),
    ("obs_dim", 2, r"obs_dim=2 is smaller than the mixing input"),
])
def test_bad_modality_dims(field, value, match):
    m = dataclasses.replace(ModalitySpec("a", 2, 1, 3, 7), **{field: value})
    with pytest.raises(ValueError, match=match):
        Spec(name="x", modalities=(m, ModalitySpec("b", 2, 1, 3, 8)))


@pytest.mark.parametrize("overrides, match", [
    (dict(shared_dim=-1), "shared_dim=-1"),
    (dict(shared_dim=5), "obs_dim=7 is smaller"),
    (dict(mechanism="quadratic"), "mechanism='quadratic'"),
    (dict(noise="cauchy"), "noise='cauchy'"),
    (dict(mixing_depth=0), "mixing_depth=0"),
    (dict(n_cross_edges=0), r"n_cross_edges=0 must be an integer in \[1, 4\]"),
    (dict(n_cross_edges=5), "n_cross_edges=5"),
    (dict(noise_scale=0.0), "noise_scale"),
    (dict(edge_prob=1.5), "edge_prob"),
    (dict(max_condition=0.5), "max_condition"),
])
def test_bad_spec_fields(overrides, match):
    with pytest.raises(ValueError, match=match):
        get_spec("numerical_case1", **overrides)


def test_explicit_adjacency_validation():
    base = get_spec("numerical_case1")  # latents m1: 0, 1; m2: 2, 3
    good = np.zeros((4, 4), int)
    good[1, 0] = good[2, 1] = good[3, 2] = 1
    spec = base.replace(adjacency=good)
    assert spec.resolved_n_cross_edges == 1
    cyclic = good.copy()
    cyclic[0, 1] = 1  # 0 -> 1 -> 0 inside m1
    with pytest.raises(ValueError, match="adjacency contains a directed cycle"):
        base.replace(adjacency=cyclic)
    backwards = good.copy()
    backwards[0, 2] = 1  # m2 -> m1 violates modality order
    with pytest.raises(ValueError, match="adjacency has a forbidden edge 2 -> 0"):
        base.replace(adjacency=backwards)
    with pytest.raises(ValueError, match=r"adjacency has shape \(3, 3\), expected \(4, 4\)"):
        base.replace(adjacency=np.zeros((3, 3), int))
    with pytest.raises(ValueError, match="only 0 and 1"):
        base.replace(adjacency=good * 2)
    with pytest.raises(ValueError, match="n_cross_edges=3 disagrees"):
        base.replace(adjacency=good, n_cross_edges=3)


def test_json_roundtrip_and_hashable():
    for name in synthetic.PRESETS:
        spec = get_spec(name)
        again = Spec.from_json(spec.to_json())
        assert again == spec and hash(again) == hash(spec)
    with pytest.raises(ValueError, match="unknown field"):
        Spec.from_dict({**get_spec("numerical_case1").to_dict(), "colour": 1})


def test_topological_order_and_cycle_detection():
    adj = np.array([[0, 0, 1], [1, 0, 0], [0, 0, 0]])  # 2 -> 0 -> 1
    order = topological_order(adj)
    pos = {int(v): i for i, v in enumerate(order)}
    assert pos[2] < pos[0] < pos[1]
    assert not is_acyclic(np.array([[0, 1], [1, 0]]))
