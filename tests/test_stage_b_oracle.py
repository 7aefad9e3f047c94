"""crl_jax.stage_b_oracle: stage B started at the true latents."""
from __future__ import annotations

import numpy as np
import pytest

from configs import synthetic as synthetic_config
from crl_jax import stage_b_oracle as oracle


def test_true_order_sorts_each_block_topologically():
    adj = np.zeros((5, 5), int)
    adj[0, 1] = 1          # 1 -> 0 inside block [0, 1, 2]
    adj[1, 2] = 1          # 2 -> 1
    adj[3, 4] = 1          # 4 -> 3 inside block [3, 4]
    perm_matrix = oracle.true_order(adj, [slice(0, 3), slice(3, 5)])
    perm = np.argmax(perm_matrix, axis=0)          # column k holds latent perm[k]
    assert perm.tolist() == [2, 1, 0, 4, 3]
    np.testing.assert_array_equal(perm_matrix.sum(0), 1)
    np.testing.assert_array_equal(perm_matrix.sum(1), 1)


@pytest.mark.slow
def test_frozen_flows_keep_the_truth_and_the_prior_cannot_beat_the_true_density():
    config = synthetic_config.get_config("smoke")
    config.stage_b.steps = 40
    lines = []
    out = oracle.run(config, [0.0, 0.3], freeze_flow=True, log=lines.append)
    assert len(out["runs"]) == 2 and any("true-model validation NLL" in x for x in lines)
    for run in out["runs"]:
        assert run["mcc"] > 0.999                    # the flows stayed at the identity
        # cross-entropy >= entropy, up to the validation sample's noise
        assert run["val_nll"] > out["true_nll"] - 0.05, (run["val_nll"], out["true_nll"])
    # the true density is that of the standardised latents: about D/2 log(2 pi e) for
    # unit-variance roots, lower for children explained by their parents
    assert 0.0 < out["true_nll"] < 4 * 0.5 * np.log(2 * np.pi * np.e)


def test_bad_lambdas_are_a_one_line_usage_error(capsys):
    code = oracle.main(["stage_b_oracle", "--config=configs/synthetic.py:smoke", "--lambdas=a,b"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--lambdas" in err[0]


def test_a_process_without_a_known_density_is_refused_before_training():
    import pytest
    config = synthetic_config.get_config("smoke")
    config.data.noise = "laplace"
    lines = []
    with pytest.raises(ValueError, match="data.noise='laplace'"):
        oracle.run(config, [0.0], log=lines.append)
    assert not any(line.startswith("step") for line in lines)   # nothing trained
