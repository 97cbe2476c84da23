"""ResNet trunk (BasicBlock) in Flax Linen, laid out like torchvision's ResNet-18.

The trunk stops before global pooling and the classifier: the audio-visual model pools
the two streams differently (2-D for audio, 3-D over frames for video).
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

# PyTorch's ResNet initializes convolutions with kaiming_normal(fan_out); the reference
# code of this benchmark trains from scratch with that initialization.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34 block)."""

    features: int
    strides: int = 1
    axis_name: Optional[str] = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        norm = lambda name: nn.BatchNorm(  # noqa: E731
            use_running_average=not train,
            momentum=0.9,  # PyTorch's momentum 0.1 for the running statistics.
            epsilon=1e-5,
            axis_name=self.axis_name,
            dtype=self.dtype,
            name=name,
        )
        conv = lambda f, k, s, name: nn.Conv(  # noqa: E731
            f, (k, k), (s, s), padding=[(k // 2, k // 2)] * 2, use_bias=False,
            kernel_init=conv_init, dtype=self.dtype, name=name,
        )
        residual = x
        y = conv(self.features, 3, self.strides, "conv1")(x)
        y = nn.relu(norm("bn1")(y))
        y = conv(self.features, 3, 1, "conv2")(y)
        y = norm("bn2")(y)
        if self.strides != 1 or x.shape[-1] != self.features:
            residual = conv(self.features, 1, self.strides, "downsample_conv")(x)
            residual = norm("downsample_bn")(residual)
        return nn.relu(y + residual)


class ResNetTrunk(nn.Module):
    """ResNet feature extractor: stem, four stages, no pooling and no classifier.

    Attributes:
      stage_sizes: blocks per stage; (2, 2, 2, 2) is ResNet-18.
      width: channels of the first stage; later stages double it (64 is ResNet-18).
      axis_name: pmap axis over which BatchNorm statistics are averaged (None: local).
      dtype: computation dtype (parameters stay float32).
    """

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    width: int = 64
    axis_name: Optional[str] = None
    dtype: Any = jnp.float32

    @property
    def out_features(self) -> int:
        return self.width * 2 ** (len(self.stage_sizes) - 1)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        x = x.astype(self.dtype)
        x = nn.Conv(self.width, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], use_bias=False,
                    kernel_init=conv_init, dtype=self.dtype, name="conv1")(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         axis_name=self.axis_name, dtype=self.dtype, name="bn1")(x)
        x = nn.relu(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=[(1, 1), (1, 1)])
        for stage, num_blocks in enumerate(self.stage_sizes):
            for block in range(num_blocks):
                x = BasicBlock(
                    features=self.width * 2**stage,
                    strides=2 if stage > 0 and block == 0 else 1,
                    axis_name=self.axis_name,
                    dtype=self.dtype,
                    name=f"layer{stage + 1}_{block}",
                )(x, train)
        return x
