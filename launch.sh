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
  ablations CONFIG [--seeds N] [--workdir=DIR] [--dry-run] [--config.FIELD=VALUE ...]
                              the paper's Table 2 (alpha/beta/gamma = 0, no GMM weights,
                              concat baseline) and Table 3 (SGD/Adam, reset or not) runs,
                              plus the open readings (lambda epoch, posteriors source,
                              unimodal terms, schedule reset, BIC selection), one after
                              another, then the report; --dry-run prints the commands
  table1 CONFIG [--seeds N] [--workdir=DIR] [--dry-run] [--config.FIELD=VALUE ...]
                              the paper's Table 1: every registered method (concat, the
                              balancing baselines, warm-up only, the adaptive loss as printed
                              and as our study runs it), N seeds each (default 3), one
                              protocol, then the table (python -m avgmm.report --table1)
  study CONFIG [--seeds N] [--workdir=DIR] [--dry-run] [--config.FIELD=VALUE ...]
                              the reproduction study (README, "Does it work?"): concat,
                              warmup_only, the paper's adaptive loss and its ablations,
                              the open readings and our changes, N seeds each, then the
                              tables and figures of python -m avgmm.study
  analyze --workdir=DIR [--checkpoint=best|latest|EPOCH] [--split=train]
                              plots and the per-sample imbalance.csv of one run
  report RUN_OR_FOLDER... [--out=DIR]
                              results table (Markdown + CSV), seeds pooled
  bench [train_step|gmm|input_pipeline|data_prep|run] [ARGS]
                              the benchmarks (all five without a name; run: a whole demo
                              run, cold and warm, split by kind of work); see
                              benchmarks/README.md
Multi-GPU: every run uses all local GPUs (jax.pmap); restrict with CUDA_VISIBLE_DEVICES or
--config.num_devices=N. The global batch must divide by the device count (all processes'
devices in a multi-host run). Other clusters: start one process per machine with
JAX_COORDINATOR_ADDRESS=host0:port JAX_NUM_PROCESSES=N JAX_PROCESS_ID=i (README, Training).
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
  # Readings the paper leaves open (README, "Method notes"), each against "full".
  "lambda_step:--config.loss.lambda_epoch=step"
  "lambda_global:--config.loss.lambda_epoch=global"
  "posteriors_refit:--config.loss.posteriors_from=refit"
  "unimodal_w1:--config.loss.unimodal_weight=1.0"
  "reset_schedule:--config.optimizer.reset_schedule=True"
  "gmm_bic:--config.gmm.select=bic"
)

# The reproduction study: the paper's method as printed (eq. 10, no unimodal terms), its
# ablations and open readings, and our changes (labelled "ours" in the README).
PAPER="--config.loss.unimodal_weight=0 --config.loss.gap_gradient=both"
STUDY=(
  "concat:--config.method=concat"
  "warmup_only:--config.method=warmup_only"
  "paper:$PAPER"
  "paper_alpha0:$PAPER --config.loss.alpha=0"
  "paper_beta0:$PAPER --config.loss.beta=0"
  "paper_gamma0:$PAPER --config.loss.gamma=0"
  "paper_no_gmm_weights:$PAPER --config.loss.use_gmm_weights=False"
  "paper_no_reset:$PAPER --config.optimizer.reset_between_phases=False"
  "paper_lambda_step:$PAPER --config.loss.lambda_epoch=step"
  "paper_posteriors_refit:$PAPER --config.loss.posteriors_from=refit"
  "paper_gmm_bic:$PAPER --config.gmm.select=bic"
  "ours_unimodal:--config.loss.unimodal_weight=1.0 --config.loss.gap_gradient=both"
  "ours_unimodal_weaker:--config.loss.unimodal_weight=1.0 --config.loss.gap_gradient=weaker"
)

