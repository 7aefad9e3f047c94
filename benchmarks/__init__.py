"""Benchmarks of crl_jax, one script per question; run from the repository root:

    python -m benchmarks.step        # how fast is the step, and how does it grow?
    python -m benchmarks.loop        # the training loop: seeds, steps per call, products library
    python -m benchmarks.profiling   # where the step's time goes, what holds its memory
    python -m benchmarks.metrics     # how long the identifiability metrics take
    python -m benchmarks.plot        # the figures of docs/PERFORMANCE.md from results/
    bash benchmarks/gpu_suite.sh     # the GPU figures in one command

``benchmarks.harness`` is what they share. docs/PERFORMANCE.md gives the commands behind every
shipped result in ``benchmarks/results``.
"""
