"""``personax`` (ours): a two-stage estimator of the latent blocks, their components and the
causal graph.

Stage A (blocks): the ``multiview`` objective over all K measurements (InfoNCE between the
measurements of a modality on ``(s, z_m)``, between modalities on ``s``, and the ``mcl``
term for a modality with one measurement). Each block of its representation ``r`` is an
invertible function of the true block (block identifiability), but not yet its components.

Stage B (components and graph), on the frozen stage-A block means, standardised per
dimension: a per-block invertible map ``zhat_m = phi_m(r_m)`` (:class:`~crl_jax.models.flows.LatentFlow`,
identity at the start, exact log-determinant) trained by maximum likelihood under the causal
prior of the VAE (:class:`~crl_jax.models.causal_prior.CausalPrior`):

    -log p(r) = -log p_causal(zhat) - sum_m log|det d phi_m / d r_m|,

plus ``lambda * sum_{allowed i, j} w_ij * pen(S_ij)``, where ``S_ij = E|d eps_i / d zhat_j| *
std(zhat_j)`` is the scale-free dependence of noise ``i`` on latent ``j``
(``causal_prior.dependence``), ``w_ij`` is 1 on cross-modal pairs and ``stage_b.within_weight``
on the others, and ``pen`` is ``stage_b.penalty`` (:func:`shaped_penalty`: the concave ``log``
by default, which prunes small dependences without shrinking the true edges as ``l1`` does).
The sparsity of the cross-modal graph is what the theory needs for component-wise
identifiability; penalising ``S`` rather than the adjacency weights ``W`` means a small
``W`` cannot be undone by large weights after it. The small within-block weight picks, among
the equally likely remixes of a latent with its block (docs/MODEL.md 2a), the one with the
fewest within-block edges.
The prior starts with every allowed edge at ``stage_b.prior_init``: at the VAE's small value
its noise models stay nearly linear, the prior under-fits and the flows drift to suit it.
The graph is read from ``S`` on the validation sample (``S_ij > eval.graph_threshold`` is
the edge ``j -> i``).

The prior's latent order is fixed (edges only from earlier to later latents), so the order
of the latents *inside* each block is a choice: it decides which way a within-block edge
may point. Stage B therefore runs in two phases, both on one jitted, seed-vmapped step with
several replicas of the stage-B parameters per seed:

1. ``orders``: one replica per candidate within-block order and flow capacity (replica k
   uses the k-th permutation of every block; the capacities are the coupling-layer counts of
   ``stage_b.flow_layers``; all replicas at ``stage_b.order_lambda``). Each block takes the
   smallest capacity whose best replica's validation loss (that block's share of the
   negative log-likelihood plus its share of the penalty) is within ``stage_b.nll_margin``
   nats per latent dimension of the best replica of any capacity, then that capacity's best
   order (:func:`choose_block_flows`).
2. ``sparsity``: one replica per ``lambda`` of ``stage_b.lambdas``, all with the chosen
   orders and capacities. The reported replica is the one of the largest ``lambda`` whose
   validation negative log-likelihood stays within ``stage_b.nll_margin`` nats per latent
   dimension of the smallest ``lambda``'s (:func:`choose_lambda`).

With ``stage_b.restarts`` > 1 every replica of both phases is trained that many times from
different initialisations: the order phase takes the best over all of them, and the
sparsity phase scores each lambda by its restart of lowest validation training loss
(:func:`best_restarts`) before the lambda rule.

Every choice uses only the validation sample's observations (never its latents, never the
test sample).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from crl_jax.methods.base import Method
from crl_jax.methods.contrastive import ContrastiveMethod, build_contrastive_method
from crl_jax.models import causal_prior as cp
from crl_jax.models import flows

_LOG_2PI = float(np.log(2.0 * np.pi))
FROZEN = ("block", "standardise", "orders", "lambdas", "capacity")


# ---------------------------------------------------------------------- orders
def block_permutations(size: int, cap: int, seed: int = 0) -> list[tuple[int, ...]]:
    """Candidate orders of one block: all ``size!`` permutations (identity first), or, when
    there are more than ``cap``, the identity plus ``cap - 1`` distinct random ones."""
    if math.factorial(size) <= cap:
        return list(itertools.permutations(range(size)))
    rng = np.random.default_rng(seed + size)
    perms = [tuple(range(size))]
    while len(perms) < cap:
        p = tuple(int(v) for v in rng.permutation(size))
        if p not in perms:
            perms.append(p)
    return perms


def order_candidates(block_sizes: Sequence[int], cap: int) -> np.ndarray:
    """Permutation matrices of the order-search replicas, (P, D, D) float32.

    Replica ``k`` orders block ``m`` by its ``k mod n_m``-th candidate (``n_m`` candidates of
    that block): P = the largest ``n_m``, and every candidate of every block is tried once
    (blocks are scored separately, so they need not be tried in every combination).
    ``r @ matrix`` reorders the coordinates: column ``i`` of the result is ``r[:, perm[i]]``.
    """
    per_block = [block_permutations(int(d), cap) for d in block_sizes]
    n = max(len(p) for p in per_block)
    dim = int(sum(block_sizes))
    mats = np.zeros((n, dim, dim), np.float32)
    for k in range(n):
        start = 0
        for perms, d in zip(per_block, block_sizes):
            perm = perms[k % len(perms)]
            for i, src in enumerate(perm):
                mats[k, start + src, start + i] = 1.0
            start += d
    return mats


def block_masks(block_sizes: Sequence[int]) -> np.ndarray:
    """(n_blocks, D) 0/1: the latent dimensions of each block."""
    dim, start = int(sum(block_sizes)), 0
    out = np.zeros((len(block_sizes), dim), np.float32)
    for b, d in enumerate(block_sizes):
        out[b, start:start + d] = 1.0
        start += d
    return out


def layer_candidates(value) -> tuple[int, ...]:
    """``stage_b.flow_layers`` as a sorted tuple of distinct coupling-layer counts."""
    values = (value,) if isinstance(value, (int, np.integer)) else tuple(value)
    return tuple(sorted({int(v) for v in values}))


# ---------------------------------------------------------------------- selection rules
def choose_lambda(nll_path: jnp.ndarray, margin: float) -> jnp.ndarray:
    """Index of the largest lambda (the path is in increasing lambda) whose validation NLL is
    within ``margin`` of the first's. jit/vmap-able."""
    ok = nll_path - nll_path[0] <= margin
    idx = jnp.arange(nll_path.shape[0])
    return jnp.max(jnp.where(ok, idx, 0))


