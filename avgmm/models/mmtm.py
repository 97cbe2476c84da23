"""The two-stream classifier with multimodal transfer modules (MMTM; Joze, Shaban, Iuzzolino,
Koishida, CVPR 2020) between the encoders' stages: the model of the greedy-learning paper
(Wu, Jastrzebski, Cho, Geras, ICML 2022), which `avgmm.methods.greedy` trains.

After every stage but the first, an MMTM squeezes each stream's feature map to its channel
means, maps their concatenation through one shared layer (`fc_squeeze`, ReLU) and one
layer per modality (`fc_audio`, `fc_visual`, sigmoid) to per-channel gates, and multiplies
each stream by its gates: the cross-modal "bypass" through which one modality's features
shape the other's. Each MMTM keeps the running mean of each modality's gates over all
training steps (in `batch_stats`); in a re-balancing step the caring modality's gates are
replaced by that mean, which cuts the flow from the other modality into its stream.
Each stream ends in its own linear classifier; the prediction is their mean
(late fusion, as the reference's `(x_0 + x_1) / 2`).

Reference: nyukat/greedy_multimodal_learning, `src/model.py` (`MMTM_MVCNN`),
`src/balanced_mmtm.py` (`MMTM_mitigate`).
"""

from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from avgmm.models.av_classifier import AVLogits
from avgmm.models.resnet import BasicBlock, conv_init

# `caring` values: which modality's gates are replaced by their running mean.
NONE, AUDIO, VISUAL = 0, 1, 2


class Stem(nn.Module):
    """The ResNet stem: 7x7/2 convolution, BatchNorm, ReLU, 3x3/2 max-pool."""

    width: int
    axis_name: Optional[str] = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        x = nn.Conv(self.width, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], use_bias=False,
                    kernel_init=conv_init, dtype=self.dtype, name="conv1")(x.astype(self.dtype))
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         axis_name=self.axis_name, dtype=self.dtype, name="bn1")(x)
        return nn.max_pool(nn.relu(x), (3, 3), strides=(2, 2), padding=[(1, 1), (1, 1)])


class Stage(nn.Module):
    """One ResNet stage: `num_blocks` BasicBlocks, the first with stride `strides`."""

    features: int
    num_blocks: int
    strides: int
    axis_name: Optional[str] = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        for block in range(self.num_blocks):
            x = BasicBlock(features=self.features, strides=self.strides if block == 0 else 1,
                           axis_name=self.axis_name, dtype=self.dtype,
                           name=f"block{block}")(x, train)
        return x


class StagedTrunk(nn.Module):
    """`ResNetTrunk`'s layers (same shapes and initialization) callable stage by stage."""

    stage_sizes: Sequence[int]
    width: int
    axis_name: Optional[str] = None
    dtype: Any = jnp.float32

    def setup(self):
        self.stem = Stem(self.width, axis_name=self.axis_name, dtype=self.dtype)
        self.stages = [Stage(features=self.width * 2**s, num_blocks=n,
                             strides=2 if s > 0 else 1, axis_name=self.axis_name,
                             dtype=self.dtype)
                       for s, n in enumerate(self.stage_sizes)]

    def __call__(self, x: jnp.ndarray, train: bool, stage: int) -> jnp.ndarray:
        """Stage `stage` (-1: the stem) applied to `x`."""
        return self.stem(x, train) if stage < 0 else self.stages[stage](x, train)


