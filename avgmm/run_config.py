"""Checks a run's config, devices and data before anything compiles or is written."""

import functools
import math
import os

import jax
import ml_collections
import numpy as np

from avgmm import evaluators
from avgmm import gmm as gmm_lib
from avgmm import methods
from avgmm.data import pipeline
from avgmm.errors import UserError
from avgmm.models import DTYPES

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("constant", "step", "cosine")
# Number fields where +inf means something (no limit); NaN and -inf are refused there too.
INF_ALLOWED = ("data.cache_max_gb",)


def validate_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
    """Raises `UserError` (a ValueError) naming the field and the allowed values; runs
    before compiling. The selected method checks its own fields."""
    def need(ok: bool, field: str, allowed: str):
        if not ok:
            value = functools.reduce(getattr, field.split("."), config)
            raise UserError(f"config.{field}={value!r} is not allowed: {allowed}")

    need(config.method in methods.REGISTRY, "method", f"one of {tuple(methods.REGISTRY)}")
    check_numbers_finite(config)
    need(isinstance(config.checkpoint_keep, int) and config.checkpoint_keep >= 1,
         "checkpoint_keep", "an integer >= 1 (the newest epochs kept for resuming; with 0 "
         "nothing would be left to resume from)")
    need(config.optimizer.name in OPTIMIZERS, "optimizer.name", f"one of {OPTIMIZERS}")
    need(config.optimizer.lr_schedule in LR_SCHEDULES, "optimizer.lr_schedule",
         f"one of {LR_SCHEDULES}")
    need(config.model.dtype in DTYPES, "model.dtype", f"one of {tuple(DTYPES)}")
    for f in ("schedule.warmup_epochs", "schedule.adaptive_steps"):
        need(functools.reduce(getattr, f.split("."), config) >= 0, f, "an integer >= 0")
    need(config.schedule.epochs_per_step >= 1, "schedule.epochs_per_step", "an integer >= 1")
    need(isinstance(config.epochs, int) and config.epochs >= 1, "epochs", "an integer >= 1")
    need(isinstance(config.eval_every_epochs, int) and config.eval_every_epochs >= 1,
         "eval_every_epochs", "an integer >= 1 (1: evaluate every epoch; the last epoch is "
         "always evaluated)")
    evaluators.validate(config.evaluators, need)
    need(config.gmm.select in gmm_lib.SELECTIONS, "gmm.select",
         f"one of {gmm_lib.SELECTIONS}")
    need(isinstance(config.optimizer.reset_schedule, bool), "optimizer.reset_schedule",
         "True or False")
    need(config.optimizer.learning_rate > 0, "optimizer.learning_rate", "a number > 0")
    # Checked apart from the ranges above: inf passes every `>` and NaN fails them all.
    for f in ("optimizer.learning_rate", "optimizer.weight_decay", "optimizer.lr_decay"):
        need(math.isfinite(functools.reduce(getattr, f.split("."), config)), f,
             "a finite number")
    need(config.optimizer.lr_decay > 0, "optimizer.lr_decay", "a number > 0")
    need(config.seed >= 0, "seed", "an integer >= 0")
    need(0 <= config.optimizer.momentum < 1, "optimizer.momentum", "a number in [0, 1)")
    need(config.optimizer.weight_decay >= 0, "optimizer.weight_decay", "a number >= 0")
    need(config.optimizer.lr_step_epochs >= 1, "optimizer.lr_step_epochs", "an integer >= 1")
    need(config.gmm.max_iters >= 1, "gmm.max_iters", "an integer >= 1")
    need(config.gmm.tol > 0, "gmm.tol", "a number > 0")
    need(config.gmm.reg_covar >= 0, "gmm.reg_covar", "a number >= 0")
    need(config.gmm.components in gmm_lib.COMPONENTS, "gmm.components",
         f"one of {gmm_lib.COMPONENTS} (2: balanced and imbalanced, the paper's; 3: "
         "balanced, audio-dominant and visual-dominant)")
    need(config.model.width >= 1, "model.width", "an integer >= 1")
    need(len(config.model.stage_sizes) >= 1 and min(config.model.stage_sizes) >= 1,
         "model.stage_sizes", "a non-empty tuple of integers >= 1, e.g. (2, 2, 2, 2)")
    need(config.data.image_size >= 8, "data.image_size", "an integer >= 8")
    need(config.data.num_frames >= 1, "data.num_frames", "an integer >= 1")
    need(isinstance(config.data.augment, bool), "data.augment", "True or False")
    need(isinstance(config.data.flip, bool), "data.flip", "True or False")
    need(_is_range(config.data.crop_scale, 1.0), "data.crop_scale",
         "a pair (low, high) with 0 < low <= high <= 1, e.g. (0.08, 1.0)")
    need(_is_range(config.data.crop_ratio, float("inf")), "data.crop_ratio",
         "a pair (low, high) with 0 < low <= high, e.g. (0.75, 1.333)")
    for f in ("batch_size", "eval_batch_size"):
        size = getattr(config, f)
        need(size >= 1, f, "an integer >= 1")
        need(size % num_devices == 0, f,
             f"a multiple of the device count ({num_devices}); e.g. "
             f"{max(num_devices, size // num_devices * num_devices)}, or set "
             "config.num_devices to a divisor of it")
    methods.REGISTRY[config.method].validate(config, need)


