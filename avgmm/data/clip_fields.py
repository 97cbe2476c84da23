"""Per-clip ground truth a dataset records beside its media: which fields, and how a
batch carries them.

Any scalar feature other than `audio`, `frames`, `label` and `id` is a clip field: a
bool (e.g. `imbalanced`), an integer, a float (e.g. `degradation_strength`) or a
ClassLabel (e.g. AV-MNIST's `degraded`: none / visual / audio). Its kind is `"bool"`,
`"int"`, `"float"` or the tuple of class names. Every train and eval batch carries each
one under its name, as bool, int32 (integers and class indices) or float32, so that a
step or an evaluator can split a metric by it; text never goes to the devices.
"""

from typing import Any, Dict, Mapping, Tuple, Union

import numpy as np

from avgmm.errors import UserError

Kind = Union[str, Tuple[str, ...]]
MEDIA = ("audio", "frames", "label", "id")
# Batch entries the loader itself adds: a dataset feature may not take their names.
RESERVED = ("index", "mask")


def from_features(name: str, features: Mapping[str, Any]) -> Dict[str, Kind]:
    """`{field: kind}` of a tfds FeaturesDict's scalar non-media features, in name order;
    refuses a feature named like an entry the loader adds."""
    import tensorflow_datasets as tfds

    fields: Dict[str, Kind] = {}
    for key in sorted(features.keys()):
        if key in MEDIA:
            continue
        if key in RESERVED:
            raise UserError(f"dataset '{name}' has a feature named '{key}', which the "
                            "loader adds to every batch: rename it and prepare it again")
        feature = features[key]
        if isinstance(feature, tfds.features.ClassLabel):
            fields[key] = tuple(feature.names)
            continue
        if tuple(getattr(feature, "shape", (None,))) != ():
            continue  # not one value per clip
        dtype = np.dtype(feature.np_dtype)
        if dtype == np.bool_:
            fields[key] = "bool"
        elif np.issubdtype(dtype, np.integer):
            fields[key] = "int"
        elif np.issubdtype(dtype, np.floating):
            fields[key] = "float"
    return fields


def dtype(kind: Kind) -> np.dtype:
    """The batch dtype of a field of `kind`."""
    if kind == "bool":
        return np.dtype(np.bool_)
    if kind == "float":
        return np.dtype(np.float32)
    return np.dtype(np.int32)  # integers and class indices


def column(values, kind: Kind) -> np.ndarray:
    """One field's values of a batch's records as its batch array."""
    return np.asarray(values).astype(dtype(kind))


def describe(fields: Mapping[str, Kind]) -> Dict[str, Any]:
    """The fields as JSON (class names as lists), e.g. for the cache key."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in fields.items()}
