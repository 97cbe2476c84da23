"""The benchmarks' shared `--json` output: one JSON object per table row, appended."""

import json
from typing import Any, Mapping, Optional


def append_jsonl(path: Optional[str], record: Mapping[str, Any]) -> None:
    """Appends `record` as one line to `path`; does nothing when `path` is None."""
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(dict(record)) + "\n")
