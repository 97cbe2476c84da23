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
  prepare crema_d|ave|av_mnist|folder ARGS
                              convert a raw download (or your CSV) into a dataset, e.g.
                              ./launch.sh prepare crema_d --raw_dir=~/CREMA-D --data_dir=~/avgmm_data
                              ./launch.sh prepare av_mnist --fsdd_dir=DIR --digits_dir=sklearn
                              (AV-MNIST offline: FSDD recordings + scikit-learn's digits)
  demo [--workdir=DIR] [--data_dir=DIR]
                              concat vs adaptive on the embedded avsynth data (offline)
  train CONFIG [--workdir=DIR] [--config.FIELD=VALUE ...] [--fresh]
                              one run, e.g. ./launch.sh train configs/crema.py --config.loss.beta=0
                              (workdir defaults to runs/<config file name>)
  ablations CONFIG [--seeds N] [--workdir=DIR] [--dry-run] [--config.FIELD=VALUE ...]
                              the paper's Table 2 (alpha/beta/gamma = 0, no GMM weights,
                              concat baseline) and Table 3 (SGD/Adam, reset or not) runs,
                              one after another, then the report; --dry-run prints the
                              commands (to send them to a cluster)
  analyze --workdir=DIR [--checkpoint=best|latest|EPOCH] [--split=train]
                              plots and the per-sample imbalance.csv of one run
  report RUN_OR_FOLDER... [--out=DIR]
                              results table (Markdown + CSV), seeds pooled
  bench [train_step|gmm|input_pipeline|data_prep] [ARGS]
                              the benchmarks (all four without a name); see benchmarks/README.md
Multi-GPU: every run uses all local GPUs (jax.pmap); restrict with CUDA_VISIBLE_DEVICES or
--config.num_devices=N. The global batch must divide by the device count.
USAGE
}

# The paper's ablations: a name and the overrides that make it.
ABLATIONS=(
  "full:"
  "alpha0:--config.loss.alpha=0"
  "beta0:--config.loss.beta=0"
  "gamma0:--config.loss.gamma=0"
  "no_gmm_weights:--config.loss.use_gmm_weights=False"
  "concat:--config.method=concat"
  "sgd_no_reset:--config.optimizer.reset_between_phases=False"
  "adam_reset:--config.optimizer.name=adam"
  "adam_no_reset:--config.optimizer.name=adam --config.optimizer.reset_between_phases=False"
)

cmd=${1:-help}
[ $# -gt 0 ] && shift
case "$cmd" in
  test) exec "$PY" -m pytest -q "$@" ;;
  demo) exec "$PY" -m avgmm.demo "$@" ;;
  analyze) exec "$PY" -m avgmm.analyze "$@" ;;
  bench)
    case "${1:-all}" in
      train_step|input_pipeline|data_prep) which=$1; shift; exec "$PY" "benchmarks/$which.py" "$@" ;;
      gmm) shift; exec "$PY" benchmarks/gmm_bench.py "$@" ;;
      all) for b in train_step.py gmm_bench.py input_pipeline.py data_prep.py; do
             "$PY" "benchmarks/$b"; done ;;
      *) echo "launch.sh bench: unknown benchmark '$1'" >&2; exit 2 ;;
    esac ;;
  report) exec "$PY" -m avgmm.report "$@" ;;
  prepare)
    case "${1:-}" in
      crema_d|ave|av_mnist|folder) which=$1; shift; exec "$PY" -m "data_prep.$which" "$@" ;;
      *) echo "launch.sh prepare: name crema_d, ave, av_mnist or folder" >&2; exit 2 ;;
    esac ;;
  train)
    [ $# -ge 1 ] || { usage >&2; exit 2; }
    config=$1; shift
    case " $* " in
      *" --workdir="*) exec "$PY" -m avgmm.main --config="$config" "$@" ;;
      *) exec "$PY" -m avgmm.main --config="$config" \
           --workdir="runs/$(basename "${config%%:*}" .py)" "$@" ;;
    esac ;;
  ablations)
    [ $# -ge 1 ] || { usage >&2; exit 2; }
    config=$1; shift
    seeds=1; dry=0; root="runs/ablations/$(basename "${config%%:*}" .py)"; extra=()
    while [ $# -gt 0 ]; do
      case "$1" in
        --seeds) seeds=$2; shift 2 ;;
        --seeds=*) seeds=${1#--seeds=}; shift ;;
        --dry-run) dry=1; shift ;;
        --workdir=*) root=${1#--workdir=}; shift ;;
        *) extra+=("$1"); shift ;;
      esac
    done
    for ((seed = 0; seed < seeds; seed++)); do
      for entry in "${ABLATIONS[@]}"; do
        name=${entry%%:*}; overrides=${entry#*:}
        # shellcheck disable=SC2206
        line=("$PY" -m avgmm.main --config="$config" --workdir="$root/$name/seed$seed"
              --config.seed="$seed" $overrides "${extra[@]+"${extra[@]}"}")
        if [ "$dry" = 1 ]; then printf '%q ' "${line[@]}"; echo; else "${line[@]}"; fi
      done
    done
    report=("$PY" -m avgmm.report "$root" --out="$root")
    if [ "$dry" = 1 ]; then printf '%q ' "${report[@]}"; echo; else "${report[@]}"; fi ;;
  help|-h|--help) usage ;;
  *) echo "launch.sh: unknown command '$cmd'" >&2; usage >&2; exit 2 ;;
esac
