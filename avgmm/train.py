"""Two-stage trainer (Algorithm 1): warm-up, GMM refits, adaptive loss; pmapped.

`train_and_evaluate(config, workdir)` is the library entry. Step functions are pure and
written for one device's shard; `Parallel` wraps them in `jax.pmap` over axis `batch`
(gradients and metrics `pmean`ed, BatchNorm statistics synchronized through the model's
`axis_name`, gaps `all_gather`ed before the GMM fit), in one place.
"""

import functools
import json
import math
import os
import shutil
import time
from typing import Any, Dict, Iterable, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from avgmm import gmm as gmm_lib
from avgmm import losses, progress, utils
from avgmm import workdir as workdir_lib
from avgmm.data import augment, pipeline
from avgmm.errors import RunInterrupted, UserError
from avgmm.models import AVClassifier

METHODS = ("concat", "warmup_only", "adaptive")
LAMBDA_EPOCHS = ("adaptive", "step", "global")
POSTERIORS_FROM = ("batch", "refit")
GAP_GRADIENTS = ("both", "weaker")
OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("constant", "step", "cosine")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
AXIS = "batch"


class TrainState(train_state.TrainState):
    """Parameters, optimizer, BatchNorm statistics, the GMM in force and epochs done.

    `fit_gaps` holds every training sample's inference-mode gap collected for the GMM fit
    in force (by dataset index), for `loss.posteriors_from=refit`.
    """

    batch_stats: Any
    gmm: gmm_lib.GMMParams
    epoch: jnp.ndarray
    fit_gaps: jnp.ndarray


# --------------------------------------------------------------------------- config
def total_epochs(config: ml_collections.ConfigDict) -> int:
    """Every method gets the same budget: warm-up plus all adaptive epochs."""
    s = config.schedule
    return s.warmup_epochs + s.adaptive_steps * s.epochs_per_step


def epoch_phase(config: ml_collections.ConfigDict, epoch: int) -> Tuple[str, int, int]:
    """`(loss_name, adaptive_step, adaptive_epoch)` of a 0-based epoch.

    loss_name is `concat`, `warmup` or `adaptive`; for adaptive epochs `adaptive_step`
    is the index of the GMM fit in force and `adaptive_epoch` the `e` of `0.96 ** e`;
    both are -1 otherwise.
    """
    if config.method == "concat":
        return "concat", -1, -1
    warm = config.schedule.warmup_epochs
    if config.method == "warmup_only" or epoch < warm:
        return "warmup", -1, -1
    e = epoch - warm
    return "adaptive", e // config.schedule.epochs_per_step, e


def lambda_exponent(config: ml_collections.ConfigDict, epoch: int) -> int:
    """The `e` of `lambda_t = lambda_decay ** e` for a 0-based adaptive epoch.

    `loss.lambda_epoch`: `adaptive` counts adaptive epochs completed across steps; `step`
    restarts at 0 with each GMM refit (Algorithm 1's inner loop read literally); `global`
    counts every epoch completed, warm-up included.
    """
    _, _, e = epoch_phase(config, epoch)
    if e < 0:
        return 0
    if config.loss.lambda_epoch == "step":
        return e % config.schedule.epochs_per_step
    if config.loss.lambda_epoch == "global":
        return epoch
    return e


def validate_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
    """Raises `UserError` (a ValueError) naming the field and the allowed values; runs
    before compiling."""
    def need(ok: bool, field: str, allowed: str):
        if not ok:
            value = functools.reduce(getattr, field.split("."), config)
            raise UserError(f"config.{field}={value!r} is not allowed: {allowed}")

    need(config.method in METHODS, "method", f"one of {METHODS}")
    need(config.optimizer.name in OPTIMIZERS, "optimizer.name", f"one of {OPTIMIZERS}")
    need(config.optimizer.lr_schedule in LR_SCHEDULES, "optimizer.lr_schedule",
         f"one of {LR_SCHEDULES}")
    need(config.model.dtype in DTYPES, "model.dtype", f"one of {tuple(DTYPES)}")
    for f in ("schedule.warmup_epochs", "schedule.adaptive_steps"):
        need(functools.reduce(getattr, f.split("."), config) >= 0, f, "an integer >= 0")
    need(config.schedule.epochs_per_step >= 1, "schedule.epochs_per_step", "an integer >= 1")
    need(total_epochs(config) >= 1, "schedule.warmup_epochs",
         "warm-up and adaptive epochs must add up to at least 1")
    if config.method == "adaptive":
        need(config.schedule.warmup_epochs >= 1, "schedule.warmup_epochs",
             ">= 1 for method=adaptive: the first GMM is fitted to a warmed-up model's gaps")
    for f in ("loss.alpha", "loss.beta", "loss.gamma"):
        need(functools.reduce(getattr, f.split("."), config) >= 0, f, "a number >= 0")
    need(0 < config.loss.lambda_decay <= 1, "loss.lambda_decay", "a number in (0, 1]")
    need(config.loss.lambda_epoch in LAMBDA_EPOCHS, "loss.lambda_epoch",
         f"one of {LAMBDA_EPOCHS}")
    need(config.loss.posteriors_from in POSTERIORS_FROM, "loss.posteriors_from",
         f"one of {POSTERIORS_FROM}")
    need(config.loss.unimodal_weight >= 0, "loss.unimodal_weight", "a number >= 0")
    need(config.loss.gap_gradient in GAP_GRADIENTS, "loss.gap_gradient",
         f"one of {GAP_GRADIENTS}")
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


