"""Metrics of a running job: one JSON record per epoch (`metrics.jsonl`), step-level
records every `log_every_steps` steps (`steps.jsonl`), and the same scalars as
TensorBoard events (written by tensorboardX: no TensorFlow needed)."""

import json
from typing import Any, Mapping

from avgmm import files
from avgmm.workdir import Workdir


class MetricWriter:
    """Writes epoch and step records into a workdir."""

    def __init__(self, workdir: Workdir):
        from tensorboardX import SummaryWriter  # imported lazily: heavy, protobuf-based

        self.workdir = workdir
        self._tb = SummaryWriter(workdir.file(Workdir.TENSORBOARD))

    def _scalars(self, record: Mapping[str, Any], step: int, prefix: str = "") -> None:
        for key, value in files.flatten_dict(record).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._tb.add_scalar(prefix + key, value, step)

    def write(self, record: Mapping[str, Any], step: int) -> None:
        """An epoch record (metrics.jsonl and TensorBoard)."""
        line = json.dumps(files.to_python(record), sort_keys=True) + "\n"
        files.append_line(self.workdir.file(Workdir.METRICS), line)
        self._scalars(json.loads(line), step)
        self._tb.flush()

    def write_steps(self, record: Mapping[str, Any], step: int) -> None:
        """A step-level record (steps.jsonl, TensorBoard under `steps/`)."""
        line = json.dumps(files.to_python(record), sort_keys=True) + "\n"
        files.append_line(self.workdir.file(Workdir.STEPS), line)
        self._scalars(record.get("train", {}), step, "steps/")

    def close(self) -> None:
        self._tb.close()


class NullMetricWriter:
    """A `MetricWriter` that writes nothing: the processes of a multi-host run other than
    process 0, which alone writes the run's files."""

    def write(self, record: Mapping[str, Any], step: int) -> None:
        del record, step

    def write_steps(self, record: Mapping[str, Any], step: int) -> None:
        del record, step

    def close(self) -> None:
        pass