def best_restarts(objective: jnp.ndarray, restarts: int) -> jnp.ndarray:
    """Per lambda, the index (into the replicas, lambda-major: replica ``l * restarts + k``
    is restart ``k`` of lambda ``l``) of the restart with the lowest validation objective.
    jit/vmap-able."""
    by_lambda = jnp.reshape(objective, (-1, int(restarts)))
    return jnp.arange(by_lambda.shape[0]) * int(restarts) + jnp.argmin(by_lambda, axis=1)


def shaped_penalty(dep: jnp.ndarray, shape: str, scale: float) -> jnp.ndarray:
    """Elementwise penalty of the dependences ``S`` (>= 0): ``l1`` is ``S`` itself; ``log`` is
    ``scale * log(1 + S / scale)``, the same slope (1) at ``S = 0`` but a slope
    ``scale / (scale + S)`` that falls as an edge grows (a concave penalty, the limit of
    iteratively reweighted L1: Candes, Wakin and Boyd 2008), so small spurious dependences are
    pushed to zero while strong true edges are barely shrunk."""
    if shape == "l1":
        return dep
    if shape == "log":
        return scale * jnp.log1p(dep / scale)
    raise ValueError(f"stage_b.penalty must be 'l1' or 'log', got {shape!r}")


def per_replica_clip(max_norm: float) -> optax.GradientTransformation:
    """Clip each replica's gradient (leading axis of every leaf) to ``max_norm`` separately:
    the replicas are independent models, and one global norm would couple their steps."""
    def update(updates, state, params=None):
        del params
        leaves = jax.tree.leaves(updates)
        sq = sum(jnp.sum(jnp.reshape(g, (g.shape[0], -1)) ** 2, axis=1) for g in leaves)
        scale = jnp.minimum(1.0, max_norm / (jnp.sqrt(sq) + 1e-12))
        return jax.tree.map(lambda g: g * scale.reshape((-1,) + (1,) * (g.ndim - 1)),
                            updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


# ---------------------------------------------------------------------- stage B
@dataclasses.dataclass(frozen=True)
class ComponentStage(Method):
    """Stage B of ``personax`` with R replicas per seed (one jitted step trains them all).

    Parameters: ``block`` (the frozen stage-A encoders), ``standardise`` (per-dimension mean
    and std of the stage-A representation), ``orders`` (R, D, D) permutation matrices,
    ``lambdas`` (R,) penalty weights, ``capacity`` (R, n_blocks) active coupling layers of
    each block's flow and ``replicas`` (the R flows and priors). Only
    ``replicas`` is trained (:meth:`optimizer` leaves the rest unchanged).
    """

    block: Any = None
    flow: Any = None
    prior: Any = None
    n_replicas: int = 1
    penalty_rows: int = 128
    anchor: float = 0.0
    within_weight: float = 0.0
    penalty: str = "l1"
    penalty_scale: float = 0.1
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    grad_clip: float = 1.0

    @property
    def cross_mask(self) -> np.ndarray:
        return self.layout.cross_mask().astype(np.float32)

    @property
    def allowed_mask(self) -> np.ndarray:
        return self.layout.allowed_mask().astype(np.float32)

    @property
    def penalty_mask(self) -> np.ndarray:
        """Weight of each edge's S in the sparsity penalty: 1 on cross-modal edges,
        ``within_weight`` on the other allowed ones (within a block, from ``s``)."""
        cross = self.cross_mask
        return cross + float(self.within_weight) * (self.allowed_mask - cross)

    @property
    def block_sizes(self) -> tuple[int, ...]:
        return tuple(sl.stop - sl.start for sl in self.layout.block_slices.values())

    # --- parameters
    def init_replica(self, key):
        d = self.layout.latent_dim
        k_flow, k_prior = jax.random.split(key)
        z = jnp.zeros((2, d), jnp.float32)
        return {"flow": self.flow.init(k_flow, z)["params"],
                "prior": self.prior.init(k_prior, z)["params"]}

    def init(self, key, xs):
        d = self.layout.latent_dim
        k_block, k_rep = jax.random.split(key)
        return {"block": self.block.init(k_block, xs),
                "standardise": {"mean": jnp.zeros(d), "std": jnp.ones(d)},
                "orders": jnp.broadcast_to(jnp.eye(d), (self.n_replicas, d, d)),
                "lambdas": jnp.zeros(self.n_replicas),
                "capacity": jnp.full((self.n_replicas, len(self.block_sizes)),
                                     float(self.flow.n_layers)),
                "replicas": jax.vmap(self.init_replica)(
                    jax.random.split(k_rep, self.n_replicas))}

    def optimizer(self, train_cfg) -> optax.GradientTransformation:
        """Adam on the replicas only (warm-up + cosine over ``train_cfg.steps``)."""
        steps = max(int(train_cfg.steps), 2)
        lr = float(self.learning_rate)
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, lr, max(min(int(self.warmup_steps), steps - 1), 1), steps, 0.05 * lr)
        train = optax.chain(per_replica_clip(float(self.grad_clip)), optax.adam(schedule))
        labels = lambda params: {k: jax.tree.map(
            lambda _: "frozen" if k in FROZEN else "train", v) for k, v in params.items()}
        return optax.multi_transform({"train": train, "frozen": optax.set_to_zero()}, labels)

    # --- the model
    def representation(self, params, xs) -> jnp.ndarray:
        """Standardised stage-A block means (n, D); no gradient reaches stage A."""
        r = self.block.encode(params["block"], xs)
        std = params["standardise"]
        return jax.lax.stop_gradient((r - std["mean"]) / std["std"])

    def replica_terms(self, replica, order, r, capacity=None):
        """Per-row, per-dimension NLL (n, D) and per-block flow log-det (n, n_blocks);
        ``capacity`` (n_blocks,): active coupling layers per block (default all)."""
        zhat, log_det = self.flow.apply({"params": replica["flow"]},
                                        r @ jax.lax.stop_gradient(order), capacity)
        eps, log_slope = self.prior.apply({"params": replica["prior"]}, zhat,
                                          method=self.prior.noise)
        return zhat, 0.5 * (eps**2 + _LOG_2PI) - log_slope, log_det

    def dependence(self, replica, zhat) -> jnp.ndarray:
        """S (D, D) of one replica on the rows of ``zhat``, on the allowed edges only."""
        s = self.prior.apply({"params": replica["prior"]}, zhat, method=self.prior.dependence)
        return s * self.allowed_mask

    def shaped(self, dep: jnp.ndarray) -> jnp.ndarray:
        """Each edge's weighted share of the sparsity penalty (``stage_b.penalty``)."""
        return shaped_penalty(dep, self.penalty, float(self.penalty_scale)) * self.penalty_mask

    @staticmethod
    def drift(zhat, r, order) -> jnp.ndarray:
        """Mean squared distance of ``zhat`` from stage A's (reordered) coordinates."""
        return jnp.mean(jnp.sum((zhat - r @ jax.lax.stop_gradient(order)) ** 2, -1))

    def replica_loss(self, replica, order, lam, r, capacity=None):
        zhat, nll_dims, log_det = self.replica_terms(replica, order, r, capacity)
        nll = jnp.mean(jnp.sum(nll_dims, -1) - jnp.sum(log_det, -1))
        penalty = jnp.sum(self.shaped(self.dependence(replica, zhat[:self.penalty_rows])))
        # stage_b.anchor: among maps of (nearly) equal likelihood, prefer the one nearest to
        # stage A's coordinates (the likelihood cannot tell a latent from it plus a function of
        # its within-block parents; docs/MODEL.md section 2a)
        loss = (nll + jax.lax.stop_gradient(lam) * penalty
                + self.anchor * self.drift(zhat, r, order))
        return loss, (nll, penalty)

    def loss(self, params, xs, key):
        del key
        r = self.representation(params, xs)
        losses, (nll, penalty) = jax.vmap(self.replica_loss, in_axes=(0, 0, 0, None, 0))(
            params["replicas"], params["orders"], params["lambdas"], r, params["capacity"])
        total = jnp.sum(losses)   # replicas are independent: each gets its own gradient
        # "cross_dependence": the penalised S (cross-modal, plus within_weight x the rest)
        return total, {"loss": jnp.mean(losses), "nll": jnp.mean(nll),
                       "cross_dependence": jnp.mean(penalty)}

    # --- validation scores (one seed)
    def scores(self, params, xs) -> dict:
        """Validation scores of every replica: ``nll`` (R,), ``penalty`` (R,), ``objective``
        (R,) (the training loss: NLL + lambda * penalty + anchor * drift), ``block_loss``
        (R, n_blocks) (each block's NLL share plus its share of the penalty
        at the replica's lambda) and ``dependence`` (R, D, D), all on the rows of ``xs``."""
        r = self.representation(params, xs)
        masks = jnp.asarray(block_masks(self.block_sizes))

        def one(replica, order, lam, capacity):
            zhat, nll_dims, log_det = self.replica_terms(replica, order, r, capacity)
            dep = self.dependence(replica, zhat[:2000])
            cross_in = jnp.sum(self.shaped(dep), axis=1)               # per child dim
            block_nll = jnp.mean(nll_dims, 0) @ masks.T - jnp.mean(log_det, 0)
            nll = jnp.mean(jnp.sum(nll_dims, -1) - jnp.sum(log_det, -1))
            return {"nll": nll,
                    "penalty": jnp.sum(cross_in),
                    "objective": (nll + lam * jnp.sum(cross_in)
                                  + self.anchor * self.drift(zhat, r, order)),
                    "block_loss": block_nll + lam * (cross_in @ masks.T),
                    "dependence": dep}

        return jax.vmap(one)(params["replicas"], params["orders"], params["lambdas"],
                             params["capacity"])


