"""AVE (28 audio-visual event classes) with the paper's settings.

Prepare the data first: `python -m data_prep.ave --raw_dir=... --data_dir=...`.
Stated by the paper: ResNet-18 from scratch, SGD momentum 0.9, lr 2e-3.
Not stated, taken from the PMR reference recipe: three frames per clip at 224 x 224,
batch 64, weight decay 1e-4, StepLR(70, 0.1). Not stated, ours: 30 warm-up epochs and
7 adaptive steps of 10 epochs.
"""

from avgmm import config_defaults as default
from data_prep import features


def get_config():
    config = default.get_config()
    config.data.name = "ave_av"
    config.data.num_frames = 3
    config.data.image_size = 224
    # The preprocessing the data must have (16 kHz tiled to 10 s, scipy's power spectral
    # density with nperseg 512 / noverlap 353, log, per-sample z-score), taken from the
    # converter itself: the loader refuses a dataset that recorded other values.
    config.data.expect.update(features.AVE_AUDIO.as_metadata())
    return config
