"""Fields shared by every crl_jax training config (not a config file on its own).

Every config file's ``get_config`` starts from :func:`base_config` and edits fields, so all
configs have the same field set and ``--config.field=value`` works the same everywhere.
"""
from __future__ import annotations

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    config.data = ml_collections.ConfigDict()
    config.data.source = "synthetic"           # "synthetic" or "personax" (a local table)
    config.data.preset = "numerical_case1"     # a name in synthetic.PRESETS
    config.data.n_measurements = 3             # K per modality (numerical presets)
    config.data.shared_dim = 0                 # dims of the latent shared by all modalities
    config.data.generator_seed = 0             # key of the generative process (graph, maps)
    config.data.data_dir = ""                  # image files (variant_mnist); "" = env/tfds
    config.data.image_size = 28                # 28 or 14 (variant_mnist)
    config.data.identity = ""                  # variant_mnist images: "" = the preset's (fixed);
                                               # or per_measurement / per_sample / fixed
    config.data.train_size = 0                 # 0: fresh samples every step; N: fixed set
    config.data.eval_fit_size = 5000           # held-out samples to fit R^2 regressions
    config.data.val_size = 2000                # held-out: R^2 hyper-parameters, MCC matching
    config.data.test_size = 5000               # held-out: reported numbers
    config.data.noise = ""                     # "" = the preset's; or gaussian / laplace / uniform
    config.data.n_cross_edges = -1             # -1 = the preset's graph; N: N cross-modal edges

    config.model = ml_collections.ConfigDict()
    config.model.name = "personax"             # ours: two stages (docs/MODEL.md); see methods
    config.model.encoder = "mlp"               # "mlp" or "conv" (images)
    config.model.hidden = (128, 128)
    config.model.fusion = "poe"                # "poe" or "mean" over the K measurements
    config.model.prior = "causal"              # "causal" or "isotropic"
    config.model.prior_hidden = 16
    config.model.flow_units = 0                # >0: monotone flow on each noise variable
    config.model.latent_dims = ()              # () = the true block sizes of the preset
    config.model.eta_dim = -1                  # -1 = the true eta size of the preset
    config.model.temperature = 1.0             # contrastive methods: InfoNCE temperature
    config.model.learn_temperature = False     # contrastive methods: learn it instead
    config.model.similarity = "l2"             # contrastive methods: "l2" or "cosine"

    # personax, stage B: per-block flows under the causal prior, sparsity on the cross-modal
    # dependence S (crl_jax/methods/personax.py); stage A is the multiview objective trained
    # for train.steps with the train.* settings.
    config.stage_b = ml_collections.ConfigDict()
    config.stage_b.steps = 3000                # per phase (orders, then sparsity)
    config.stage_b.learning_rate = 3e-3        # the prior fits slowly at 1e-3 (MODEL.md 2a)
    config.stage_b.warmup_steps = 100
    config.stage_b.grad_clip = 1.0             # per replica
    config.stage_b.flow_layers = (1, 4)        # affine couplings per block flow: candidates, chosen per block on validation (MODEL.md 2a)
    config.stage_b.flow_hidden = 32
    config.stage_b.prior_hidden = 16           # the causal prior's noise models
    config.stage_b.flow_units = 0
    config.stage_b.prior_init = 3.0            # initial weight of every allowed edge of the prior (MODEL.md 2a)
    config.stage_b.lambdas = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)   # the sparsity path
    config.stage_b.restarts = 1                # initialisations per order candidate and per lambda
    config.stage_b.order_lambda = 0.3          # lambda of the within-block order search
    config.stage_b.max_orders = 24             # candidate orders per block at most
    config.stage_b.nll_margin = 0.03           # nats per latent dim (choose_lambda)
    config.stage_b.penalty_rows = 128          # rows of the batch on which S is penalised
    config.stage_b.penalty = "log"             # each edge's penalty: "log" or "l1" (S) (MODEL.md 2a)
    config.stage_b.penalty_scale = 0.3         # "log": scale * log(1 + S / scale) (MODEL.md 2a)
    config.stage_b.within_weight = 0.2         # within-block edges' weight in the penalty (cross: 1)
    config.stage_b.anchor = 0.1                # squared drift from stage A's coordinates (MODEL.md 2a)

    config.loss = ml_collections.ConfigDict()
    config.loss.recon_std = 0.2                # std of the Gaussian likelihood (chosen on val MCC)
    config.loss.beta = 1.0
    config.loss.lambda_sparse = 1.0            # L1 on cross-modal edges (chosen on val MCC)
    config.loss.lambda_sparse_within = 0.0     # L1 on other edges (not in the paper)
    config.loss.sparsity = "dependence"        # L1 on the dependence S, or "weights" (|W|)
    config.loss.dependence_rows = 128          # rows of the batch on which S is computed
    config.loss.lambda_tie = 1.0

    config.train = ml_collections.ConfigDict()
    config.train.steps = 5000
    config.train.batch_size = 512              # global batch, per seed
    config.train.learning_rate = 1e-3
    config.train.warmup_steps = 200
    config.train.schedule = "cosine"           # "cosine" or "constant"
    config.train.grad_clip = 1.0
    config.train.seed = 0
    config.train.num_seeds = 3                 # replicas trained together (vmap)
    config.train.prefetch_steps = 8            # batches drawn per sampler call (same batches)
    config.train.microbatch_size = 0           # >0: accumulate gradients over chunks of this
                                               # size (small chunks avoid page faults on CPU)
    config.train.steps_per_call = -1           # steps per dispatch (one lax.scan); -1: the
    #                                            largest divisor of log_every up to 10; 1: one
    #                                            step per call (docs/PERFORMANCE.md)
    config.train.log_every = 100
    config.train.checkpoint_every = 1000
    config.train.keep_checkpoints = 2
    config.train.progress = True               # tqdm progress bar
    config.train.divergence_factor = 100.0     # stop when the loss exceeds this times
    #                                            max(|first-step loss|, 1); 0: no such check

    config.eval = ml_collections.ConfigDict()
    config.eval.graph_threshold = 0.1          # |W| > threshold is an edge
    config.eval.shd_reversal_cost = 1          # a reversed edge counts 1 (or 2)
    config.eval.r2_kind = "kernel"             # "kernel" (Nystroem RBF) or "linear"
    config.eval.kernel_components = 1000
    config.eval.batch_size = 1000              # encoding batch
    config.eval.plots = True
    return config
