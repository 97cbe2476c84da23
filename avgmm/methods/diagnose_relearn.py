"""Diagnosing and Re-learning (Wei, Li, Feng, Hu, "Diagnosing and Re-learning for Balanced
Multimodal Learning", ECCV 2024).

Training is the fused cross entropy. Every `reinit_fraction` of the budget (at most
`reinit_num` times) each modality's learning state is diagnosed from the separability of its
representation: its pooled features of the training split and of the held-out validation
split are each clustered by k-means into as many clusters as classes (after min-max
scaling to [-1, 1]), and the purity of each clustering (the share of samples whose
cluster's majority class is their own) is measured. A modality whose training purity
runs ahead of its validation purity is over-trained; its encoder is softly re-initialized:

    w_m = tanh(lambda * |P_train^m - P_val^m|),   theta_m <- w_m theta_m^0 + (1 - w_m) theta_m,

with `theta_m^0` the encoder's parameters at the start of the run. BatchNorm statistics,
the head and the optimizer state are left as they are.

Read: GeWu-Lab/Diagnosing_Relearning_ECCV2024, code/ours.py (`purity_score`,
`reinit_score`, `reinit`, `main`), code/script/ours.sh, code/dataset/av_dataset.py; and
GeWu-Lab/BalanceBenchmark, balancemm/trainer/ReLearning_trainer.py and
configs/trainer_config.yaml. See docs/methods.md.
"""

import functools
import math
import time
from typing import Any, Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from avgmm.data import augment
from avgmm.errors import UserError
from avgmm.methods import base, concat

MODALITIES = ("audio", "visual")
# sklearn.cluster.KMeans defaults, which the authors' `KMeans(n_clusters, random_state=0)`
# runs with.
KMEANS_MAX_ITER = 300
KMEANS_TOL = 1e-4


# ---------------------------------------------------------------------- the diagnosis
def minmax_scale(x: jnp.ndarray) -> jnp.ndarray:
    """Each feature mapped linearly onto [-1, 1] over the rows (sklearn's
    `MinMaxScaler(feature_range=(-1, 1))`; a constant feature becomes -1)."""
    lo, hi = x.min(axis=0), x.max(axis=0)
    span = jnp.where(hi > lo, hi - lo, 1.0)
    return (x - lo) * (2.0 / span) - 1.0


def squared_distances(x: jnp.ndarray, centers: jnp.ndarray) -> jnp.ndarray:
    """`[N, K]` squared Euclidean distances, clipped at 0 against rounding."""
    d = (jnp.sum(x * x, axis=1)[:, None] - 2.0 * x @ centers.T
         + jnp.sum(centers * centers, axis=1)[None, :])
    return jnp.maximum(d, 0.0)


def kmeans_plusplus(key: jax.Array, x: jnp.ndarray, k: int) -> jnp.ndarray:
    """`[k, D]` initial centers by greedy k-means++ (sklearn's `_kmeans_plusplus`): the
    first uniformly at random, each next one the best (lowest potential) of
    `2 + int(log k)` candidates drawn with probability proportional to the squared
    distance to the nearest center so far."""
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    key, first = jax.random.split(key)
    c0 = x[jax.random.randint(first, (), 0, n)]
    closest = squared_distances(x, c0[None])[:, 0]
    centers = jnp.zeros((k,) + x.shape[1:], x.dtype).at[0].set(c0)

    def add_center(c, carry):
        centers, closest = carry
        u = jax.random.uniform(jax.random.fold_in(key, c), (trials,)) * closest.sum()
        ids = jnp.minimum(jnp.searchsorted(jnp.cumsum(closest), u), n - 1)
        d = jnp.minimum(closest[None, :], squared_distances(x, x[ids]).T)  # [trials, N]
        best = jnp.argmin(d.sum(axis=1))
        return centers.at[c].set(x[ids[best]]), d[best]

    centers, _ = jax.lax.fori_loop(1, k, add_center, (centers, closest))
    return centers


def _lloyd_step(x: jnp.ndarray, centers: jnp.ndarray):
    """Assignments to `centers` and the means of the clusters they make; an empty
    cluster is moved to one of the points farthest from their centers (as sklearn's
    `_relocate_empty_clusters_dense`, without taking the point out of its old cluster)."""
    k = centers.shape[0]
    d = squared_distances(x, centers)
    labels = jnp.argmin(d, axis=1)
    onehot = jax.nn.one_hot(labels, k, dtype=x.dtype)
    counts = onehot.sum(axis=0)
    means = (onehot.T @ x) / jnp.maximum(counts, 1.0)[:, None]
    empty = counts == 0
    _, far = jax.lax.top_k(jnp.min(d, axis=1), k)  # farthest points first
    rank = jnp.clip(jnp.cumsum(empty) - 1, 0, k - 1)
    return labels, jnp.where(empty[:, None], x[far[rank]], means)


