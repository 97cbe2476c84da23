"""Command-line entry: `python -m avgmm.main --config=configs/crema.py --workdir=runs/x`.

Any config field can be overridden, e.g. `--config.loss.beta=0 --config.method=concat`.
A run restarted on the same workdir resumes from its latest checkpoint.
"""

import json
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from avgmm import train, utils

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training configuration file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.DEFINE_bool("fresh", False, "Delete the workdir's checkpoints and metrics first.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:
        # Orbax and tfds log every save and load at INFO; the trainer prints its own
        # progress. --verbosity=0 brings the library logs back.
        logging.set_verbosity(logging.WARNING)
    # Multi-host launches (SLURM, GKE, ...) set the coordinator through the environment.
    if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("SLURM_NTASKS", "1") != "1":
        jax.distributed.initialize()
        if jax.process_count() > 1:
            # Each host would need its own slice of every batch and a single writer of
            # metrics and reports; until then, refuse rather than train on duplicated data.
            raise app.UsageError(
                f"{jax.process_count()} processes: multi-host training is not supported yet. "
                "Run one process per machine; it uses all of the machine's GPUs.")
    try:
        results = train.train_and_evaluate(FLAGS.config, FLAGS.workdir, fresh=FLAGS.fresh)
    except utils.WorkdirError as e:  # busy workdir, divergence, full disk, bad checkpoint
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(results, indent=2, sort_keys=True))


if __name__ == "__main__":
    app.run(main)
