"""CREMA-D (6 emotions) with the paper's settings.

Prepare the data first: `python -m data_prep.crema_d --raw_dir=... --data_dir=...`.
Stated by the paper: ResNet-18 trained from scratch, SGD momentum 0.9, lr 2e-3.
Not stated, taken from the public reference code of this benchmark (OGM-GE): batch 64,
weight decay 1e-4, StepLR(70 epochs, 0.1), one frame per clip at 224 x 224.
Not stated, our choice: 30 warm-up epochs + 7 adaptive steps x 10 epochs (100 epochs).
"""

from avgmm import config_defaults as default
from data_prep import features


def get_config():
    config = default.get_config()
    config.data.name = "crema_d_av"
    config.data.num_frames = 1
    config.data.image_size = 224
    # The preprocessing the data must have (22,050 Hz, 3 s, STFT 512 / hop 353,
    # log(|S| + 1e-7) -> 257 x 188), taken from the converter itself: the loader
    # refuses a dataset that recorded other values.
    config.data.expect.update(features.CREMA_D_AUDIO.as_metadata())
    # The reference split files (`--split_csv_dir`), whatever their sha1: the seeded
    # random split is refused unless this is overridden, e.g.
    # --config.data.expect.split_source="seeded random, seed 0".
    config.data.expect.split_source = "standard"
    # OGM-GE's README recommends alpha 0.8 for CREMA-D (0.1, its default, for VGGSound).
    config.ogm_ge.alpha = 0.8
    return config
