"""AV-MNIST as MultiBench distributes it (112 x 112 spectrogram arrays and 28 x 28
images), prepared with `./launch.sh prepare av_mnist_multibench --dir=.../avmnist`
(`python -m data_prep.arrays --layout=multibench_avmnist --name=av_mnist_multibench`);
the model and schedule of `av_mnist.py`.

The arrays do not tell the audio's sample rate or STFT, so only what they record is
expected: precomputed features, one 28 x 28 frame per clip.
"""

import os

from avgmm import config_text

av_mnist = config_text.load_config_module(os.path.join(os.path.dirname(__file__),
                                                       "av_mnist.py"))


def get_config():
    config = av_mnist.get_config()
    config.data.name = "av_mnist_multibench"
    for field in ("sample_rate", "clip_seconds", "n_fft", "hop_length", "center"):
        config.data.expect[field] = None  # unknown for arrays: recorded as None
    config.data.expect.spectrogram_recipe = "precomputed"
    config.data.expect.normalization = "none"
    config.data.expect.num_frames = 1
    config.data.expect.frame_size = 28
    return config