def _is_range(value, upper: float) -> bool:
    """A `(low, high)` pair of numbers with `0 < low <= high <= upper`."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        return False
    return 0 < low <= high <= upper


def select_devices(config: ml_collections.ConfigDict):
    devices = jax.local_devices()
    n = config.num_devices or len(devices)
    if not 1 <= n <= len(devices):
        raise UserError(f"config.num_devices={config.num_devices} but this process sees "
                         f"{len(devices)} device(s); use 0 (all) or 1..{len(devices)}")
    return devices[:n]


def open_dataset(config: ml_collections.ConfigDict) -> pipeline.Dataset:
    """The config's prepared dataset, its parameters checked, cached if asked for."""
    data_dir = os.path.expanduser(config.data.data_dir)
    cache_dir = None
    if config.data.cache:
        cache_dir = os.path.expanduser(config.data.cache_dir or
                                       os.path.join(data_dir, "avgmm_cache"))
    return pipeline.load_dataset(config.data.name, data_dir, config.data.num_frames,
                                 dict(config.data.expect), cache_dir=cache_dir)


# --------------------------------------------------------------------------- state
def make_model(config: ml_collections.ConfigDict, meta: pipeline.DatasetMeta,
               axis_name: Optional[str] = AXIS) -> AVClassifier:
    """The two-stream classifier, sized from the config and the dataset's metadata."""
    return AVClassifier(num_classes=meta.num_classes, width=config.model.width,
                        stage_sizes=tuple(config.model.stage_sizes), axis_name=axis_name,
                        dtype=DTYPES[config.model.dtype])


def learning_rate_schedule(config: ml_collections.ConfigDict,
                           steps_per_epoch: int) -> optax.Schedule:
    o = config.optimizer
    if o.lr_schedule == "constant":
        return optax.constant_schedule(o.learning_rate)
    if o.lr_schedule == "step":
        return optax.exponential_decay(o.learning_rate, o.lr_step_epochs * steps_per_epoch,
                                       o.lr_decay, staircase=True)
    return optax.cosine_decay_schedule(o.learning_rate,
                                       max(1, total_epochs(config) * steps_per_epoch))