class MMTM(nn.Module):
    """One multimodal transfer module between two streams (see the module docstring)."""

    ratio: int = 4
    axis_name: Optional[str] = None

    @nn.compact
    def __call__(self, x_a: jnp.ndarray, x_v: jnp.ndarray, clips: int, train: bool,
                 caring: Any) -> Tuple[jnp.ndarray, jnp.ndarray]:
        """Gated `(x_a [B, H, W, Ca], x_v [B * Tv, H', W', Cv])`; the visual gates of a
        clip are shared by its `Tv` frames (squeezed over time and space)."""
        c_a, c_v = x_a.shape[-1], x_v.shape[-1]
        frames = x_v.reshape((clips, -1) + x_v.shape[1:])
        squeeze = jnp.concatenate([x_a.astype(jnp.float32).mean(axis=(1, 2)),
                                   frames.astype(jnp.float32).mean(axis=(1, 2, 3))], -1)
        hidden = nn.relu(nn.Dense(int(2 * (c_a + c_v) / self.ratio), name="fc_squeeze")(squeeze))
        gate_a = nn.sigmoid(nn.Dense(c_a, name="fc_audio")(hidden))
        gate_v = nn.sigmoid(nn.Dense(c_v, name="fc_visual")(hidden))
        avg_a = self.variable("batch_stats", "avg_audio", jnp.zeros, (c_a,), jnp.float32)
        avg_v = self.variable("batch_stats", "avg_visual", jnp.zeros, (c_v,), jnp.float32)
        count = self.variable("batch_stats", "count", jnp.zeros, (), jnp.float32)
        if train and not self.is_initializing():
            # The mean gate over all training steps so far, this one included (the
            # reference updates it before the gates are used).
            means = jax.lax.stop_gradient((gate_a.mean(0), gate_v.mean(0)))
            if self.axis_name is not None:
                means = jax.lax.pmean(means, self.axis_name)
            n = count.value
            avg_a.value = (means[0] + avg_a.value * n) / (n + 1.0)
            avg_v.value = (means[1] + avg_v.value * n) / (n + 1.0)
            count.value = n + 1.0
        gate_a = jnp.where(caring == AUDIO, avg_a.value[None, :], gate_a)
        gate_v = jnp.where(caring == VISUAL, avg_v.value[None, :], gate_v)
        gated_v = frames * gate_v[:, None, None, None, :].astype(x_v.dtype)
        return x_a * gate_a[:, None, None, :].astype(x_a.dtype), gated_v.reshape(x_v.shape)


class LateFusionHead(nn.Module):
    """A linear classifier per modality; the prediction is the mean of their logits."""

    num_classes: int

    @nn.compact
    def __call__(self, phi_a: jnp.ndarray, phi_v: jnp.ndarray) -> AVLogits:
        audio = nn.Dense(self.num_classes, name="audio")(phi_a.astype(jnp.float32))
        visual = nn.Dense(self.num_classes, name="visual")(phi_v.astype(jnp.float32))
        return AVLogits(fused=0.5 * (audio + visual), audio=audio, visual=visual)


class MMTMClassifier(nn.Module):
    """Audio and visual ResNets joined by an MMTM after every stage but the first, each
    with its own classifier (inputs as `AVClassifier`'s). `caring` (`NONE`, `AUDIO`,
    `VISUAL`, may be traced) selects a re-balancing forward pass."""

    num_classes: int
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    width: int = 64
    axis_name: Optional[str] = None
    dtype: Any = jnp.float32
    head_type: str = "late"
    ratio: int = 4  # the reference's MMTM(dim, dim, 4)

    def setup(self):
        if self.head_type != "late":
            raise ValueError(f"MMTMClassifier has a late-fusion head, not {self.head_type!r}")
        trunk = lambda: StagedTrunk(tuple(self.stage_sizes), self.width,  # noqa: E731
                                    axis_name=self.axis_name, dtype=self.dtype)
        self.audio_encoder = trunk()
        self.visual_encoder = trunk()
        self.mmtm = [MMTM(self.ratio, axis_name=self.axis_name)
                     for _ in range(len(self.stage_sizes) - 1)]
        self.head = LateFusionHead(self.num_classes)

    def features(self, audio: jnp.ndarray, frames: jnp.ndarray, train: bool,
                 caring: Any = NONE) -> Tuple[jnp.ndarray, jnp.ndarray]:
        """Pooled features `(phi_a [B, D], phi_v [B, D])` of both streams."""
        if audio.ndim == 3:
            audio = audio[..., None]
        b, tv = frames.shape[:2]
        x_a = self.audio_encoder(audio, train, -1)
        x_v = self.visual_encoder(frames.reshape((b * tv,) + frames.shape[2:]), train, -1)
        for s in range(len(self.stage_sizes)):
            x_a = self.audio_encoder(x_a, train, s)
            x_v = self.visual_encoder(x_v, train, s)
            if s > 0:
                x_a, x_v = self.mmtm[s - 1](x_a, x_v, b, train, caring)
        phi_v = x_v.reshape((b, tv) + x_v.shape[1:]).mean(axis=(1, 2, 3))
        return x_a.mean(axis=(1, 2)), phi_v

    def __call__(self, audio: jnp.ndarray, frames: jnp.ndarray, train: bool = False,
                 caring: Any = NONE) -> AVLogits:
        return self.head(*self.features(audio, frames, train, caring))
