"""AV-MNIST (spoken + handwritten digits, 10 classes), sized for 2 CPU cores.

Prepare the data first, e.g. offline from the FSDD recordings and scikit-learn's digits:
`python -m data_prep.av_mnist --fsdd_dir=.../recordings --digits_dir=sklearn
--visual_noise_fraction=0.3` (see docs/datasets.md, AV-MNIST). A benchmark setting is the
config's argument: `--config=configs/av_mnist.py:graded` trains on `av_mnist_graded`,
made by `./launch.sh prepare av_mnist_graded --fsdd_dir=... --digits_dir=sklearn` (the
same for noise, two_sided, none and conflict, whose misleading clips carry a wrong
digit). A narrow ResNet-18 (width 16) on 64 x 65 spectrograms and one 28 x 28 image; a
few minutes on 2 cores.
"""

from avgmm import config_defaults as default
from data_prep import av_mnist


def get_config(setting: str = ""):
    config = default.get_config()
    config.data.name = "av_mnist"
    if setting:  # the benchmark setting the data must have been made with
        setting = setting.replace("-", "_")
        if setting not in av_mnist.SETTINGS:
            raise ValueError(f"configs/av_mnist.py:{setting}: the settings are "
                             f"{', '.join(av_mnist.SETTINGS)}")
        config.data.name = f"av_mnist_{setting}"
        config.data.expect.setting = setting
    config.data.num_frames = 1
    config.data.image_size = 28
    # Digits are not mirror-symmetric (a flipped 2 is no 2) and small crops cut strokes
    # off: a mild crop, no flip.
    config.data.crop_scale = (0.7, 1.0)
    config.data.crop_ratio = (0.85, 1.18)
    config.data.flip = False
    # The converter's recipe (8 kHz, 1 s, STFT 126 / hop 125 -> 64 x 65) and image size.
    config.data.expect.update(av_mnist.AUDIO.as_metadata())
    config.data.expect.frame_size = 28
    config.model.width = 16
    default.use_study_loss(config)
    config.epochs = 12
    config.schedule.warmup_epochs = 6
    config.schedule.adaptive_steps = 3
    config.schedule.epochs_per_step = 2
    config.optimizer.learning_rate = 0.01  # a narrow model on few epochs wants a larger step
    config.optimizer.lr_schedule = "constant"
    config.batch_size = 64
    config.eval_batch_size = 256
    config.log_every_steps = 10
    return config