def make_optimizer(config: ml_collections.ConfigDict,
                   steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD with momentum or Adam, weight decay added to the gradient (as in PyTorch).

    The learning rate is an injected hyper-parameter whose schedule keeps its own step
    count in the optimizer state; `reset_optimizer` decides whether a reset keeps it.
    """
    o = config.optimizer

    def build(learning_rate):
        if o.name == "sgd":
            opt = optax.sgd(learning_rate, momentum=o.momentum or None)
        else:
            opt = optax.adam(learning_rate)
        return optax.chain(optax.add_decayed_weights(o.weight_decay), opt)

    return optax.inject_hyperparams(build)(
        learning_rate=learning_rate_schedule(config, steps_per_epoch))


def reset_optimizer(state: TrainState, reset_schedule: bool = False) -> TrainState:
    """Fresh optimizer moments (zero momentum / Adam moments).

    `reset_schedule=False` keeps the learning-rate schedule where it was: the injected
    hyper-parameters and the schedule's own step count (`hyperparams_states`, which drives
    it; the outer `count` alone does not) are carried over. True re-creates optimizer and
    schedule together, as building both anew in PyTorch would.
    """
    fresh = state.tx.init(state.params)
    if not reset_schedule:
        old = state.opt_state
        fresh = fresh._replace(count=old.count, hyperparams=old.hyperparams,
                               hyperparams_states=old.hyperparams_states)
    return state.replace(opt_state=fresh)


def create_train_state(config: ml_collections.ConfigDict, meta: pipeline.DatasetMeta,
                       tx: optax.GradientTransformation) -> TrainState:
    """Initialized (unreplicated) state; the model never sees the pmap axis here."""
    model = make_model(config, meta, axis_name=None)
    size = config.data.image_size
    audio = jnp.zeros((1,) + tuple(meta.audio_shape), jnp.float32)
    frames = jnp.zeros((1, config.data.num_frames, size, size, 3), jnp.float32)
    variables = jax.jit(functools.partial(model.init, train=False))(
        jax.random.key(config.seed), audio, frames)
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             batch_stats=variables["batch_stats"],
                             gmm=gmm_lib.GMMParams.unfitted(),
                             epoch=jnp.zeros((), jnp.int32),
                             fit_gaps=jnp.zeros((meta.num_examples["train"],), jnp.float32))


# --------------------------------------------------------------------------- steps
def _forward(model, state, params, batch, frames, train: bool):
    variables = {"params": params, "batch_stats": state.batch_stats}
    audio = batch["audio"].astype(jnp.float32)
    if train:
        return model.apply(variables, audio, frames, train=True, mutable=["batch_stats"])
    return model.apply(variables, audio, frames, train=False), None


def compute_loss(loss_name: str, logits, labels, gmm: gmm_lib.GMMParams,
                 lambda_t, loss_config: ml_collections.ConfigDict, posterior_gap=None):
    """Dispatches to the loss of a phase; returns `(loss, terms)`."""
    if loss_name == "concat":
        return losses.concat_loss(logits.fused, labels)
    if loss_name == "warmup":
        return losses.warmup_loss(logits.fused, logits.audio, logits.visual, labels)
    return losses.adaptive_loss(
        logits.fused, logits.audio, logits.visual, labels, gmm,
        alpha=loss_config.alpha, beta=loss_config.beta, gamma=loss_config.gamma,
        lambda_t=lambda_t, use_gmm_weights=loss_config.use_gmm_weights,
        posterior_gap=posterior_gap, unimodal_weight=loss_config.unimodal_weight,
        gap_gradient=loss_config.gap_gradient)


def train_step(state: TrainState, batch: Dict[str, jnp.ndarray], lambda_t: jnp.ndarray, *,
               model: AVClassifier, loss_name: str, config: ml_collections.ConfigDict,
               axis_name: Optional[str] = AXIS) -> Tuple[TrainState, Dict[str, jnp.ndarray]]:
    """One SGD step on this device's shard of the global batch."""
    step_key = jax.random.fold_in(jax.random.key(config.seed), state.step)
    # One key per sample from its position in the global batch: the same augmentation
    # whatever the number of devices.
    keys = jax.vmap(lambda p: jax.random.fold_in(step_key, p))(batch["position"])
    frames = augment.train_frames_from_config(batch["frames"], keys, config.data)
    labels = batch["label"]
    posterior_gap = None
    if config.loss.posteriors_from == "refit":
        posterior_gap = state.fit_gaps[batch["index"]]

    def loss_fn(params):
        logits, mutated = _forward(model, state, params, batch, frames, train=True)
        loss, terms = compute_loss(loss_name, logits, labels, state.gmm, lambda_t, config.loss,
                                   posterior_gap)
        return loss, (terms, mutated["batch_stats"], logits)

    grads, (terms, batch_stats, logits) = jax.grad(loss_fn, has_aux=True)(state.params)
    terms = dict(terms)
    terms["accuracy"] = (logits.fused.argmax(-1) == labels).mean()
    terms["learning_rate"] = state.opt_state.hyperparams["learning_rate"]
    if axis_name is not None:
        grads = jax.lax.pmean(grads, axis_name)
        terms = jax.lax.pmean(terms, axis_name)
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    return new_state, terms


def eval_step(state: TrainState, batch: Dict[str, jnp.ndarray], *, model: AVClassifier,
              image_size: int, axis_name: Optional[str] = AXIS) -> Dict[str, jnp.ndarray]:
    """Sums over the real (unmasked) samples of multimodal/unimodal accuracy, loss, gap."""
    frames = augment.eval_frames(batch["frames"], image_size)
    logits, _ = _forward(model, state, state.params, batch, frames, train=False)
    labels, mask = batch["label"], batch["mask"].astype(jnp.float32)
    gap = losses.modality_gap(logits.audio, logits.visual, labels)
    sums = {
        "count": mask.sum(),
        "correct": ((logits.fused.argmax(-1) == labels) * mask).sum(),
        "correct_audio": ((logits.audio.argmax(-1) == labels) * mask).sum(),
        "correct_visual": ((logits.visual.argmax(-1) == labels) * mask).sum(),
        "ce_fused": (losses.cross_entropy(logits.fused, labels) * mask).sum(),
        "gap": (gap * mask).sum(),
        "gap_sq": (gap * gap * mask).sum(),
    }
    if "imbalanced" in batch:  # ground truth of the data: accuracy on the degraded clips
        flagged = batch["imbalanced"].astype(jnp.float32) * mask
        sums["count_degraded"] = flagged.sum()
        sums["correct_degraded"] = ((logits.fused.argmax(-1) == labels) * flagged).sum()
    return jax.lax.psum(sums, axis_name) if axis_name is not None else sums


