#!/usr/bin/env bash
# The training loop with XLA:CPU's products on YNNPACK (XLA's default) against Eigen, pair by
# pair (crl_jax/cpu_dots.py picks one per run; docs/PERFORMANCE.md, *Which library runs the
# products*). Each case runs bench_steps_per_call.py once per library, back to back, 10 steps
# per call; one JSON per case and library in OUT_DIR (CONFIG_bBATCH_sSEEDS_LIBRARY.json).
#
#   bash benchmarks/bench_cpu_dots.sh benchmarks/results/cpu_dots [CASES]
#
# CASES: space-separated config:batch:seeds:steps:log_every (default: the grid in the docs).
set -euo pipefail
out=${1:?usage: bench_cpu_dots.sh OUT_DIR [CASES]}
cases=${2:-"synthetic:16:1,8:3000:200 synthetic:64:1,8:2000:200 synthetic:128:3:1000:100
synthetic:256:1,3,8:600:100 synthetic:512:1,3,8:600:100 synthetic:1024:1,3:400:50
synthetic:4096:1:300:50 variant_mnist_small:128:3:400:50 variant_mnist:128:3:60:10"}
python=${PYTHON:-python}
mkdir -p "$out"
for case in $cases; do
  IFS=: read -r config batch seeds steps log_every <<<"$case"
  name=${config/_small/:small}   # variant_mnist_small -> the config variant_mnist:small
  for lib in ynnpack eigen; do
    "$python" benchmarks/bench_steps_per_call.py --config="$name" --batch="$batch" \
      --seeds_list="$seeds" --per_call_list=10 --steps="$steps" --log_every="$log_every" \
      --cpu_dots="$lib" --out="$out/${config}_b${batch}_s${seeds//,/-}_${lib}.json" \
      | grep "ms/step"
  done
done
