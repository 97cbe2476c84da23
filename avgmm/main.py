"""Command-line entry: `python -m avgmm.main --config=configs/crema.py --workdir=runs/x`.

Any config field can be overridden, e.g. `--config.loss.beta=0 --config.method=concat`;
`--print_config` prints the resolved config with each field's comment and exits.
A run restarted on the same workdir resumes from its latest checkpoint; a finished one
prints its saved results.

Exit status: 0 done, 2 a usage or config mistake (one line `error: ...`; `--verbosity=1`
adds the traceback), 1 a failed run (busy workdir, divergence, full disk, damaged
checkpoints), 130 interrupted with Ctrl-C. Bugs keep their traceback.
"""

import json
import os
import sys
import traceback
from typing import List, Optional

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from avgmm import cli, config_text, distributed, methods, processes, run_config, train
from avgmm.errors import PrimaryError, RunInterrupted, UserError, WorkdirError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training configuration file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.DEFINE_bool("fresh", False, "Delete the workdir's checkpoints and metrics first.")
flags.DEFINE_bool("print_config", False,
                  "Print the resolved config (with each field's comment) and exit.")
flags.DEFINE_bool("check_only", False,
                  "Check the flags and the config's values, then exit (0: no mistake found) "
                  "without touching a device, the data or the workdir (./launch.sh "
                  "multihost runs it before submitting).")
flags.mark_flag_as_required("config")

USAGE_STATUS = cli.USAGE_STATUS
FAILED_STATUS = cli.FAILED_STATUS
INTERRUPTED_STATUS = cli.INTERRUPTED_STATUS
_error = cli.say_error


def parse_flags(argv: List[str]) -> List[str]:
    """absl's flag parsing, with mistakes told in one line and exit status 2.

    ml_collections raises a bare AttributeError or KeyError while parsing an override of a
    field the config does not have (`--config.loss.betta=0`); only those that name one of
    the command line's `--config.` fields are turned into a message.
    """
    try:
        rest = FLAGS(argv)
        spec = FLAGS["config"].config_filename
        if not os.path.exists(spec) and not os.path.exists(spec.rsplit(":", 1)[0]):
            _error(f"--config={spec}: no such file; the configs are in configs/, e.g. "
                   "--config=configs/demo.py")
            sys.exit(USAGE_STATUS)
        return rest
    except flags.Error as e:
        _error(f"{str(e).strip().rstrip('.')}; see --helpshort")
    except (AttributeError, KeyError) as e:
        message = config_text.unknown_field_message(e, argv[1:])
        if message is None:
            raise
        _error(message)
    sys.exit(USAGE_STATUS)


def run(config, workdir: str, fresh: bool = False, tracebacks: bool = False) -> int:
    """Trains (or resumes) and prints the results as JSON; returns the exit status."""
    try:
        results = train.train_and_evaluate(config, workdir, fresh=fresh)
    except UserError as e:  # a config value, the data, a workdir with another run
        if tracebacks:
            traceback.print_exc()
        if not isinstance(e, PrimaryError):  # process 0 prints it
            _error(e)
        return USAGE_STATUS
    except WorkdirError as e:  # busy workdir, divergence, full disk, bad checkpoint
        if tracebacks:
            traceback.print_exc()
        if not isinstance(e, PrimaryError):
            _error(e)
        return FAILED_STATUS
    except KeyboardInterrupt as e:
        if tracebacks:
            traceback.print_exc()
        print(str(e) if isinstance(e, RunInterrupted) else "interrupted",
              file=sys.stderr, flush=True)
        return INTERRUPTED_STATUS
    if processes.is_primary():
        print(json.dumps(results, indent=2, sort_keys=True))
    return 0


def initialize_distributed() -> None:
    """Joins a multi-process run when the environment describes one: an explicit
    coordinator (`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`) or a
    cluster jax detects (a multi-task SLURM job, Open MPI, Cloud TPU); see
    `avgmm.distributed` for the bounded wait and the checks. Must run before anything
    touches a device. A misconfigured job exits 2, a missing process 1, in one line."""
    if not distributed.wanted():
        return
    # Cross-process collectives between CPU devices (tests, CPU clusters) need an
    # implementation; jax 0.10 picks gloo by default, older versions none.
    if jax.config.jax_cpu_collectives_implementation is None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        distributed.initialize()
    except UserError as e:
        cli.usage_error(e)
    except WorkdirError as e:
        _error(e)
        sys.exit(FAILED_STATUS)


def _unused_warning(config, overrides) -> Optional[str]:
    """One line naming the overrides the run never reads (another method's settings), or
    None."""
    unused = methods.unused_fields(config, overrides)
    if not unused:
        return None
    return ("warning: unused override(s) "
            + ", ".join(f"--config.{f}={overrides[f][1]!r}" for f in unused)
            + f": config.method={config.method!r} reads only its own section of the methods' "
            f"settings (config.{config.method}); the run goes on without them")


def _file_config():
    """The config file's own values, without the command line's overrides."""
    return config_text.load_config_file(FLAGS["config"].config_filename)


def main(argv):
    if len(argv) > 1:
        _error(f"unexpected arguments {argv[1:]}: every option is a --flag=value")
        sys.exit(USAGE_STATUS)
    verbose = FLAGS["verbosity"].present and FLAGS.verbosity >= 1
    if not FLAGS["verbosity"].present:
        # Orbax and tfds log every save and load at INFO; the trainer prints its own
        # progress. --verbosity=0 brings the library logs back.
        logging.set_verbosity(logging.WARNING)
    overrides = config_text.overrides(_file_config(), FLAGS.config)
    if FLAGS.print_config:
        print(config_text.render(FLAGS.config, FLAGS["config"].config_filename, overrides))
        return
    if not FLAGS.workdir:
        _error("--workdir is required, e.g. --workdir=runs/x (or pass --print_config)")
        sys.exit(USAGE_STATUS)
    try:
        cli.folder_flag("--workdir", FLAGS.workdir)
        if FLAGS.check_only:
            # The device count is not known before the run starts: the batch's divisibility
            # is checked against config.num_devices (1 when it says "all").
            run_config.validate_config(FLAGS.config, max(1, FLAGS.config.num_devices))
    except UserError as e:
        cli.usage_error(e)
    unused = _unused_warning(FLAGS.config, overrides)
    if FLAGS.check_only:
        if unused:
            print(unused, file=sys.stderr, flush=True)
        return
    initialize_distributed()
    if jax.process_index() == 0:
        if unused:
            print(unused, file=sys.stderr, flush=True)
        if overrides:
            print("overrides in force: " + config_text.describe_overrides(overrides),
                  flush=True)
    sys.exit(run(FLAGS.config, FLAGS.workdir, fresh=FLAGS.fresh, tracebacks=verbose))


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