def gap_step(state: TrainState, batch: Dict[str, jnp.ndarray], *, model: AVClassifier,
             image_size: int) -> Dict[str, jnp.ndarray]:
    """Per-sample gap and true-class probabilities in inference mode (Algorithm 1, step a)."""
    frames = augment.eval_frames(batch["frames"], image_size)
    logits, _ = _forward(model, state, state.params, batch, frames, train=False)
    labels = batch["label"]
    return {"gap": losses.modality_gap(logits.audio, logits.visual, labels),
            "p_audio": losses.true_class_probability(logits.audio, labels),
            "p_visual": losses.true_class_probability(logits.visual, labels)}


def fit_gathered_gmm(gaps: jnp.ndarray, mask: jnp.ndarray, *, gmm_config,
                     axis_name: str = AXIS) -> gmm_lib.GMMParams:
    """Gathers every device's gaps and fits the GMM on the full array (Algorithm 1, step b)."""
    gaps = jax.lax.all_gather(gaps, axis_name, tiled=True)
    mask = jax.lax.all_gather(mask, axis_name, tiled=True)
    return gmm_lib.fit_gmm(gaps, mask=mask, max_iters=gmm_config.max_iters,
                           tol=gmm_config.tol, reg_covar=gmm_config.reg_covar,
                           select=gmm_config.select)


# --------------------------------------------------------------------------- parallel
class Parallel:
    """The one place that knows about pmap: replication, sharding and compiled steps."""

    def __init__(self, devices, config: ml_collections.ConfigDict, meta):
        self.devices = list(devices)
        self.n = len(self.devices)
        self.mesh = Mesh(np.array(self.devices), (AXIS,))
        self.sharding = NamedSharding(self.mesh, P(AXIS))
        model = make_model(config, meta, axis_name=AXIS)
        pmap = functools.partial(jax.pmap, axis_name=AXIS, devices=self.devices)
        self.train_steps = {
            name: pmap(functools.partial(train_step, model=model, loss_name=name,
                                         config=config), in_axes=(0, 0, None),
                       donate_argnums=(0,))
            for name in ("concat", "warmup", "adaptive")}
        self.eval_step = pmap(functools.partial(eval_step, model=model,
                                                image_size=config.data.image_size))
        self.gap_step = pmap(functools.partial(gap_step, model=model,
                                               image_size=config.data.image_size))
        self.fit_gmm = pmap(functools.partial(fit_gathered_gmm, gmm_config=config.gmm))

    def replicate(self, tree):
        """Host tree -> one copy per device (leading axis), on the pmap sharding."""
        return jax.device_put(
            jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (self.n,) + np.shape(x)),
                         tree), self.sharding)

    @staticmethod
    def unreplicate(tree):
        return jax.device_get(jax.tree.map(lambda x: x[0], tree))

    def shard(self, batch: Dict[str, np.ndarray]):
        """Global host batch `[B, ...]` -> `[n_devices, B / n_devices, ...]` on devices
        (host-only entries such as clip ids stay behind)."""
        return jax.device_put(
            {k: v.reshape((self.n, -1) + v.shape[1:]) for k, v in batch.items()
             if k not in pipeline.HOST_KEYS}, self.sharding)


# --------------------------------------------------------------------------- loop parts
def _say(message: str) -> None:
    """Progress lines for the person running the job (absl INFO is kept for libraries)."""
    progress.say(message)


def _progress(iterable: Iterable, total: int, desc: str):
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True,
                disable=not progress.interactive())


def _log_steps(writer: utils.MetricWriter, epoch: int, phase: str, step: int,
               terms: Dict[str, float], samples_per_second: float) -> None:
    """One `steps.jsonl` record: the mean loss terms, learning rate and samples/s of the
    last `config.log_every_steps` steps (epoch = the epoch in progress, 1-based)."""
    writer.write_steps({"step": step, "epoch": epoch, "phase": phase,
                        "train": dict(terms, samples_per_second=samples_per_second)}, step)