def kmeans(key: jax.Array, x: jnp.ndarray, k: int, inits: int = 1,
           max_iter: int = KMEANS_MAX_ITER, tol: float = KMEANS_TOL) -> jnp.ndarray:
    """Cluster index `[N]` of every row of `x` by Lloyd's k-means from `inits` greedy
    k-means++ starts, keeping the lowest inertia, as `sklearn.cluster.KMeans`: it stops
    when no assignment changes or the centers move by at most `tol` times the mean
    feature variance (summed squared shift), after at most `max_iter` iterations."""
    tol_abs = tol * jnp.mean(jnp.var(x, axis=0))

    def one(key):
        def cond(carry):
            i, _, _, done = carry
            return (i < max_iter) & ~done

        def body(carry):
            i, centers, old_labels, _ = carry
            labels, new = _lloyd_step(x, centers)
            shift = jnp.sum(jnp.square(new - centers))
            return i + 1, new, labels, jnp.all(labels == old_labels) | (shift <= tol_abs)

        start = kmeans_plusplus(key, x, k)
        no_labels = jnp.full((x.shape[0],), -1, jnp.int32)
        _, centers, _, _ = jax.lax.while_loop(cond, body, (0, start, no_labels, False))
        d = squared_distances(x, centers)
        labels = jnp.argmin(d, axis=1).astype(jnp.int32)
        return labels, jnp.min(d, axis=1).sum()

    labels, inertia = jax.vmap(one)(jax.random.split(key, inits))
    return labels[jnp.argmin(inertia)]


def purity(labels: jnp.ndarray, clusters: jnp.ndarray, num_classes: int,
           num_clusters: int) -> jnp.ndarray:
    """Share of samples whose cluster's most frequent class is their own class (the
    authors' `purity_score`)."""
    counts = (jax.nn.one_hot(clusters, num_clusters).T
              @ jax.nn.one_hot(labels, num_classes))  # [clusters, classes]
    return counts.max(axis=1).sum() / labels.shape[0]


def feature_purity(key: jax.Array, features: jnp.ndarray, labels: jnp.ndarray,
                   num_classes: int, inits: int) -> jnp.ndarray:
    """Purity of the k-means clustering (as many clusters as classes) of min-max scaled
    features: the separability of one modality's representation on one split."""
    clusters = kmeans(key, minmax_scale(features.astype(jnp.float32)), num_classes, inits)
    return purity(labels, clusters, num_classes, num_classes)


def relearn_weight(purity_train, purity_val, move_lambda: float):
    """Re-initialization strength `tanh(lambda |P_train - P_val|)` (the authors'
    `reinit_score`)."""
    return jnp.tanh(move_lambda * jnp.abs(purity_train - purity_val))


def blend_toward_init(params: Any, init: Any, weight) -> Any:
    """`weight * init + (1 - weight) * params`, leaf by leaf (the authors' `reinit`)."""
    return jax.tree.map(lambda p, p0: weight * p0 + (1.0 - weight) * p, params, init)


