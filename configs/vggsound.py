"""VGGSound (309/310 classes) with the recipe of this benchmark's public reference code.

Prepare the data first: `python -m data_prep.vggsound --raw_dir=CLIPS --csv=vggsound.csv
--data_dir=...`.
Sources: OGM-GE (github.com/GeWu-Lab/OGM-GE_CVPR2022) main.py defaults: SGD momentum 0.9,
lr 1e-3, weight decay 1e-4, StepLR(70, 0.1), batch 64, 3 frames per clip at 224 x 224;
its dataset/VGGSoundDataset.py audio: 16 kHz, a 5 s window, STFT 256 / hop 128,
log(|S| + 1e-7) -> 129 x 626 (the reference draws the window at random per read; the
prepared data holds the first 5 s). Not stated there, ours: 30 warm-up epochs and 7
adaptive steps of 10 epochs. The train split (about 100 GB decoded) is read from the
prepared records, not cached: see config.data.cache_max_gb.
"""

from avgmm import config_defaults as default
from data_prep import features


def get_config():
    config = default.get_config()
    config.data.name = "vggsound_av"
    config.data.num_frames = 3  # OGM-GE use_video_frames=3
    config.data.image_size = 224
    config.optimizer.learning_rate = 1e-3  # OGM-GE main.py --learning_rate default
    config.data.expect.update(features.VGGSOUND_AUDIO.as_metadata())
    config.data.expect.split_source = "standard"  # vggsound.csv's train / test split
    return config
