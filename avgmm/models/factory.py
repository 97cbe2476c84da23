"""The model a config asks for, sized from the dataset: one place that builds it."""

from typing import Optional

import jax.numpy as jnp
import ml_collections

from avgmm.models.av_classifier import AVClassifier
from avgmm.models.resnet import ResNetTrunk

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def make_model(config: ml_collections.ConfigDict, meta, head: str = "split",
               axis_name: Optional[str] = None) -> AVClassifier:
    """The two-stream classifier for `config.model` and a dataset's metadata
    (`DatasetMeta`: number of classes), with the fusion head `head` (a method's
    `Method.head`); `axis_name` is the device axis BatchNorm synchronizes over."""
    return AVClassifier(num_classes=meta.num_classes, width=config.model.width,
                        stage_sizes=tuple(config.model.stage_sizes), axis_name=axis_name,
                        dtype=DTYPES[config.model.dtype], head_type=head)


def trunk_width(config: ml_collections.ConfigDict) -> int:
    """Size of each encoder's pooled feature `phi` for `config.model`."""
    m = config.model
    return ResNetTrunk(stage_sizes=tuple(m.stage_sizes), width=m.width).out_features
