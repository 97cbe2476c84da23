"""Shared defaults; dataset configs import this and change a few fields."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = ml_collections.ConfigDict()
    config.model.width = 64  # ResNet-18 widths 64/128/256/512
    config.model.stage_sizes = (2, 2, 2, 2)
    config.model.dtype = "float32"
    return config
