"""Which latents the cross-modal (or total) sparsity can identify: crl_jax.metrics.identifiability."""
import numpy as np
import pytest

from crl_jax.metrics import identifiability as ident

# Two blocks of two latents: z0 <- z1 within block 0, z0 -> z2 across (numerical_case1's graph).
CASE1 = np.array([[0, 1, 0, 0],
                  [0, 0, 0, 0],
                  [1, 0, 0, 0],
                  [0, 0, 0, 0]])
BLOCKS = np.array([0, 0, 1, 1])
CROSS = BLOCKS[None, :] < BLOCKS[:, None]                    # earlier -> later block
ALL = (BLOCKS[None, :] <= BLOCKS[:, None]) & ~np.eye(4, dtype=bool)


def test_cross_sparsity_pins_the_latents_with_a_cross_child_and_not_the_second_block():
    # z0 has the cross child z2, which does not have z1 as a parent: remixing z0 with z1 would
    # add the cross edge z1 -> z2. z1 (root, child z0 within): its only partner z0 is its
    # descendant. Block 1 has no cross children: z2 + g(z3) and z3 + g(z2) only add
    # within-block edges, which the cross penalty does not count.
    assert ident.remix_partners(CASE1, BLOCKS, CROSS) == [[], [], [3], [2]]
    np.testing.assert_array_equal(ident.sparsity_identified(CASE1, BLOCKS, CROSS),
                                  [True, True, False, False])


def test_penalising_within_block_edges_too_pins_every_latent_of_case1():
    np.testing.assert_array_equal(ident.sparsity_identified(CASE1, BLOCKS, ALL), [True] * 4)


def test_a_leaf_stays_remixable_with_its_own_parents_under_any_penalty():
    # z2 <- z0, z2 <- z1 in one block, no children: z2 + g(z0, z1) has the same parents.
    adj = np.zeros((3, 3), int)
    adj[2, 0] = adj[2, 1] = 1
    blocks = np.zeros(3, int)
    every = ~np.eye(3, dtype=bool)
    assert ident.remix_partners(adj, blocks, every) == [[], [], [0, 1]]


def test_a_partner_must_not_be_a_descendant_and_must_parent_every_penalised_child():
    # chain z0 -> z1 -> z2 in block 0, z0 -> z3 and z1 -> z3 across
    adj = np.zeros((4, 4), int)
    adj[1, 0] = adj[2, 1] = adj[3, 0] = adj[3, 1] = 1
    blocks = np.array([0, 0, 0, 1])
    cross = blocks[None, :] < blocks[:, None]
    partners = ident.remix_partners(adj, blocks, cross)
    assert partners[0] == []          # z1, z2 are its descendants
    assert partners[1] == [0]         # z3 already has z0 as a parent; z2 is a descendant
    assert partners[2] == [0, 1]      # leaf of the block, no cross children
    assert partners[3] == []          # alone in its block


def test_the_numerical_case2_default_graph_leaves_two_of_six_latents_identifiable():
    jax = pytest.importorskip("jax")
    import synthetic
    spec = synthetic.get_spec("numerical_case2")
    process = synthetic.make_process(jax.random.PRNGKey(0), spec)
    cross = spec.cross_edges_mask()
    np.testing.assert_array_equal(
        ident.sparsity_identified(process.adjacency, spec.block_ids(), cross),
        [True, False, True, False, False, False])
    every = spec.allowed_edges_mask()
    np.testing.assert_array_equal(
        ident.sparsity_identified(process.adjacency, spec.block_ids(), every),
        [True, True, True, True, True, False])


@pytest.mark.parametrize("kwargs, field", [
    (dict(adjacency=np.zeros((3, 2)), block_ids=np.zeros(3), penalised=np.ones((3, 3), bool)),
     "adjacency"),
    (dict(adjacency=np.zeros((3, 3)), block_ids=np.zeros(2), penalised=np.ones((3, 3), bool)),
     "block_ids"),
    (dict(adjacency=np.eye(3), block_ids=np.zeros(3), penalised=np.ones((3, 3), bool)),
     "adjacency"),
])
def test_bad_input_names_the_argument(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ident.remix_partners(**kwargs)
