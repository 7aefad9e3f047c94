"""Calibration of the contrastive baselines on ``content_style`` (von Kuegelgen et al. 2021).

    python -m crl_jax.sweep --config=configs/sweeps/calibration.py --workdir=/tmp/sweep_cal

Independent latents: content s (5 dims) shared by two views, a 5-dim style per view (view 2's
style = view 1's + unit noise), each view an invertible 3-layer MLP of (content, style).
Contrastive learning should block-identify the content: R^2 of the true content from the
estimated shared block near 1 (``r2_shared``) and little style in it
(``r2_view1_from_shared``, ``r2_view2_from_shared`` near 0). Methods: ``mcl``,
``multiview`` (the same pairs here: one measurement per view), and the ``oracle``,
``random_encoder`` and ``pca`` controls; 60000 steps: at 20000 steps the InfoNCE loss is
still falling steeply (1.03; 0.04 at 60000), see docs/RESULTS.md section 2.
``:smoke``: mcl and oracle with the smoke training config.
"""
from __future__ import annotations

from configs.sweeps import common


def get_config(arg: str | None = None):
    flags, preset = common.parse(arg, "calibration")
    if preset not in (None, "content_style"):
        raise ValueError("configs/sweeps/calibration.py runs on content_style only")
    smoke = "smoke" in flags
    base = common.base_config("content_style", smoke)
    if not smoke:
        base.train.steps = 60000
        base.train.checkpoint_every = 10000
    names = ("mcl", "oracle") if smoke else ("mcl", "multiview", "oracle", "random_encoder",
                                             "pca")
    return common.sweep_config("calibration", base, product=[("model.name", names)])
