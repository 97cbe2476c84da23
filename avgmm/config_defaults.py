"""The defaults every config starts from: the paper's method and optimizer settings.

The config files in `configs/` (`crema.py`, `ave.py`, `demo.py`, ...) call `get_config()`
here and change a few fields. Every field can be overridden on the command line, e.g.
`--config.loss.beta=0`; `--print_config` shows each field with the comment above it here.
"""

from typing import Any

import ml_collections

from avgmm import methods


# What converters record about their preprocessing (data_prep.features.AudioParams, the
# stored frames and the split), with the type a command-line value is parsed as.
EXPECT_FIELDS = {
    "sample_rate": int, "clip_seconds": float, "n_fft": int, "hop_length": int,
    "center": bool, "normalization": str, "spectrogram_recipe": str,
    "num_frames": int, "frame_size": int, "split_source": str,
    # AV-MNIST's benchmark setting (noise, graded, two_sided, none).
    "setting": str,
}


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    # A registered method (avgmm/methods): concat (baseline), warmup_only (eq. 7
    # throughout), adaptive (the paper's method), or one of the balancing baselines.
    config.method = "adaptive"
    # The epoch budget: every method trains this many epochs, so that a comparison gives
    # each the same budget (the adaptive method's schedule below must add up to it).
    config.epochs = 100
    # The experiment variant a sweep ran this run as (avgmm.experiments; "" for a plain
    # run): the report and the study print its label. Not part of the computation.
    config.variant = ""

    config.data = ml_collections.ConfigDict()
    config.data.name = "avsynth/default"  # tfds name of the prepared dataset
    config.data.data_dir = "~/avgmm_data"
    config.data.num_frames = 1  # frames per clip fed to the visual encoder
    config.data.image_size = 224
    # Training-time frame augmentation (on the device): a random resized crop covering
    # `crop_scale` of the frame's area with an aspect ratio in `crop_ratio`, resized to
    # image_size, then a left-right flip with probability 1/2. augment=False uses the
    # evaluation resize instead. The defaults are the ImageNet recipe of the benchmarks'
    # reference code; digits (configs/av_mnist.py) want a milder crop and no flip.
    config.data.augment = True
    config.data.crop_scale = (0.08, 1.0)
    config.data.crop_ratio = (3 / 4, 4 / 3)
    config.data.flip = True
    config.data.prefetch = 2  # host batches read ahead in a background thread
    # Decode each split once into .npy memory maps (see avgmm/data/pipeline.py): tfds
    # record decoding alone cannot feed a GPU. cache_dir "" = <data_dir>/avgmm_cache.
    config.data.cache = True
    config.data.cache_dir = ""
    # Cache only splits whose decoded size is at most this many GB; larger ones (VGGSound's
    # train split, about 100 GB) stream from the prepared records rather than doubling the
    # dataset on disk. 0: never cache; inf: always. Checked by avgmm.data.decoded_cache
    # (cache_limit_gb), which also holds the default (CACHE_MAX_GB).
    config.data.cache_max_gb = 32.0
    # Preparation parameters the dataset must have been built with; the loader refuses a
    # dataset that recorded something else. None = not checked. Every config has every
    # field, so any of them can be set on the command line, e.g.
    # --config.data.expect.sample_rate=22050.
    config.data.expect = ml_collections.ConfigDict()
    for field, kind in EXPECT_FIELDS.items():
        config.data.expect[field] = ml_collections.FieldReference(None, field_type=kind)

    config.model = ml_collections.ConfigDict()
    config.model.width = 64  # ResNet-18 widths 64/128/256/512
    config.model.stage_sizes = (2, 2, 2, 2)
    config.model.dtype = "float32"  # or bfloat16 (compute only; params stay float32)

    # Adaptive loss, eq. 10.
    config.loss = ml_collections.ConfigDict()
    config.loss.alpha = 1.0
    config.loss.beta = 1.0
    config.loss.gamma = 1.0
    config.loss.lambda_decay = 0.96  # lambda_t = 0.96 ** e (paper)
    config.loss.use_gmm_weights = True  # False: the "w/o w" ablation of Table 2
    # The e of lambda_t = 0.96 ** e, a reading the paper leaves open: adaptive (adaptive
    # epochs completed, across steps) | step (Algorithm 1 literally: restarts at 0 with
    # every GMM refit) | global (every epoch completed, warm-up included).
    config.loss.lambda_epoch = "adaptive"
    # Gap that the posteriors w_bal, w_imb are computed from: batch (the sample's current,
    # train-mode gap) | refit (its inference-mode gap collected for the last GMM fit).
    config.loss.posteriors_from = "batch"
    # Ours, not the paper's eq. 10: w > 0 adds w * (CE(l_a) + CE(l_v)) to the adaptive loss.
    config.loss.unimodal_weight = 0.0
    # Ours: both (eq. 10: the gap terms' gradient reaches both modalities) | weaker (only
    # the modality with the lower true-class probability, which they can only raise).
    config.loss.gap_gradient = "both"

    # Algorithm 1. The paper does not state these; ours split the 100 epochs into a
    # warm-up long enough for the unimodal branches to converge and 7 adaptive steps;
    # warmup_epochs + adaptive_steps * epochs_per_step (+ adaptive.finetune_epochs) must
    # equal config.epochs.
    config.schedule = ml_collections.ConfigDict()
    config.schedule.warmup_epochs = 30
    config.schedule.adaptive_steps = 7
    config.schedule.epochs_per_step = 10

    config.gmm = ml_collections.ConfigDict()
    config.gmm.max_iters = 100
    config.gmm.tol = 1e-3
    config.gmm.reg_covar = 1e-6
    # two: always two components (a fit to unimodal gaps is flagged ambiguous) | bic: keep
    # two only where their BIC beats one Gaussian's, else every sample is balanced.
    config.gmm.select = "two"
    # Mixture components: 2 (the paper: balanced, imbalanced) | 3 (balanced, audio-dominant,
    # visual-dominant; avgmm/gmm_k.py). With 3, select=two keeps three unless one collapses.
    config.gmm.components = 2

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "sgd"  # sgd (momentum) or adam
    config.optimizer.learning_rate = 2e-3  # paper
    config.optimizer.momentum = 0.9  # paper
    # Not stated in the paper; 1e-4 is what the public reference code of this benchmark
    # (OGM-GE) uses.
    config.optimizer.weight_decay = 1e-4
    # constant | step | cosine. step: multiply by lr_decay every lr_step_epochs epochs
    # (the reference code's StepLR(70, 0.1)).
    config.optimizer.lr_schedule = "step"
    config.optimizer.lr_step_epochs = 70
    config.optimizer.lr_decay = 0.1
    # Re-initialize the optimizer state when the adaptive phase starts (paper §4.5).
    config.optimizer.reset_between_phases = True
    # What the reset re-creates: False, the moments only (the schedule keeps its position);
    # True, optimizer and learning-rate schedule both, as re-creating both in PyTorch does.
    config.optimizer.reset_schedule = False

    config.batch_size = 64  # global, over all devices (paper)
    config.eval_batch_size = 64
    config.num_devices = 0  # 0: all local devices
    config.log_every_steps = 50
    # What every evaluation measures (avgmm/evaluators; python -m avgmm.evaluators lists
    # them): per split every epoch, and once on the final model. `accuracy` is required
    # (it selects the best-validation checkpoint); evaluators whose data is missing (e.g.
    # the degraded clips of data without a ground-truth flag) are skipped.
    config.evaluators = ("accuracy", "modality_accuracy", "gap", "degraded", "degradation",
                         "gmm_auc", "human_auc", "predictions")
    # Evaluate (validation and test splits) every this many epochs, and always the last
    # one; the best-validation checkpoint is the best of the evaluated epochs. 1: every
    # epoch (the paper's protocol); larger values save evaluation time in long runs.
    config.eval_every_epochs = 1
    config.checkpoint_keep = 2
    # Persistent XLA compilation cache (avgmm/compile_cache.py): auto = ~/.cache/avgmm/xla
    # (or $AVGMM_COMPILATION_CACHE_DIR), a path, or "" for none. A restart loads its
    # compiled steps instead of compiling them again.
    config.compilation_cache_dir = "auto"
    # Compile every step function the run will use (each phase's train step, evaluation,
    # the per-sample pass and the GMM fit where used) at the start, in background threads
    # beside the model's initialization (avgmm/compile_ahead.py); False: each compiles at
    # its first use, one after another.
    config.precompile_phases = True
    # Each registered method's own hyper-parameters, as config.<method name>.
    methods.add_defaults(config)
    return config


# Fields added after runs were saved, with the value those runs ran as: a workdir whose
# config.json lacks one resumes when the config has that value.
ADDED_FIELDS = {"eval_every_epochs": 1, "gmm.components": 2,
                "gmm_guided.direction": "gap_sign"}


def added_field_ok(field: str, value: Any) -> bool:
    """Whether a field missing from a saved run's config.json may take `value` on resume:
    it was added after such runs were saved and `value` is what they ran as."""
    return field in ADDED_FIELDS and ADDED_FIELDS[field] == value


def use_study_loss(config: ml_collections.ConfigDict) -> None:
    """The adaptive loss our reproduction study supports (docs/study.md).

    Eq. 10 as printed drops the warm-up's unimodal cross-entropies and lets the gap terms
    lower the stronger modality; keeping the unimodal terms and sending the gap terms'
    gradient to the weaker modality only (both ours) holds both unimodal accuracies up.
    `--config.loss.unimodal_weight=0 --config.loss.gap_gradient=both` is the paper's loss.
    """
    config.loss.unimodal_weight = 1.0
    config.loss.gap_gradient = "weaker"
