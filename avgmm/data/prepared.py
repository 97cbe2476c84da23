"""Whether a prepared dataset is there, who made it, and with which parameters.

The refusals name the command that prepares the dataset, read from the dataset
registry (`data_prep.registry`): each converter declares its own.
"""

import os
import re
from typing import Any, Mapping, Optional

from avgmm.errors import UserError


def is_prepared(name: str, data_dir: str) -> bool:
    """Whether `data_dir` holds a finished build of `name` (`base[/config][:version]`):
    a version folder with its `dataset_info.json`."""
    base, _, version = name.partition(":")
    root = os.path.join(os.path.expanduser(data_dir), *base.split("/"))
    if not os.path.isdir(root):
        return False
    versions = [version] if version else os.listdir(root)
    return any(re.fullmatch(r"\d+\.\d+\.\d+", v)
               and os.path.exists(os.path.join(root, v, "dataset_info.json"))
               for v in versions)


def show(path: str) -> str:
    """`path` as people type it: the home folder as `~`."""
    path = str(path)
    home = os.path.expanduser("~")
    if home not in ("", "/", "~") and (path == home or path.startswith(home + os.sep)):
        return "~" + path[len(home):]
    return path


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 200 else text[:197] + "..."


def _registry():
    """The dataset registry, or None where the data_prep package is not installed."""
    try:
        from data_prep import registry
    except ImportError:
        return None
    return registry


def prepare_command(name: str, data_dir: str) -> str:
    """The command that prepares `name` into `data_dir`, for refusals."""
    registry = _registry()
    command = registry and registry.prepare_command(name, show(data_dir))
    if command:
        return command
    base = name.split(":")[0].split("/")[0]
    return ("python -m data_prep.folder --csv=<clips.csv> --name=" + base +
            f" --data_dir={show(data_dir)} (or the converter that made it; python -m "
            "data_prep --list shows them all)")


def check_version(name: str, data_dir: str) -> None:
    """Refuses a dataset of a registered converter that exists only in versions older
    than the converter's."""
    import tensorflow_datasets as tfds

    registry = _registry()
    base = name.split("/")[0].split(":")[0]
    try:  # the registry imports the converters, which registers their builders
        if registry is None or base not in registry.converters():
            return
        current = str(tfds.builder_cls(base).VERSION)
    except Exception:  # a converter that cannot be imported: tfds reads what is there
        return
    folder = os.path.join(os.path.expanduser(data_dir), base)
    if not os.path.isdir(folder) or os.path.isdir(os.path.join(folder, current)):
        return
    older = sorted(v for v in os.listdir(folder) if re.fullmatch(r"\d+\.\d+\.\d+", v)
                   and os.path.exists(os.path.join(folder, v, "dataset_info.json")))
    if older:
        raise UserError(
            f"dataset '{name}' in {folder} was prepared by an older converter (version "
            f"{', '.join(older)}; this code reads {current}): prepare it again with "
            f"{prepare_command(name, data_dir)}")


def check_params(meta, name: str, data_dir: str,
                 expected_params: Optional[Mapping[str, Any]]) -> None:
    """Refuses a dataset prepared with other parameters, naming every differing one."""
    expected = {k: v for k, v in (expected_params or {}).items() if v is not None}
    unrecorded = sorted(k for k in expected if k not in meta.params)
    if unrecorded:
        raise UserError(
            f"dataset '{name}' does not record {', '.join(map(repr, unrecorded))} (the "
            "config expects "
            + ", ".join(f"{k}={expected[k]!r}" for k in unrecorded) + "), so an older "
            f"converter made it: prepare it again with {prepare_command(name, data_dir)}")
    differ = [(k, meta.params[k], want) for k, want in sorted(expected.items())
              if not (_same_split if k == "split_source" else _same)(meta.params[k], want)]
    if not differ:
        return
    have_text = ", ".join(f"{k}={have!r}" for k, have, _ in differ)
    want_text = ", ".join(f"{k}={want!r}" for k, _, want in differ)
    keep = " ".join(f"--config.data.expect.{k}={have!r}" for k, have, _ in differ)
    if [k for k, _, _ in differ] == ["split_source"]:
        have = differ[0][1]
        raise UserError(
            f"dataset '{name}' was prepared with {have_text} but the config expects "
            f"{want_text}: prepare it into a new data_dir with the standard split files "
            f"({prepare_command(name, 'NEW_DIR')} --split_csv_dir=DIR, DIR holding "
            f"train.csv and test.csv) or set config.data.expect.split_source={have!r}")
    raise UserError(
        f"dataset '{name}' was prepared with {have_text} but the config expects "
        f"{want_text}: prepare the data again with those values or accept the data's "
        f"with {keep}")


def _same_split(have: Any, want: Any) -> bool:
    """A recorded `kind: detail` split source matches an expected `kind` alone (e.g.
    `standard`) or the whole value (e.g. `standard: <sha1>`, to pin the files)."""
    have, want = str(have), str(want)
    return have == want or (":" not in want and have.split(":", 1)[0].strip() == want)


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return list(a) == list(b)
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(a)))
    return a == b
