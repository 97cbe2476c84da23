"""The model a config asks for, sized from the dataset: one place that builds it."""

from typing import Any, Optional

import jax.numpy as jnp
import ml_collections

from avgmm.models.av_classifier import AVClassifier
from avgmm.models.resnet import ResNetTrunk

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def make_model(config: ml_collections.ConfigDict, meta, method: Any = None,
               axis_name: Optional[str] = None) -> AVClassifier:
    """The two-stream classifier for `config.model` and a dataset's metadata
    (`DatasetMeta`: number of classes): the model class `method` trains
    (`Method.model_class`, e.g. Greedy's MMTM network) with its fusion head
    (`Method.head_type`); the paper's split-head classifier without a method. `axis_name`
    is the device axis BatchNorm synchronizes over."""
    head = "split" if method is None else method.head_type(config)
    model_class = AVClassifier if method is None else method.model_class
    return model_class(num_classes=meta.num_classes, width=config.model.width,
                       stage_sizes=tuple(config.model.stage_sizes), axis_name=axis_name,
                       dtype=DTYPES[config.model.dtype], head_type=head)


def trunk_width(config: ml_collections.ConfigDict) -> int:
    """Size of each encoder's pooled feature `phi` for `config.model`."""
    m = config.model
    return ResNetTrunk(stage_sizes=tuple(m.stage_sizes), width=m.width).out_features
