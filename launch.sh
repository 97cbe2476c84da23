#!/usr/bin/env bash
# Entry for runs, tests and sweeps.  ./launch.sh help  lists the commands.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi

usage() {
  cat <<USAGE
usage: ./launch.sh COMMAND [ARGS...]
  test [pytest args]          the test suite (fast tests; add '-m slow' for the long ones)
  prepare NAME ARGS           convert a raw download (or your CSV) into a dataset; NAME is
                              one of python -m data_prep --list (NAME --help: its flags), e.g.
                              ./launch.sh prepare crema_d --raw_dir=~/CREMA-D --data_dir=~/avgmm_data
                              ./launch.sh prepare ks --raw_dir=~/kinetics400 (annotations/ inside)
                              ./launch.sh prepare vggsound --raw_dir=CLIPS --csv=vggsound.csv
                              ./launch.sh prepare av_mnist_graded --fsdd_dir=DIR --digits_dir=sklearn
                              (AV-MNIST offline: FSDD recordings + scikit-learn's digits)
  demo [--workdir=DIR] [--data_dir=DIR]
                              concat vs adaptive on the embedded avsynth data (offline)
  train CONFIG [--workdir=DIR] [--config.FIELD=VALUE ...] [--fresh]
                              one run, e.g. ./launch.sh train configs/crema.py --config.loss.beta=0
                              (workdir defaults to runs/<config file name>)
  multihost CONFIG [--workdir=DIR] [--dry-run] [--config.FIELD=VALUE ...]
                              one run over every node of a SLURM allocation (one process
                              per node, each using all its GPUs), e.g.
                              sbatch --nodes=2 --ntasks-per-node=1 --gpus-per-node=8 \
                                --wrap "./launch.sh multihost configs/crema.py"
                              (--dry-run prints the srun line)
  ablations|table1|study|guided CONFIG [--seeds=N] [--workdir=DIR] [--jobs=J] [--dry-run]
                              [--tune] [--ledger=FILE] [--shard=I/N] [--config.FIELD=VALUE ...]
                              a declared sweep (avgmm/experiments/variants.py): ablations
                              (the paper's Tables 2 and 3 and its open readings), table1
                              (every registered method; --tune: equal tuning), study (the
                              reproduction study), guided (does GMM guidance help?);
                              N seeds each, J runs at a time, then the summary (report,
                              Table 1 or study); run again, it resumes; --ledger: each
                              finished run appended to FILE, recorded runs skipped;
                              --shard=I/N: every N-th run (merge the shards' ledgers by
                              concatenation); --dry-run prints the commands, the run
                              count and the hours the ledger suggests
  sweep list [SWEEP] | sweep run SWEEP CONFIG ...
                              the same through python -m avgmm.experiments
  analyze --workdir=DIR [--checkpoint=best|latest|EPOCH] [--split=train]
                              plots and the per-sample imbalance.csv of one run
  report RUN_OR_FOLDER... [--out=DIR]
                              results table (Markdown + CSV), seeds pooled
  bench [train_step|gmm|input_pipeline|data_prep|run|gpu] [ARGS]
                              the benchmarks (the first five without a name; run: a whole
                              demo run, cold and warm, split by kind of work; gpu: 8 minutes
                              on one GPU, tables under runs/bench_gpu/, --smoke for a tiny
                              CPU run); see benchmarks/README.md
Multi-GPU: every run uses all local GPUs (jax.pmap); restrict with CUDA_VISIBLE_DEVICES or
--config.num_devices=N. The global batch must divide by the device count (all processes'
devices in a multi-host run). Other clusters: start one process per machine with
JAX_COORDINATOR_ADDRESS=host0:port JAX_NUM_PROCESSES=N JAX_PROCESS_ID=i (docs/multihost.md).
USAGE
}

# A mistake is one line `error: ...` on stderr and exit status 2 (docs/reliability.md).
fail() { echo "error: $*" >&2; exit 2; }
# The CONFIG argument of train and multihost: the first argument, a file (path or
# path:argument), never a flag.
config_arg() {
  local cmd=$1; shift
  if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
    echo "error: $cmd needs a config file first: ./launch.sh $cmd CONFIG [--workdir=DIR]" \
         "[--config.FIELD=VALUE ...], e.g. ./launch.sh $cmd configs/demo.py" >&2
    return 2
  fi
  if [ ! -f "$1" ] && [ ! -f "${1%:*}" ]; then
    echo "error: config file '$1' not found; the configs are in configs/, e.g. configs/demo.py" >&2
    return 2
  fi
  echo "$1"
}
# Whether the arguments name a workdir (--workdir=DIR or --workdir DIR).
has_workdir() {
  local a
  for a in "$@"; do case "$a" in --workdir|--workdir=*) return 0 ;; esac; done
  return 1
}
# runs/<config file name>: the workdir of train and multihost when none is given.
default_workdir() { echo "runs/$(basename "${1%%:*}" .py)"; }

cmd=${1:-help}
[ $# -gt 0 ] && shift
case "$cmd" in
  test) exec "$PY" -m pytest -q "$@" ;;
  demo) exec "$PY" -m avgmm.demo "$@" ;;
  analyze) exec "$PY" -m avgmm.analyze "$@" ;;
  bench)
    case "${1:-all}" in
      train_step|input_pipeline|data_prep) which=$1; shift; exec "$PY" "benchmarks/$which.py" "$@" ;;
      run) shift; exec "$PY" benchmarks/run_bench.py "$@" ;;
      gmm) shift; exec "$PY" benchmarks/gmm_bench.py "$@" ;;
      gpu) shift; exec "$PY" benchmarks/gpu_bench.py "$@" ;;
      all) for b in train_step.py gmm_bench.py input_pipeline.py data_prep.py run_bench.py; do
             "$PY" "benchmarks/$b"; done ;;
      *) fail "unknown benchmark '$1': one of train_step, gmm, input_pipeline, data_prep, run, gpu (none: the first five)" ;;
    esac ;;
  report) exec "$PY" -m avgmm.report "$@" ;;
  prepare)
    # The dataset registry knows every converter, a user's own included.
    exec "$PY" -m data_prep "$@" ;;
  train)
    config=$(config_arg train "$@"); shift
    if has_workdir "$@"; then exec "$PY" -m avgmm.main --config="$config" "$@"; fi
    exec "$PY" -m avgmm.main --config="$config" --workdir="$(default_workdir "$config")" "$@" ;;
  multihost)
    config=$(config_arg multihost "$@"); shift
    dry=0; args=()
    for a in "$@"; do
      if [ "$a" = --dry-run ]; then dry=1; else args+=("$a"); fi
    done
    has_workdir ${args[@]+"${args[@]}"} || args+=("--workdir=$(default_workdir "$config")")
    # One task per node; SLURM's environment tells each task its rank and the coordinator
    # (jax.distributed.initialize), and a task that fails stops the others.
    line=(srun --ntasks-per-node=1 --kill-on-bad-exit=1 "$PY" -m avgmm.main
          --config="$config" "${args[@]}")
    # Checked here, once, before anything is submitted or printed: a mistake would
    # otherwise be found by every node at once.
    "$PY" -m avgmm.main --config="$config" "${args[@]}" --check_only || exit $?
    if [ "$dry" = 1 ]; then printf '%q ' "${line[@]}"; echo; exit 0; fi
    if [ -z "${SLURM_JOB_ID:-}" ]; then
      echo "error: launch.sh multihost: not inside a SLURM allocation; submit it, e.g." \
           "sbatch --nodes=2 --ntasks-per-node=1 --gpus-per-node=8 --wrap" \
           "\"./launch.sh multihost $config\", or see docs/multihost.md for other" \
           "clusters" >&2
      exit 2
    fi
    exec "${line[@]}" ;;
  ablations|study|table1|guided)
    # The sweeps and their variants are declared in avgmm/experiments/variants.py.
    exec "$PY" -m avgmm.experiments run "$cmd" "$@" ;;
  sweep) exec "$PY" -m avgmm.experiments "$@" ;;
  help|-h|--help) usage ;;
  *) echo "error: unknown command '$cmd'; ./launch.sh help lists the commands" >&2; exit 2 ;;
esac