def evaluate(par: Parallel, state, ds: pipeline.Dataset, split: str,
             batch_size: int) -> Dict[str, float]:
    """Accuracy (multimodal, audio-only, visual-only), loss and gap statistics of a split."""
    n_batches = math.ceil(ds.meta.num_examples[split] / batch_size)
    totals = None
    for batch in _progress(ds.eval_batches(split, batch_size), n_batches, f"eval {split}"):
        sums = par.eval_step(state, par.shard(batch))
        sums = jax.tree.map(lambda x: x[0], sums)  # psum'ed: every device holds the total
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    t = {k: float(v) for k, v in jax.device_get(totals).items()}
    count = max(t["count"], 1.0)
    gap_mean = t["gap"] / count
    out = {"accuracy": t["correct"] / count, "accuracy_audio": t["correct_audio"] / count,
           "accuracy_visual": t["correct_visual"] / count, "loss": t["ce_fused"] / count,
           "gap_mean": gap_mean,
           "gap_std": math.sqrt(max(t["gap_sq"] / count - gap_mean**2, 0.0)),
           "count": int(t["count"])}
    if "count_degraded" in t:
        degraded, clean = t["count_degraded"], t["count"] - t["count_degraded"]
        out["accuracy_degraded"] = t["correct_degraded"] / degraded if degraded else None
        out["accuracy_clean"] = ((t["correct"] - t["correct_degraded"]) / clean
                                 if clean else None)
    return out


def collect_gaps(par: Parallel, state, ds: pipeline.Dataset, split: str, batch_size: int):
    """Gaps of every sample of a split in inference mode.

    Returns the device-side `[n_devices, n_local]` gap and mask arrays (for the on-device
    fit) and host arrays in dataset index order (for logs and reports): index, id, label,
    gap, p_audio, p_visual, and the ground-truth `imbalanced` flag where the data has one.
    """
    n = ds.meta.num_examples[split]
    outs, masks, host = [], [], {}
    for batch in _progress(ds.eval_batches(split, batch_size), math.ceil(n / batch_size),
                           f"gaps {split}"):
        sharded = par.shard(batch)
        # Device results stay on the device until the end: no per-batch sync, so reading
        # the next batch overlaps the forward pass.
        outs.append(par.gap_step(state, sharded))
        masks.append(sharded["mask"])
        real = batch["mask"]
        for k in ("index", "id", "label", "imbalanced"):
            if k in batch:
                host.setdefault(k, []).append(batch[k][real])
    gaps = [o["gap"] for o in outs]
    real_rows = np.concatenate([np.asarray(m).reshape(-1) for m in jax.device_get(masks)])
    for k in ("gap", "p_audio", "p_visual"):
        values = jax.device_get([o[k] for o in outs])
        host[k] = [np.concatenate([np.asarray(v).reshape(-1) for v in values])[real_rows]]
    dev_gaps = jnp.concatenate(gaps, axis=1)
    dev_mask = jnp.concatenate(masks, axis=1)
    host = {k: np.concatenate(v) for k, v in host.items()}
    order = np.argsort(host["index"])
    host = {k: v[order] for k, v in host.items()}
    if not np.all(np.isfinite(host["gap"])):
        bad = int((~np.isfinite(host["gap"])).sum())
        raise FloatingPointError(
            f"{bad} modality gap(s) on the {split} split are NaN or inf: the model diverged. "
            "Lower config.optimizer.learning_rate or check the data for NaN.")
    return dev_gaps, dev_mask, host


def gmm_auc(gmm: gmm_lib.GMMParams, host_gaps) -> Optional[float]:
    """ROC AUC of the imbalanced posterior against the ground-truth flag (synthetic data)."""
    if "imbalanced" not in host_gaps:
        return None
    flags = host_gaps["imbalanced"].astype(bool)
    post = np.asarray(gmm_lib.posteriors(gmm, host_gaps["gap"]))[:, 1]
    return utils.roc_auc(post, flags)


def _save_fit(workdir: str, fit_index: int, epoch: int, gmm: gmm_lib.GMMParams, host) -> None:
    """Gap array and fitted parameters of one GMM fit, for plots made after the fact."""
    path = os.path.join(workdir, "gmm_fits")
    os.makedirs(path, exist_ok=True)
    params = {k: np.asarray(v) for k, v in gmm.to_dict().items()}
    arrays = dict(host, id=np.asarray(host["id"], dtype=str))
    tmp = os.path.join(path, f".fit_{fit_index:03d}.npz")
    with open(tmp, "wb") as f:
        np.savez(f, epoch=epoch, **arrays, **{f"gmm_{k}": v for k, v in params.items()})
    os.replace(tmp, os.path.join(path, f"fit_{fit_index:03d}.npz"))


