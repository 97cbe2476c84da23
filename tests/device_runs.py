"""One tiny training run per device count, and their comparison (the balancing methods'
device-agreement tests)."""

import os
from typing import Dict, List, Sequence

import numpy as np

from avgmm import train
from avgmm.workdir import Workdir


def train_on_device_counts(config, root, counts: Sequence[int] = (1, 4)) -> Dict[int, List]:
    """Trains `config` once per device count (same global batch), each in its own workdir
    under `root`; checks every headline accuracy is in [0, 1] and that the analysis draws
    the first run's figures; returns the metrics records by device count."""
    runs = {}
    for n in counts:
        config.num_devices = n
        workdir = os.path.join(str(root), f"d{n}")
        results = train.train_and_evaluate(config, workdir)
        for key in ("test_accuracy", "test_accuracy_audio", "test_accuracy_visual"):
            assert 0.0 <= results[key] <= 1.0, (n, key, results[key])
        runs[n] = Workdir(workdir).read_metrics()
        if n == counts[0]:
            analyze_run(workdir)
    return runs


def analyze_run(workdir: str) -> None:
    """`python -m avgmm.analyze`'s figures of a finished run (any method) are drawn."""
    from avgmm.analysis import analyze

    names = {os.path.basename(p) for p in analyze.analyze(workdir, with_scores=False)["plots"]}
    assert {"accuracy.png", "losses.png"} <= names, names


def assert_runs_agree(a: List, b: List, rtol: float = 2e-4, atol: float = 1e-5) -> None:
    """Every logged train term (speed aside) and the validation loss of two runs agree
    epoch by epoch to float tolerance."""
    assert len(a) == len(b)
    for r1, r2 in zip(a, b):
        for key in r1["train"]:
            if key != "samples_per_second":
                np.testing.assert_allclose(r2["train"][key], r1["train"][key], rtol=rtol,
                                           atol=atol, err_msg=f"epoch {r1['epoch']} {key}")
        np.testing.assert_allclose(r2["val"]["loss"], r1["val"]["loss"], rtol=rtol)
