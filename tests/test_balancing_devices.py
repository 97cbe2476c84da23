"""OGM-GE and OPM give the same run on 1 and 4 devices (forced CPU devices)."""

import jax
import pytest

import device_runs


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ogm_ge", "opm"])
def test_one_and_four_devices_train_alike(tiny_config, tmp_path, method):
    # Batch-wide scores (psum), noise after the device mean and masks keyed by global
    # position: the device count must not change the run.
    if jax.local_device_count() < 4:
        pytest.skip("needs 4 devices")
    tiny_config.method = method
    runs = device_runs.train_on_device_counts(tiny_config, tmp_path)
    device_runs.assert_runs_agree(runs[1], runs[4])
