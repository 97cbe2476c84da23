"""Checks a prepared dataset's feature spec before tfds reads it.

tfds rebuilds a dataset's features from the class names written in its `features.json`
(and `dataset_info.json`), importing whatever module a name points to. A prepared
dataset shared between people would then run code on the trainer's machine. So the
loader first reads those files as plain JSON and accepts only the tfds feature classes
that avgmm's own builders write.
"""

import json
import os
from typing import Any, Iterator, List, Tuple

from avgmm.errors import UserError

_TFDS = "tensorflow_datasets.core.features."
FEATURES_DICT = _TFDS + "features_dict.FeaturesDict"
TENSOR = _TFDS + "tensor_feature.Tensor"
SCALAR = _TFDS + "scalar.Scalar"
CLASS_LABEL = _TFDS + "class_label_feature.ClassLabel"
TEXT = _TFDS + "text_feature.Text"
ALLOWED = frozenset({FEATURES_DICT, TENSOR, SCALAR, CLASS_LABEL, TEXT})
# The class each feature avgmm reads must have; other features may be any allowed leaf.
EXPECTED = {"audio": {TENSOR}, "frames": {TENSOR}, "label": {CLASS_LABEL}, "id": {TEXT},
            "imbalanced": {SCALAR, TENSOR}}
SPEC_FILES = ("features.json", "dataset_info.json")


def check_prepared(name: str, data_dir: str) -> None:
    """Raises ValueError (one line) if a version folder of dataset `name` under `data_dir`
    names a feature class avgmm does not expect; a missing dataset passes (tfds says so)."""
    root = os.path.join(os.path.expanduser(data_dir), *name.split(":")[0].split("/"))
    for path in _spec_files(root):
        try:
            with open(path, encoding="utf-8") as f:
                spec = json.load(f)
        except (OSError, ValueError) as e:
            raise UserError(f"dataset '{name}': cannot read {path} as JSON ({e}); prepare "
                             "it again") from e
        if path.endswith("dataset_info.json"):
            if "features" not in spec:
                continue
            spec = spec["features"]
        problem = _problem(spec)
        if problem:
            raise UserError(f"dataset '{name}' is refused: {path} {problem}; avgmm opens "
                             "only datasets made by its own builders (data_prep, avsynth): "
                             "prepare it again")


def _spec_files(root: str) -> Iterator[str]:
    if not os.path.isdir(root):
        return
    for folder, dirs, files in os.walk(root):
        # tfds never reads unfinished builds or its own bookkeeping folders.
        dirs[:] = [d for d in dirs if not d.startswith(("incomplete.", "."))]
        for name in SPEC_FILES:
            if name in files:
                yield os.path.join(folder, name)


def _problem(spec: Any) -> str:
    """What is wrong with a serialized feature spec, or '' when it is acceptable."""
    if not isinstance(spec, dict):
        return "holds no feature spec"
    for where, cls in _class_names(spec):
        if cls not in ALLOWED:
            return f"names the feature class {cls!r}{where}"
    if spec.get("pythonClassName") != FEATURES_DICT or "featuresDict" not in spec:
        return f"has top-level feature {spec.get('pythonClassName')!r}, not a FeaturesDict"
    features = spec["featuresDict"].get("features", {})
    for key, feature in features.items():
        cls = feature.get("pythonClassName") if isinstance(feature, dict) else None
        allowed = EXPECTED.get(key, ALLOWED - {FEATURES_DICT})
        if cls not in allowed:
            return f"gives feature '{key}' the class {cls!r} (expected one of {sorted(allowed)})"
    return ""


def _class_names(value: Any, where: str = "") -> List[Tuple[str, str]]:
    """Every `(location, class name)` in a JSON tree: tfds imports the module of each
    `pythonClassName` and of each legacy `type`."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("pythonClassName", "type") and isinstance(item, str):
                found.append((where and f" for '{where}'", item))
            else:
                found.extend(_class_names(item, key if key not in (
                    "features", "featuresDict") else where))
    elif isinstance(value, list):
        for item in value:
            found.extend(_class_names(item, where))
    return found
