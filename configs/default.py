"""The defaults every config starts from (avgmm/config_defaults.py, where each field is
documented): the paper's method and optimizer settings on the embedded synthetic data."""

from avgmm import config_defaults


def get_config():
    return config_defaults.get_config()