# ---------------------------------------------------------------------- the method
class DiagnoseRelearn(concat.Concat):
    """Fused cross entropy; every `reinit_fraction` of the budget each encoder is moved
    towards its initialization by its diagnosed strength."""

    name = "diagnose_relearn"
    label = "D&R"
    # The re-initialization's strength: the authors' lambda 3 (ours.sh, argparse default,
    # BalanceBenchmark), then 1, a third of it: every re-initialization undoes training
    # that a short run has little time to redo.
    tuning = {"diagnose_relearn.move_lambda": (3.0, 1.0)}

    @classmethod
    def defaults(cls):
        c = ml_collections.ConfigDict()
        # code/script/ours.sh (= argparse defaults): --move_lambda 3 --reinit_epoch 20
        # --reinit_num 3 (of --epochs 90). BalanceBenchmark: 3, 15, 2 (of 30 epochs).
        c.move_lambda = 3.0
        # The authors' period, 20 of their 90 epochs, as a share of the budget (2 of the
        # demo's 10 epochs, 22 of 100); their 3 re-initializations then end two thirds
        # into the run at any budget, as theirs do (after epochs 20, 40, 60 of 90).
        c.reinit_fraction = 20 / 90
        c.reinit_num = 3
        # k-means restarts: sklearn >= 1.4 (BalanceBenchmark pins 1.4.2) runs one
        # k-means++ start by default (n_init="auto"); sklearn < 1.4 ran 10.
        c.kmeans_inits = 1
        return c

    @classmethod
    def validate(cls, config, need):
        c = config[cls.name]
        need(math.isfinite(c.move_lambda) and c.move_lambda >= 0, f"{cls.name}.move_lambda",
             "a finite number >= 0")
        base.need_fraction(need, c.reinit_fraction, f"{cls.name}.reinit_fraction")
        need(c.reinit_fraction > 0, f"{cls.name}.reinit_fraction",
             "a share of config.epochs in (0, 1)")
        need(c.reinit_num >= 0, f"{cls.name}.reinit_num", "an integer >= 0")
        need(c.kmeans_inits >= 1, f"{cls.name}.kmeans_inits", "an integer >= 1")

    # ------------------------------------------------------------------ schedule
    def period(self) -> int:
        """Epochs between re-initializations (at least 1)."""
        return self.epochs_of(self.config[self.name].reinit_fraction)

    def reinit_index(self, epoch: int) -> int:
        """1-based count of the re-initialization that follows the 0-based `epoch`, or 0
        when none does: the authors' `epoch % reinit_epoch == 0 and epoch > 0` with the
        scaled `period()`, at most `reinit_num` times."""
        p = self.period()
        if epoch > 0 and epoch % p == 0 and epoch // p <= self.config[self.name].reinit_num:
            return epoch // p
        return 0

    def describe(self, epoch):
        return {"reinitialized": epoch > 0 and self.reinit_index(epoch - 1) > 0}

    # ------------------------------------------------------------------ hooks
    def on_epoch_start(self, run, state, epoch):
        index = self.reinit_index(epoch - 1) if epoch > 0 else 0
        if index == 0:
            return state, {}
        start = time.time()
        c = self.config[self.name]
        init_params = jax.tree.map(np.asarray, run.initial_state.params)
        key = jax.random.fold_in(jax.random.key(self.config.seed), index)
        k = run.ds.meta.num_classes
        purities: Dict[str, float] = {}
        for s, split in enumerate(("train", "validation")):
            rows = feature_rows(run, state, split)
            if rows["label"].shape[0] < k:
                raise UserError(f"{self.name} clusters the {split} split into "
                                f"{k} clusters but it has {rows['label'].shape[0]} samples")
            for m, modality in enumerate(MODALITIES):
                purities[f"{split}_{modality}"] = float(_feature_purity_jit(
                    jax.random.fold_in(key, 2 * s + m), rows[modality], rows["label"],
                    k, c.kmeans_inits))
        host_params = run.par.fetch(state.params)
        params, weights = dict(host_params), {}
        for modality in MODALITIES:
            w = float(relearn_weight(purities[f"train_{modality}"],
                                     purities[f"validation_{modality}"], c.move_lambda))
            enc = f"{modality}_encoder"
            params[enc] = jax.tree.map(np.asarray, blend_toward_init(
                host_params[enc], init_params[enc], np.float32(w)))
            weights[modality] = w
        state = state.replace(params=run.par.replicate(params))
        record = {"reinit": index, "seconds": time.time() - start,
                  **{f"purity_{k_}": v for k_, v in purities.items()},
                  **{f"weight_{m}": w for m, w in weights.items()}}
        return state, {"relearn": record}


_feature_purity_jit = jax.jit(feature_purity, static_argnums=(3, 4))


def pooled_features(state, batch, *, model, image_size: int) -> Dict[str, jnp.ndarray]:
    """Inference-mode pooled features `audio`, `visual` `[B, D]` of a shard (evaluation
    frames)."""
    frames = augment.eval_frames(batch["frames"], image_size)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    phi_a, phi_v = model.apply(variables, batch["audio"].astype(jnp.float32), frames, False,
                               method=model.features)
    return {"audio": phi_a.astype(jnp.float32), "visual": phi_v.astype(jnp.float32)}


def feature_rows(run: base.RunContext, state, split: str) -> Dict[str, np.ndarray]:
    """The pooled features `audio`, `visual` `[N, D]` and the `label` `[N]` of every
    sample of `split`, in dataset index order, on every process."""
    fn = functools.partial(pooled_features, model=run.par.model,
                           image_size=run.config.data.image_size)
    _, host = run.par.sample_rows("relearn_features", fn, state, run.ds, split,
                                  run.config.eval_batch_size)
    return {k: host[k] for k in (*MODALITIES, "label")}