def combine_orders(orders: jnp.ndarray, block_loss: jnp.ndarray,
                   block_sizes: Sequence[int]) -> jnp.ndarray:
    """One seed: for every block the order of the replica with the lowest ``block_loss``,
    assembled into one (D, D) permutation matrix."""
    masks = jnp.asarray(block_masks(block_sizes))           # (n_blocks, D)
    best = jnp.argmin(block_loss, axis=0)                    # (n_blocks,)
    chosen = orders[best]                                    # (n_blocks, D, D)
    # rows and columns of a block's permutation both lie in the block
    return jnp.sum(chosen * masks[:, :, None] * masks[:, None, :], axis=0)


def choose_block_flows(orders: jnp.ndarray, capacity: jnp.ndarray, block_loss: jnp.ndarray,
                       block_sizes: Sequence[int], margin: float):
    """One seed: every block's flow capacity and within-block order from the order phase.

    ``orders`` (R, D, D), ``capacity`` (R, n_blocks) active coupling layers of each replica,
    ``block_loss`` (R, n_blocks) validation loss. Per block: the smallest capacity whose best
    replica's loss is within ``margin`` nats per latent dimension of the best replica of any
    capacity (a more flexible flow only where the held-out likelihood needs it), then that
    capacity's best order. Returns the (D, D) order matrix and the (n_blocks,) capacities."""
    sizes = jnp.asarray(block_sizes, block_loss.dtype)
    same = capacity[:, None, :] == capacity[None, :, :]                 # (R, R, n_blocks)
    level_best = jnp.min(jnp.where(same, block_loss[None], jnp.inf), axis=1)
    ok = level_best <= jnp.min(block_loss, axis=0) + margin * sizes
    chosen = jnp.min(jnp.where(ok, capacity, jnp.inf), axis=0)          # (n_blocks,)
    loss = jnp.where(capacity == chosen, block_loss, jnp.inf)
    return combine_orders(orders, loss, block_sizes), chosen


