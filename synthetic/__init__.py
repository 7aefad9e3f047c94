"""Synthetic multimodal, multi-measurement causal generative processes (see synthetic/README.md)."""

from synthetic.presets import NUMERICAL_PRESETS, PRESETS, get_spec
from synthetic.process import Process, Sample, load_process, make_process
from synthetic.spec import IDENTITIES, ModalitySpec, Spec

__all__ = ["IDENTITIES", "NUMERICAL_PRESETS", "PRESETS", "ModalitySpec", "Process", "Sample", "Spec", "get_spec", "load_process", "make_process"]