def refit_gmm(par: Parallel, state, ds: pipeline.Dataset, config: ml_collections.ConfigDict,
              workdir: str, fit_index: int, epochs_done: int, meta: Dict[str, Any]):
    """Algorithm 1, steps a-b: the gaps of every training sample in inference mode, a
    GMM fitted to them on the device, and the fit's record (saved under `gmm_fits/`).

    Returns the state with the new mixture (and the gaps it was fitted to) and the record;
    `meta` (checkpointed) gains the fit count, the fit's AUC where the data has a
    ground-truth flag, and whether its labelling was ambiguous.
    """
    start = time.time()
    _say(f"GMM fit {fit_index}: collecting the training gaps and fitting")
    dev_gaps, dev_mask, host_gaps = collect_gaps(par, state, ds, "train",
                                                 config.eval_batch_size)
    fitted = par.fit_gmm(dev_gaps, dev_mask)
    state = state.replace(gmm=fitted,
                          fit_gaps=par.replicate(np.asarray(host_gaps["gap"], np.float32)))
    gmm = par.unreplicate(fitted)
    fit = gmm.to_dict()
    fit.update(fit_index=fit_index, seconds=time.time() - start,
               gap_mean=float(host_gaps["gap"].mean()), gap_std=float(host_gaps["gap"].std()))
    auc = gmm_auc(gmm, host_gaps)
    if auc is not None:
        fit["auc_imbalanced"] = auc
        meta["fit_aucs"] = list(meta.get("fit_aucs", [])) + [auc]
    if fit["fallback"]:
        _say(f"GMM fit {fit_index}: one component (degenerate gaps, or gmm.select=bic "
             "preferred one): every sample counts as balanced")
    elif fit["ambiguous"]:
        _say(f"GMM fit {fit_index}: labelling ambiguous: the gaps do not support two "
             f"components (BIC two {fit['bic_two']:.1f} >= one {fit['bic_one']:.1f}); "
             "gmm.select=bic treats them as balanced")
    _save_fit(workdir, fit_index, epochs_done, gmm, host_gaps)
    meta["gmm_fits"] = fit_index + 1
    meta["ambiguous_fits"] = (list(meta.get("ambiguous_fits", []))
                              + ([fit_index] if fit["ambiguous"] else []))
    return state, fit


def _trace_norm(opt_state) -> float:
    """Norm of the optimizer's moment buffers (0 right after a reset)."""
    leaves = [x for x in jax.tree.leaves(opt_state.inner_state)
              if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating) and x.ndim > 0]
    return float(math.sqrt(sum(float(jnp.sum(jnp.square(x))) for x in leaves)))


# --------------------------------------------------------------------------- main loop
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       fresh: bool = False) -> Dict[str, Any]:
    """Trains `config.method` in `workdir` (resuming what is there) and returns the final
    metrics also written to `workdir/results.json`.

    The workdir is locked for the whole run: a second run on it is refused
    (`utils.WorkdirBusyError`). A diverged epoch raises `utils.DivergedError`, a full disk
    `utils.DiskFullError`, a checkpoint with no intact fallback `utils.CheckpointError`.
    A mistake in the config or the data raises `UserError` before anything is written: a
    workdir that did not exist is not left behind. Ctrl-C raises `RunInterrupted`.
    """
    validate_config(config, len(select_devices(config)))
    workdir = os.path.abspath(os.path.expanduser(workdir))
    existed = os.path.exists(workdir)
    try:
        # Opened before the workdir is touched: a dataset that is not there is refused
        # without leaving an empty workdir behind.
        ds = open_dataset(config)
        check_batch_fits(config, ds.meta.num_examples["train"], len(select_devices(config)))
        with workdir_lib.lock(workdir):
            return _train_and_evaluate(config, workdir, ds, fresh)
    except (UserError, workdir_lib.WorkdirBusyError):
        if not existed:
            _remove_if_unused(workdir)
        raise


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


def _remove_if_unused(workdir: str) -> None:
    """Deletes a workdir this call created if it holds nothing but the lock file."""
    try:
        if set(os.listdir(workdir)) <= {workdir_lib.LOCK_NAME}:
            shutil.rmtree(workdir)
    except OSError:
        pass


def finished_results(config: ml_collections.ConfigDict, workdir: str,
                     last_epoch: int) -> Optional[Dict[str, Any]]:
    """The saved results of a run whose checkpoint `last_epoch` is its final epoch, or
    None where the run is not finished (no results.json, or epochs to go)."""
    path = os.path.join(workdir, "results.json")
    if last_epoch != total_epochs(config) or not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None  # a damaged results file is written again by evaluating