# ---------------------------------------------------------------------- the method
@dataclasses.dataclass(frozen=True)
class PersonaXMethod(Method):
    """The evaluation-facing ``personax`` method; training runs its stages
    (``crl_jax.staged``): :attr:`block` (stage A), then :meth:`component_stage` twice."""

    block: ContrastiveMethod = None
    flow: Any = None
    prior: Any = None
    stage_cfg: Any = None
    per_sample_loss: bool = False

    def component_stage(self, n_replicas: int) -> ComponentStage:
        c = self.stage_cfg
        return ComponentStage(
            name=f"{self.name}_stage_b", layout=self.layout, block=self.block, flow=self.flow,
            prior=self.prior, n_replicas=int(n_replicas), penalty_rows=int(c.penalty_rows),
            anchor=float(c.anchor), within_weight=float(c.within_weight),
            penalty=str(c.penalty), penalty_scale=float(c.penalty_scale),
            learning_rate=float(c.learning_rate), warmup_steps=int(c.warmup_steps),
            grad_clip=float(c.grad_clip))

    @property
    def block_sizes(self) -> tuple[int, ...]:
        return tuple(sl.stop - sl.start for sl in self.layout.block_slices.values())

    def order_candidates(self) -> np.ndarray:
        return order_candidates(self.block_sizes, int(self.stage_cfg.max_orders))

    @property
    def configured_lambdas(self) -> list[float]:
        """``stage_b.lambdas`` sorted, as written (the replicas hold float32 copies)."""
        return sorted(float(v) for v in self.stage_cfg.lambdas)

    @property
    def lambdas(self) -> np.ndarray:
        return np.asarray(self.configured_lambdas, np.float32)

    @property
    def restarts(self) -> int:
        """``stage_b.restarts``: independently initialised replicas per order candidate and
        per lambda (runs whose config predates the field had one)."""
        return int(self.stage_cfg.get("restarts", 1))

    @property
    def replica_lambdas(self) -> np.ndarray:
        """Lambda of every sparsity-phase replica, lambda-major (``restarts`` per lambda)."""
        return np.repeat(self.lambdas, self.restarts)

    @property
    def flow_layer_candidates(self) -> tuple[int, ...]:
        """``stage_b.flow_layers``: the coupling-layer counts the order phase tries (an int is
        one candidate)."""
        return layer_candidates(self.stage_cfg.flow_layers)

    def order_replicas(self) -> tuple[np.ndarray, np.ndarray]:
        """The order phase's replicas: permutation matrices (R, D, D) and capacities
        (R, n_blocks): every candidate of :meth:`order_candidates` at every flow capacity,
        ``restarts`` times (each block then takes its capacity and order by
        :func:`choose_block_flows`)."""
        cands = self.order_candidates()
        caps = np.asarray(self.flow_layer_candidates, np.float32)
        n, reps = len(cands), len(caps) * self.restarts
        orders = np.tile(cands, (reps, 1, 1))
        capacity = np.repeat(np.tile(caps, self.restarts), n)
        return orders, np.repeat(capacity[:, None], len(self.block_sizes), axis=1)

    # Trained by its stages; as a Method it is only evaluated.
    def init(self, key, xs):
        return self.component_stage(len(self.replica_lambdas)).init(key, xs)

    def loss(self, params, xs, key):
        return self.component_stage(len(self.replica_lambdas)).loss(params, xs, key)

    def select(self, params, xs):
        """Seed-stacked stage-B parameters -> the chosen replica of every seed (the rule of
        the module docstring), with its validation dependence ``S`` as the graph."""
        stage = self.component_stage(len(self.replica_lambdas))
        margin = float(self.stage_cfg.nll_margin) * self.layout.latent_dim
        restarts = self.restarts

        def one(p):
            s = stage.scores(p, xs)
            best = best_restarts(s["objective"], restarts)          # (n_lambdas,)
            path = s["nll"][best]
            idx = best[choose_lambda(path, margin)]
            pick = lambda tree: jax.tree.map(lambda a: a[idx], tree)
            return {"block": p["block"], "standardise": p["standardise"],
                    "order": p["orders"][idx], "capacity": p["capacity"][idx],
                    "lambda_index": idx // restarts,
                    "replica": pick(p["replicas"]), "dependence": s["dependence"][idx],
                    "val_nll_path": path,
                    "val_nll_restarts": jnp.reshape(s["nll"], (-1, restarts))}

        return jax.jit(jax.vmap(one))(params)

    def choices(self, params) -> dict:
        """Per seed: the chosen lambda, the validation NLL path over ``stage_b.lambdas`` (of
        each lambda's chosen restart), every restart's validation NLL (lambda x restart) and
        each block's chosen within-block order (latent indices of the stage-A block) and flow
        capacity (coupling layers)."""
        orders = np.asarray(params["order"])
        configured = self.configured_lambdas
        return {"lambdas": configured,
                "flow_layers": np.asarray(params["capacity"]).astype(int).tolist(),
                "lambda": [configured[int(i)] for i in np.asarray(params["lambda_index"])],
                "val_nll_path": np.asarray(params["val_nll_path"]).tolist(),
                "val_nll_restarts": np.asarray(params["val_nll_restarts"]).tolist(),
                "order": [np.argmax(o, axis=0).tolist() for o in orders]}

    def encode(self, params, xs, true_z=None):
        stage = self.component_stage(1)
        r = stage.representation(params, xs)
        zhat, _ = self.flow.apply({"params": params["replica"]["flow"]}, r @ params["order"],
                                  params["capacity"])
        return zhat

    def adjacency(self, params):
        return params["dependence"]


def build_personax(name: str, data_layout, config) -> PersonaXMethod:
    block = build_contrastive_method("multiview", data_layout, config)
    layout = block.layout
    c = config.stage_b
    mask = tuple(tuple(bool(v) for v in row) for row in layout.allowed_mask())
    sizes = tuple(sl.stop - sl.start for sl in layout.block_slices.values())
    flow = flows.LatentFlow(sizes, n_layers=max(layer_candidates(c.flow_layers)),
                            hidden=int(c.flow_hidden))
    prior = cp.CausalPrior(mask, hidden=int(c.prior_hidden), flow_units=int(c.flow_units),
                           adjacency_init=float(c.prior_init))
    return PersonaXMethod(name=name, layout=layout, block=block, flow=flow, prior=prior,
                          stage_cfg=c)
