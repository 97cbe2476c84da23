"""The README's main job: the embedded synthetic dataset, sized for 2 CPU cores.

`--config=configs/demo.py` trains the adaptive method; `--config.method=concat` the
baseline. A narrow ResNet-18 (width 8) on 40x48 spectrograms and one 32x32 frame.
"""

from avgmm import config_defaults as default


def get_config():
    config = default.get_config()
    config.data.name = "avsynth/default"
    config.data.data_dir = "~/avgmm_data"
    config.data.num_frames = 1
    config.data.image_size = 32
    config.model.width = 8
    default.use_study_loss(config)
    config.epochs = 10
    config.schedule.warmup_epochs = 4
    config.schedule.adaptive_steps = 3
    config.schedule.epochs_per_step = 2
    config.optimizer.learning_rate = 0.01  # a narrow model on few epochs wants a larger step
    config.optimizer.lr_schedule = "constant"
    config.batch_size = 64
    config.eval_batch_size = 256
    config.log_every_steps = 10
    return config