def _delete_for_fresh(workdir: str) -> None:
    """`--fresh`: removes the run's outputs and says which."""
    deleted = []
    for name in ("checkpoints", "metrics.jsonl", "steps.jsonl", "tensorboard", "gmm_fits",
                 "results.json", "config.json"):
        target = os.path.join(workdir, name)
        if os.path.isdir(target):
            shutil.rmtree(target)
        elif os.path.exists(target):
            os.remove(target)
        else:
            continue
        deleted.append(name)
    if deleted:
        _say(f"--fresh: deleted {', '.join(deleted)} from {workdir}")
    else:
        _say(f"--fresh: nothing to delete in {workdir}")


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                        ds: pipeline.Dataset, fresh: bool = False) -> Dict[str, Any]:
    devices = select_devices(config)
    if fresh and os.path.isdir(workdir):
        _delete_for_fresh(workdir)
    os.makedirs(workdir, exist_ok=True)
    utils.check_config(config, workdir)

    # Saved once the config has proven usable: a typo fixed on the next try is no conflict.
    utils.save_config(config, workdir)
    steps_per_epoch = ds.steps_per_epoch(config.batch_size)
    tx = make_optimizer(config, steps_per_epoch)
    par = Parallel(devices, config, ds.meta)
    template = create_train_state(config, ds.meta, tx)
    ckpt = utils.Checkpointer(workdir, keep=config.checkpoint_keep)
    restored = ckpt.resume(template)  # skips damaged checkpoints, repairs a missing best
    meta: Dict[str, Any] = {"best_val_accuracy": -1.0, "best_epoch": -1,
                            "peer_best_test_accuracy": -1.0, "peer_best_epoch": -1,
                            "gmm_fits": 0}
    if restored is not None:
        host_state, meta = restored
        done = finished_results(config, workdir, int(host_state.epoch))
        if done is not None:
            ckpt.close()
            _say(f"{workdir} is finished ({int(host_state.epoch)} epochs); its results "
                 "(from results.json; --fresh trains it again):")
            return done
        _say(f"resuming {workdir} after epoch {int(host_state.epoch)}")
    else:
        host_state = template
    start_epoch = int(host_state.epoch)
    # Records are numbered by epochs completed (1-based); keep those up to the checkpoint.
    utils.truncate_metrics(workdir, start_epoch + 1)
    utils.truncate_metrics(workdir, start_epoch + 1, utils.STEPS_FILE)
    state = par.replicate(host_state)
    del template, host_state

    writer = utils.MetricWriter(workdir)
    n_epochs = total_epochs(config)
    _say(f"{config.method} on {config.data.name} {dict(ds.meta.num_examples)}: "
         f"{n_epochs} epochs of {steps_per_epoch} steps, {len(devices)} device(s), "
         f"workdir {workdir}")
    if ds.meta.split_source:
        _say(f"split: {ds.meta.split_source}")
    positions = np.arange(config.batch_size, dtype=np.int32)
    saved_epoch = start_epoch
    compiled = set()
    clock = progress.RunClock(n_epochs * steps_per_epoch, start_epoch * steps_per_epoch)
    try:
        for epoch in range(start_epoch, n_epochs):
            loss_name, adaptive_step, e = epoch_phase(config, epoch)
            # Epochs are counted as "epochs completed" (1-based) in every output.
            record: Dict[str, Any] = {"epoch": epoch + 1, "phase": loss_name,
                                      "adaptive_step": adaptive_step}
            if (loss_name == "adaptive" and e == 0
                    and config.optimizer.reset_between_phases):
                host = reset_optimizer(par.unreplicate(state),
                                       config.optimizer.reset_schedule)
                record["optimizer_reset"] = {"moment_norm": _trace_norm(host.opt_state)}
                state = par.replicate(host)
            if loss_name == "adaptive" and e % config.schedule.epochs_per_step == 0:
                state, record["gmm_fit"] = refit_gmm(par, state, ds, config, workdir,
                                                     adaptive_step, epoch, meta)
            lambda_t = np.float32(config.loss.lambda_decay ** lambda_exponent(config, epoch))
            step_fn = par.train_steps[loss_name]
            note = None
            if loss_name not in compiled:
                compiled.add(loss_name)
                note = (f"compiling the {loss_name} train step (the first step of a phase "
                        "waits for it)")
            state, terms, samples_per_second = progress.train_epoch(
                step_fn, state, ds.train_batches(config.batch_size, epoch, config.seed,
                                                 config.data.prefetch),
                par.shard, lambda_t, positions=positions, steps=steps_per_epoch,
                batch_size=config.batch_size, desc=f"epoch {epoch + 1}/{n_epochs}",
                log_every=config.log_every_steps, first_step=epoch * steps_per_epoch,
                on_log=functools.partial(_log_steps, writer, epoch + 1, loss_name),
                clock=clock, compile_note=note)
            state = state.replace(epoch=state.epoch + 1)
            record["train"] = {k: float(np.mean([t[k][0] for t in terms])) for k in terms[0]}
            # From the first step's completion: compilation is not in it.
            record["train"]["samples_per_second"] = samples_per_second
            # Before anything of the epoch is evaluated, written or saved.
            workdir_lib.check_finite(epoch + 1, (state.params, state.batch_stats,
                                                 state.opt_state),
                                     record["train"]["loss"], ckpt.last_good())
            record["lambda_t"] = float(lambda_t) if loss_name == "adaptive" else None
            record["gmm"] = par.unreplicate(state.gmm).to_dict()
            if epoch == start_epoch:
                _say("evaluating on the validation and test splits (compiles once)")
            record["val"] = evaluate(par, state, ds, "validation", config.eval_batch_size)
            record["test"] = evaluate(par, state, ds, "test", config.eval_batch_size)
            best = record["val"]["accuracy"] > meta["best_val_accuracy"]
            if best:
                meta.update(best_val_accuracy=record["val"]["accuracy"], best_epoch=epoch + 1)
            if record["test"]["accuracy"] > meta["peer_best_test_accuracy"]:
                meta.update(peer_best_test_accuracy=record["test"]["accuracy"],
                            peer_best_epoch=epoch + 1)
            writer.write(record, step=epoch + 1)
            gmm_note = ""
            if "gmm_fit" in record:
                f = record["gmm_fit"]
                gmm_note = (f" | GMM fit {adaptive_step}: pi_1 {f['pi_1']:.3f} "
                            f"mu_0 {f['mu_0']:+.3f} mu_1 {f['mu_1']:+.3f}")
            _say(f"epoch {epoch + 1}/{n_epochs} [{loss_name}] loss "
                 f"{record['train']['loss']:.4f} | val acc {record['val']['accuracy']:.4f} "
                 f"(audio {record['val']['accuracy_audio']:.4f}, visual "
                 f"{record['val']['accuracy_visual']:.4f}) | "
                 f"{record['train']['samples_per_second']:.0f} samples/s{gmm_note}")
            ckpt.save(epoch + 1, par.unreplicate(state), meta, best=best)
            saved_epoch = epoch + 1
        ckpt.wait()
        results = _final_results(config, par, state, ds, ckpt, meta, workdir)
    except KeyboardInterrupt:
        ckpt.wait()  # the last epoch's checkpoint is finished before the process ends
        where = (f"after epoch {saved_epoch}" if saved_epoch else
                 "before the first epoch was saved")
        raise RunInterrupted(f"interrupted {where}; run the same command to resume") from None
    finally:
        ckpt.close()
        writer.close()
    return results


