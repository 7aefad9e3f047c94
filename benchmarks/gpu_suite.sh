#!/usr/bin/env bash
# The GPU figures of docs/PERFORMANCE.md in one command (a lent GPU's time is short, so the
# sections run in priority order, each in its own process under its own time limit, and
# each writes its JSON as soon as it ends: a section that runs out of time loses only itself).
#
#   bash benchmarks/gpu_suite.sh OUT_DIR [DATA_DIR [SECTIONS]]      # from the repository root
#
# OUT_DIR receives suite.log (everything printed, appended to), one JSON per section
# (benchmarks.step, or benchmarks.loop for seeds) and main.log (the README's main command,
# timed). DATA_DIR: folder with mnist/ and
# fashion-mnist/ (default ../shared/data). SECTIONS: comma-separated subset of
# throughput,images,seeds,growth,parts,main (the default), image_chunks (the image step
# at batch 1024 and 4096 in 1 and 4 chunks: is the H200's 11.6x slowdown from 1024 to 4096
# the size of one pass?) and main_single (the main command with one step per call,
# --config.train.steps_per_call=1, beside main's scanned default of 10; main_single.log).
# PYTHON picks the interpreter
# (default python3); QUICK=1 shrinks every list (a dry run of the script, e.g. on CPU).
#
# Sizes: on an H200 every program compiles in 7-10 s (numerical_case2's step) or 14-22 s (the
# image model's), so compiles, not steps, set the time: throughput took 104 s, images 112 s,
# main 52 s there. The limits below add to ~12 min; under a 10-minute limit per command run
# it as two calls: SECTIONS=throughput,images,main (limits 5.5 min) then seeds,growth,parts.
set -u
OUT=${1:?usage: benchmarks/gpu_suite.sh OUT_DIR [DATA_DIR [SECTIONS]]}
DATA=${2:-../shared/data}
DEFAULT=throughput,images,seeds,growth,parts,main
ALL=$DEFAULT,image_chunks,main_single
WANT=",${3:-$DEFAULT},"
for name in ${WANT//,/ }; do
  case ",$ALL," in *",$name,"*) ;; *)
    echo "gpu_suite.sh: unknown section '$name' in SECTIONS; choose from $ALL" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
LOG="$OUT/suite.log"
STEP="-m benchmarks.step --data_dir=$DATA --microbatch=off"

if [ "${QUICK:-0}" = 1 ]; then
  NUM_B=256; IMG_B=64; SEEDS=1,2; SEED_B=16; SEED_STEPS=60; SEED_LOG=20; KS=1,2; MS=2,3
  DS=4,8; ROUNDS=1; T=1; PARTS="--parts_batch=256"; CHUNK_B=8; CHUNKS=1,2
else
  PARTS="--parts_batch=4096"; CHUNK_B=1024,4096; CHUNKS=1,4
  NUM_B=256,1024,4096,16384,65536; IMG_B=256,1024,4096; SEEDS=1,2,4,8,16; SEED_B=512
  SEED_STEPS=2000; SEED_LOG=200; KS=1,2,4,8; MS=2,4,8; DS=4,16,64; ROUNDS=5; T=1
fi

run_section() {  # run_section NAME SECONDS MODULE-ARGS...: one process, its JSON in OUT
  local name=$1 limit=$2; shift 2
  case "$WANT" in *",$name,"*) ;; *) return 0 ;; esac
  echo "=== $name (limit ${limit}s) $(date -u +%T)" | tee -a "$LOG"
  local t0=$SECONDS
  timeout --kill-after=5 "$limit" $PY "$@" --out="$OUT/${name}_gpu.json" >>"$LOG" 2>&1
  echo "=== $name: exit $? after $((SECONDS - t0)) s" | tee -a "$LOG"
}
section() {  # section NAME SECONDS ARGS...: a benchmarks.step run
  local name=$1 limit=$2; shift 2
  run_section "$name" "$limit" $STEP "$@"
}

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm \
    --format=csv 2>&1
  $PY -c "import jax, flax, optax, chex, sys; print(sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'chex', chex.__version__); print(jax.devices())" 2>&1
} >>"$LOG"

# Throughput first: it is also the smoke test. If it fails there is no point in going on.
section throughput 120 --sections=throughput --models=numerical_case2 --batch_sizes=$NUM_B \
  --rounds=$ROUNDS --steps=$T
case "$WANT" in *",throughput,"*)
  grep -q "numerical_case2 B=" "$LOG" || { echo "throughput failed; stopping" | tee -a "$LOG"; exit 1; } ;;
esac
section images 130 --sections=throughput --models=variant_mnist_3m --batch_sizes=$IMG_B \
  --rounds=$ROUNDS --steps=$T
# seeds: the real training loop (10 steps per call), one compile per seed count
run_section seeds 180 -m benchmarks.loop seeds --batch=$SEED_B --seeds_list=$SEEDS \
  --per_call_list=10 --steps=$SEED_STEPS --log_every=$SEED_LOG --data_dir=$DATA
section growth 130 --sections=growth --k_list=$KS --m_list=$MS --d_list=$DS --rounds=3 --steps=$T
section parts 90 --sections=parts --models=numerical_case2 $PARTS --rounds=3 --steps=$T
section image_chunks 150 --sections=chunks --chunk_series=images --chunk_image_batches=$CHUNK_B \
  --chunk_counts=$CHUNKS --rounds=3 --steps=$T

main_run() {  # main_run NAME FLAGS...: the README's main command, timed, into OUT/NAME.log
  local name=$1; shift
  case "$WANT" in *",$name,"*) ;; *) return 0 ;; esac
  local steps_flag=""
  [ "${QUICK:-0}" = 1 ] && steps_flag="--config.train.steps=20 --config.train.warmup_steps=5"
  echo "=== $name (limit 80s) $(date -u +%T)" | tee -a "$LOG"
  local t0=$SECONDS
  timeout --kill-after=5 80 $PY -m crl_jax.main --config=configs/synthetic.py \
    --workdir="$(mktemp -d)/crl_run" $steps_flag "$@" >"$OUT/$name.log" 2>&1
  echo "=== $name: exit $? after $((SECONDS - t0)) s" | tee -a "$LOG"
  tail -5 "$OUT/$name.log"
}
main_run main
main_run main_single --config.train.steps_per_call=1
grep -E "steps/s|x one seed|exponent|compiled in" "$LOG" | tail -60
