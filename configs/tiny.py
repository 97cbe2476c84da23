"""A seconds-long run for tests and smoke checks: avsynth/tiny and a 2-stage ResNet."""

from avgmm import config_defaults as default


def get_config():
    config = default.get_config()
    config.data.name = "avsynth/tiny"
    config.data.num_frames = 1
    config.data.image_size = 16
    config.data.prefetch = 0
    config.model.width = 4
    config.model.stage_sizes = (1, 1)
    config.epochs = 3
    config.schedule.warmup_epochs = 1
    config.schedule.adaptive_steps = 2
    config.schedule.epochs_per_step = 1
    config.optimizer.learning_rate = 0.05
    config.optimizer.lr_schedule = "constant"
    config.batch_size = 16
    config.eval_batch_size = 16
    config.checkpoint_keep = 3
    return config


def shrink(config, image_size: int, batch_size: int):
    """Any config cut down to a seconds-long CPU run on its own data (tests): a 2-stage
    width-4 ResNet, one device, one epoch each of warm-up and one adaptive step."""
    config.model.width = 4
    config.model.stage_sizes = (1, 1)
    config.data.image_size = image_size
    config.data.prefetch = 0
    config.batch_size = config.eval_batch_size = batch_size
    config.num_devices = 1
    config.epochs = 2
    config.schedule.warmup_epochs = 1
    config.schedule.adaptive_steps = 1
    config.schedule.epochs_per_step = 1
    return config