def _final_results(config, par: Parallel, state, ds, ckpt: utils.Checkpointer, meta,
                   workdir: str) -> Dict[str, Any]:
    """Headline (best-validation checkpoint), last epoch, and the peers' protocol."""
    bs = config.eval_batch_size
    _say("final evaluation: the last and the best-validation checkpoints on the test split")
    last = evaluate(par, state, ds, "test", bs)
    best_state, _ = ckpt.restore(par.unreplicate(state), which="best")
    best = evaluate(par, par.replicate(best_state), ds, "test", bs)
    results = {
        "method": config.method,
        "dataset": config.data.name,
        # How the dataset's train/test split was made (standard files or a seeded draw).
        "split_source": ds.meta.split_source,
        "epochs": total_epochs(config),
        "test_accuracy": best["accuracy"],  # headline: best-validation checkpoint
        "test_accuracy_audio": best["accuracy_audio"],
        "test_accuracy_visual": best["accuracy_visual"],
        "best_val_accuracy": meta["best_val_accuracy"],
        "best_epoch": meta["best_epoch"],
        "last_epoch": {k: last[k] for k in ("accuracy", "accuracy_audio", "accuracy_visual",
                                            "accuracy_degraded", "accuracy_clean")
                       if k in last},
        # Every public peer picks its epoch on the test set; only comparable with theirs.
        "peer_protocol_best_test_accuracy": meta["peer_best_test_accuracy"],
        "peer_protocol_best_epoch": meta["peer_best_epoch"],
        "gmm_fits": meta["gmm_fits"],
        # Fits whose gaps did not support two components (labelling arbitrary).
        "gmm_ambiguous_fits": list(meta.get("ambiguous_fits", [])),
        "num_devices": par.n,
    }
    if ds.meta.has_imbalance_flag:
        results["test_accuracy_degraded"] = best["accuracy_degraded"]
        results["test_accuracy_clean"] = best["accuracy_clean"]
        # How well each fit's imbalanced posterior found the degraded training clips.
        results["gmm_fit_aucs"] = list(meta.get("fit_aucs", []))
        # How well a GMM on the final model's training gaps finds the degraded clips.
        dev_gaps, dev_mask, host = collect_gaps(par, state, ds, "train", bs)
        gmm = par.unreplicate(par.fit_gmm(dev_gaps, dev_mask))
        results["final_gmm"] = gmm.to_dict()
        results["final_gmm_auc_imbalanced"] = gmm_auc(gmm, host)
    results = utils.to_python(results)
    utils.write_json(os.path.join(workdir, "results.json"), results)
    return results
