"""PersonaX Level I: pairwise independence tests of LLM-inferred traits against features.

Run as `python -m crl_jax.level1 --data=FILE --out=DIR ...` (see docs/LEVEL1.md).
"""

from crl_jax.level1.citests import ALL_TESTS, TESTS, PairResult, discretise_trait, encode_discrete, run_pair_test
from crl_jax.level1.hsic import HSICResult, hsic_gamma_test, hsic_permutation_test
from crl_jax.level1.outputs import write_outputs
from crl_jax.level1.runner import Level1Result, run_level1, summarise

__all__ = [
    "ALL_TESTS", "TESTS", "PairResult", "discretise_trait", "encode_discrete", "run_pair_test",
    "HSICResult", "hsic_gamma_test", "hsic_permutation_test", "write_outputs", "Level1Result",
    "run_level1", "summarise",
]