# Runs NAME:OVERRIDES entries for each seed under ROOT, then a summary command.
sweep() {
  local root=$1 seeds=$2 dry=$3 summary=$4; shift 4
  local entries=() extra=() seen=0
  for a in "$@"; do
    if [ "$a" = "--" ]; then seen=1; continue; fi
    if [ $seen = 0 ]; then entries+=("$a"); else extra+=("$a"); fi
  done
  for ((seed = 0; seed < seeds; seed++)); do
    for entry in "${entries[@]}"; do
      name=${entry%%:*}; overrides=${entry#*:}
      # shellcheck disable=SC2206
      line=("$PY" -m avgmm.main --config="$config" --workdir="$root/$name/seed$seed"
            --config.seed="$seed" $overrides "${extra[@]+"${extra[@]}"}")
      if [ "$dry" = 1 ]; then printf '%q ' "${line[@]}"; echo; else "${line[@]}"; fi
    done
  done
  # shellcheck disable=SC2206
  local report=("$PY" -m $summary)
  if [ "$dry" = 1 ]; then printf '%q ' "${report[@]}"; echo; else "${report[@]}"; fi
}

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
      all) for b in train_step.py gmm_bench.py input_pipeline.py data_prep.py run_bench.py; do
             "$PY" "benchmarks/$b"; done ;;
      *) echo "launch.sh bench: unknown benchmark '$1'" >&2; exit 2 ;;
    esac ;;
  report) exec "$PY" -m avgmm.report "$@" ;;
  prepare)
    # The dataset registry knows every converter, a user's own included.
    exec "$PY" -m data_prep "$@" ;;
  train)
    [ $# -ge 1 ] || { usage >&2; exit 2; }
    config=$1; shift
    case " $* " in
      *" --workdir="*) exec "$PY" -m avgmm.main --config="$config" "$@" ;;
      *) exec "$PY" -m avgmm.main --config="$config" \
           --workdir="runs/$(basename "${config%%:*}" .py)" "$@" ;;
    esac ;;
  multihost)
    [ $# -ge 1 ] || { usage >&2; exit 2; }
    config=$1; shift
    dry=0; args=()
    for a in "$@"; do
      if [ "$a" = --dry-run ]; then dry=1; else args+=("$a"); fi
    done
    case " ${args[*]+"${args[*]}"} " in
      *" --workdir="*) ;;
      *) args+=("--workdir=runs/$(basename "${config%%:*}" .py)") ;;
    esac
    # One task per node; SLURM's environment tells each task its rank and the coordinator
    # (jax.distributed.initialize), and a task that fails stops the others.
    line=(srun --ntasks-per-node=1 --kill-on-bad-exit=1 "$PY" -m avgmm.main
          --config="$config" "${args[@]}")
    if [ "$dry" = 1 ]; then printf '%q ' "${line[@]}"; echo; exit 0; fi
    if [ -z "${SLURM_JOB_ID:-}" ]; then
      echo "launch.sh multihost: not inside a SLURM allocation; submit it, e.g." \
           "sbatch --nodes=2 --ntasks-per-node=1 --gpus-per-node=8 --wrap" \
           "\"./launch.sh multihost $config\", or see the README (Training) for other" \
           "clusters" >&2
      exit 2
    fi
    exec "${line[@]}" ;;
  ablations|study|table1)
    [ $# -ge 1 ] || { usage >&2; exit 2; }
    config=$1; shift
    seeds=1; dry=0; root="runs/$cmd/$(basename "${config%%:*}" .py)"; extra=()
    [ "$cmd" != ablations ] && seeds=3
    while [ $# -gt 0 ]; do
      case "$1" in
        --seeds) seeds=$2; shift 2 ;;
        --seeds=*) seeds=${1#--seeds=}; shift ;;
        --dry-run) dry=1; shift ;;
        --workdir=*) root=${1#--workdir=}; shift ;;
        *) extra+=("$1"); shift ;;
      esac
    done
    if [ "$cmd" = ablations ]; then
      sweep "$root" "$seeds" "$dry" "avgmm.report $root --out=$root" "${ABLATIONS[@]}" \
        -- "${extra[@]+"${extra[@]}"}"
    elif [ "$cmd" = table1 ]; then
      # The rows come from the registered methods (avgmm/methods): a new method needs no
      # edit here.
      runs=$("$PY" -m avgmm.methods --table1) || exit 1
      mapfile -t TABLE1 <<<"$runs"
      sweep "$root" "$seeds" "$dry" "avgmm.report $root --out=$root --table1" "${TABLE1[@]}" \
        -- "${extra[@]+"${extra[@]}"}"
    else
      sweep "$root" "$seeds" "$dry" "avgmm.study $root" "${STUDY[@]}" \
        -- "${extra[@]+"${extra[@]}"}"
    fi ;;
  help|-h|--help) usage ;;
  *) echo "launch.sh: unknown command '$cmd'" >&2; usage >&2; exit 2 ;;
esac
