"""PersonaX on variant MNIST with 3 colour measurements (PersonaX's synthetic experiment); ``--config.data.identity=fixed|per_measurement|per_sample`` chooses which images are drawn (default fixed; synthetic/README.md).

    python -m crl_jax.main --config=configs/variant_mnist.py:small --config.data.data_dir=../shared/data --config.train.num_seeds=5 --workdir=/tmp/vmnist

Expected (measured with the same config through configs/sweeps/methods.py): MCC 0.553 ± 0.061, R² 0.782 / 0.730; the full 28x28 config (no `:small`) is not measured yet.
"""
from __future__ import annotations

import ml_collections

from configs import default
from configs.synthetic import apply_smoke


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    parts = [p for p in (arg or "").split(",") if p]
    unknown = set(parts) - {"smoke", "small"}
    if unknown:
        raise ValueError(f"unknown variant(s) {sorted(unknown)} of configs/variant_mnist.py; "
                         f"choose from ['small', 'smoke']")
    config = default.base_config()
    config.data.preset = "variant_mnist_3m"
    config.data.n_measurements = 3
    config.data.image_size = 28
    config.model.encoder = "conv"
    config.model.hidden = (256,)
    # One latent dimension per block beyond the two causal ones, chosen with
    # data.identity=per_sample: there the digit (and the fashion item) is the same random
    # image in every colour measurement, so its identity is shared by the measurements --
    # part of z_m by the model's own definitions, not measurement-specific eta. With exactly
    # 2 dims the identity competes with the causal latents. Validation MCC
    # (:small, 3000 steps): (2, 2) 0.49, (3, 3) 0.54-0.56, (6, 6) 0.64-0.65, but more
    # dimensions also give the MCC matching more candidates: the untrained-encoder control
    # rises from 0.37 (3, 3) to 0.55 (6, 6) on validation, so most of that gain is the
    # metric's, not the model's (docs/RESULTS.md section 5). (3, 3) is the smallest change
    # that helps. MCC, R^2 and the graph are scored on the matched components. With the
    # default data.identity (fixed) nothing but z_m is shared; the block sizes have not been
    # re-chosen for that setting.
    config.model.latent_dims = (3, 3)
    config.loss.recon_std = 0.1
    config.train.batch_size = 128
    config.train.steps = 6000
    config.train.learning_rate = 5e-4
    config.data.eval_fit_size = 4000
    config.data.val_size = 2000
    config.data.test_size = 4000
    config.eval.batch_size = 500
    if "small" in parts:  # CPU-friendly: 14x14 images, MLP encoders (vmapped convs are slow
        config.data.image_size = 14  # on XLA:CPU, see docs/PERFORMANCE.md)
        config.model.encoder = "mlp"
        config.train.steps = 3000
    if "smoke" in parts:
        apply_smoke(config)
        config.data.image_size = 14
        config.model.hidden = (32,)
        config.train.batch_size = 16
    return config
