"""Two-stream audio-visual classifier with concatenation fusion (paper eq. 1-3)."""

from typing import Any, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from avgmm.models.resnet import ResNetTrunk


class AVLogits(NamedTuple):
    """Logits of one forward pass: `fused == audio + visual` (eq. 3) for the split and
    shared heads; with separate unimodal heads `fused` is the concatenation layer's.
    `reliability`: the reliability head's logits over (balanced, audio unreliable, visual
    unreliable) where the model has one (`split_reliability`), else None."""

    fused: jnp.ndarray
    audio: jnp.ndarray
    visual: jnp.ndarray
    reliability: Optional[jnp.ndarray] = None


class SplitFusionHead(nn.Module):
    """ONE dense layer on `[phi_a; phi_v]`, returned as its two modality halves.

    With `W = [W_a; W_v]`: `l_a = phi_a W_a + b/2`, `l_v = phi_v W_v + b/2` and the fused
    logits `f = W [phi_a; phi_v] + b = l_a + l_v`, so the unimodal logits are slices of
    the fused classifier rather than separate heads.
    """

    num_classes: int

    @nn.compact
    def __call__(self, phi_a: jnp.ndarray, phi_v: jnp.ndarray) -> AVLogits:
        d_a, d_v = phi_a.shape[-1], phi_v.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (d_a + d_v, self.num_classes), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.num_classes,), jnp.float32)
        # Logits in float32 whatever the trunk's dtype: softmax gaps are differences of
        # probabilities and lose their meaning in bfloat16.
        phi_a = phi_a.astype(jnp.float32)
        phi_v = phi_v.astype(jnp.float32)
        audio = phi_a @ kernel[:d_a] + bias / 2
        visual = phi_v @ kernel[d_a:] + bias / 2
        return AVLogits(fused=audio + visual, audio=audio, visual=visual)


class SharedHead(nn.Module):
    """ONE dense layer applied to each modality's features: `l_a = phi_a W + b`,
    `l_v = phi_v W + b` (both streams must have the same width), fused as their sum.

    The head of methods that train the modalities in turn through a shared classifier
    (MLA); their own fusion rule may replace the sum at test time.
    """

    num_classes: int

    @nn.compact
    def __call__(self, phi_a: jnp.ndarray, phi_v: jnp.ndarray) -> AVLogits:
        if phi_a.shape[-1] != phi_v.shape[-1]:
            raise ValueError(f"a shared head needs equal feature widths, got "
                             f"{phi_a.shape[-1]} and {phi_v.shape[-1]}")
        dense = nn.Dense(self.num_classes, dtype=jnp.float32, name="dense")
        audio = dense(phi_a.astype(jnp.float32))
        visual = dense(phi_v.astype(jnp.float32))
        return AVLogits(fused=audio + visual, audio=audio, visual=visual)


class SeparateHeads(nn.Module):
    """The concatenation fusion layer plus one unimodal classifier per modality:
    `f = W [phi_a; phi_v] + b`, `l_a = phi_a W_a' + b_a'`, `l_v = phi_v W_v' + b_v'`, three
    independent dense layers (`f != l_a + l_v`).

    The head of methods whose authors train unimodal classifiers beside the fused one
    (MMPareto's `head`, `head_audio`, `head_video`; Data Remixing's unimodal heads); the
    fused logits stay the prediction, and the unimodal losses train the unimodal layers
    and the encoders only.
    """

    num_classes: int

    @nn.compact
    def __call__(self, phi_a: jnp.ndarray, phi_v: jnp.ndarray) -> AVLogits:
        phi_a = phi_a.astype(jnp.float32)
        phi_v = phi_v.astype(jnp.float32)
        layer = {name: nn.Dense(self.num_classes, dtype=jnp.float32, name=name)
                 for name in ("fused", "audio", "visual")}
        return AVLogits(fused=layer["fused"](jnp.concatenate([phi_a, phi_v], axis=-1)),
                        audio=layer["audio"](phi_a), visual=layer["visual"](phi_v))


class SplitReliabilityHead(nn.Module):
    """The split fusion layer, plus a small label-free reliability head: an MLP on the
    pooled features (gradient stopped, so it never changes the encoders) that predicts
    which stream, if any, a sample's GMM diagnosis calls unreliable (3 logits: balanced,
    audio unreliable, visual unreliable)."""

    num_classes: int
    hidden: int = 64

    @nn.compact
    def __call__(self, phi_a: jnp.ndarray, phi_v: jnp.ndarray) -> AVLogits:
        logits = SplitFusionHead(self.num_classes, name="fusion")(phi_a, phi_v)
        x = jax.lax.stop_gradient(jnp.concatenate([phi_a, phi_v], axis=-1).astype(jnp.float32))
        x = nn.relu(nn.Dense(self.hidden, name="reliability_hidden")(x))
        return logits._replace(reliability=nn.Dense(3, name="reliability")(x))


HEADS = {"split": SplitFusionHead, "shared": SharedHead, "separate": SeparateHeads,
         "split_reliability": SplitReliabilityHead}


class AVClassifier(nn.Module):
    """Audio ResNet + visual ResNet, concatenation fusion into one dense layer.

    Inputs: `audio` `[B, F, T]` or `[B, F, T, 1]` (log spectrogram), `frames`
    `[B, Tv, H, W, 3]` (normalized RGB). Frames are folded into the batch, encoded
    independently, and their feature maps are averaged over time and space. `head`:
    `split` (the paper's concatenation fusion), `shared` (see `SharedHead`), `separate`
    (see `SeparateHeads`) or `split_reliability` (see `SplitReliabilityHead`).
    """

    num_classes: int
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    width: int = 64
    axis_name: Optional[str] = None
    dtype: Any = jnp.float32
    head_type: str = "split"

    def setup(self):
        trunk = lambda name: ResNetTrunk(  # noqa: E731
            stage_sizes=tuple(self.stage_sizes), width=self.width,
            axis_name=self.axis_name, dtype=self.dtype, name=name)
        self.audio_encoder = trunk("audio_encoder")
        self.visual_encoder = trunk("visual_encoder")
        self.head = HEADS[self.head_type](self.num_classes, name="head")

    def features(self, audio: jnp.ndarray, frames: jnp.ndarray, train: bool):
        """Pooled features `(phi_a [B, D], phi_v [B, D])` of both streams."""
        if audio.ndim == 3:
            audio = audio[..., None]
        if audio.ndim != 4 or audio.shape[-1] != 1:
            raise ValueError(f"audio must be [B, F, T] or [B, F, T, 1], got {audio.shape}")
        if frames.ndim != 5 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be [B, Tv, H, W, 3], got {frames.shape}")
        phi_a = self.audio_encoder(audio, train).mean(axis=(1, 2))
        b, tv = frames.shape[:2]
        fmap = self.visual_encoder(frames.reshape((b * tv,) + frames.shape[2:]), train)
        # 3-D global average pool over (time, height, width), as the reference code does.
        phi_v = fmap.reshape((b, tv) + fmap.shape[1:]).mean(axis=(1, 2, 3))
        return phi_a, phi_v

    def __call__(self, audio: jnp.ndarray, frames: jnp.ndarray, train: bool = False) -> AVLogits:
        phi_a, phi_v = self.features(audio, frames, train)
        return self.head(phi_a, phi_v)