def check_numbers_finite(config: ml_collections.ConfigDict) -> None:
    """Refuses NaN or inf in any number of the config (every method's settings included,
    numbers inside tuples too), except inf where it means "no limit" (`INF_ALLOWED`): a
    range check such as `x > 0` lets inf through, and NaN would reach the compiled step."""
    for field, value in _numbers(config):
        if math.isfinite(value) or (field in INF_ALLOWED and value == math.inf):
            continue
        raise UserError(f"config.{field}={_value(config, field)!r} is not allowed: a finite "
                        "number (NaN and inf are refused)")


def _numbers(tree, prefix: str = ""):
    """`(dotted field, float)` for every float of a ConfigDict, in tuples and lists too."""
    for key, value in tree.items():
        field = f"{prefix}{key}"
        if isinstance(value, (ml_collections.ConfigDict, dict)):
            yield from _numbers(value, field + ".")
        elif isinstance(value, (list, tuple)):
            for item in value:
                if isinstance(item, float):
                    yield field, item
        elif isinstance(value, float):
            yield field, value


def _value(config: ml_collections.ConfigDict, field: str):
    return functools.reduce(lambda c, k: c[k], field.split("."), config)


def _is_range(value, upper: float) -> bool:
    """A `(low, high)` pair of numbers with `0 < low <= high <= upper`."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        return False
    return 0 < low <= high <= upper


def select_devices(config: ml_collections.ConfigDict):
    """The first `config.num_devices` local devices (0: all) of every process, process 0's
    first: the devices a run maps its steps over (one process: just its own)."""
    devices = jax.local_devices()
    n = config.num_devices or len(devices)
    if not 1 <= n <= len(devices):
        raise UserError(f"config.num_devices={config.num_devices} but this process sees "
                         f"{len(devices)} device(s); use 0 (all) or 1..{len(devices)}")
    if jax.process_count() == 1:
        return devices[:n]
    by_process = [[d for d in jax.devices() if d.process_index == p]
                  for p in range(jax.process_count())]
    if min(len(d) for d in by_process) < n:
        raise UserError("the processes of this run see "
                        + ", ".join(str(len(d)) for d in by_process) + " devices; set "
                        "config.num_devices to at most the smallest number")
    return [d for own in by_process for d in own[:n]]


def open_dataset(config: ml_collections.ConfigDict) -> pipeline.Dataset:
    """The config's prepared dataset, its parameters checked, cached if asked for."""
    data_dir = os.path.expanduser(config.data.data_dir)
    cache_dir = None
    if config.data.cache:
        cache_dir = os.path.expanduser(config.data.cache_dir or
                                       os.path.join(data_dir, "avgmm_cache"))
    return pipeline.load_dataset(config.data.name, data_dir, config.data.num_frames,
                                 dict(config.data.expect), cache_dir=cache_dir,
                                 cache_max_gb=config.data.cache_max_gb)


def check_batch_fits(config: ml_collections.ConfigDict, num_train: int,
                     num_devices: int) -> None:
    """Refuses a batch larger than the training split, naming the largest that fits."""
    if config.batch_size <= num_train:
        return
    fits = num_train // num_devices * num_devices
    fix = (f"use --config.batch_size={fits} or less" if fits >= 1 else
           f"the split is smaller than the device count ({num_devices}): set "
           f"config.num_devices={max(1, num_train)} or prepare more data")
    raise UserError(f"config.batch_size={config.batch_size} exceeds the {num_train} training "
                    f"examples of '{config.data.name}': {fix}")


def check_train_classes(config: ml_collections.ConfigDict, ds: pipeline.Dataset) -> None:
    """Refuses data whose training split cannot teach a classifier: fewer than 2 classes
    in the dataset, or (when the split sits in the decoded cache, where its labels cost
    nothing to read) labels of fewer than 2 classes in the training split. The records
    of a split too large for the cache are not read for this: it would decode every clip."""
    name, names = config.data.name, ds.meta.class_names
    if ds.meta.num_classes < 2:
        raise UserError(f"dataset '{name}' has {ds.meta.num_classes} class(es) "
                        f"{list(names)}: a classifier needs at least 2; prepare it with "
                        "clips of several classes")
    if "train" not in ds.cache:
        return
    present = np.unique(np.asarray(ds.cache["train"]["label"]))
    if len(present) < 2:
        only = f" ({names[int(present[0])]!r})" if len(present) else ""
        raise UserError(f"the training split of '{name}' holds labels of {len(present)} "
                        f"class{only} only: a classifier needs at least 2; prepare the data "
                        "again with training clips of several classes")
