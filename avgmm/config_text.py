"""Configs as text and data: loading a config file, the resolved config with each
field's comment, the overrides in force, the difference between two configs, and
one-line messages for command-line mistakes."""

import importlib.util
import io
import json
import os
import re
import tokenize
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import ml_collections

from avgmm.errors import UserError
from avgmm.files import flatten_dict

# The file whose comments document every field (`--print_config`).
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config_defaults.py")
# The repository's config files (a checkout or an editable install).
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "configs")
_ASSIGNMENT = re.compile(r"\s*config\.([\w.]+)\s*=")
# Fields that change how a run executes but not what it computes: a resumed run may
# change them freely (1 and N devices give the same results), and runs that differ only
# in them are the same experiment.
RUNTIME_FIELDS = ("num_devices", "data.data_dir", "data.prefetch", "data.cache",
                  "data.cache_dir", "data.cache_max_gb", "log_every_steps",
                  "compilation_cache_dir", "precompile_phases", "variant")


def repo_config(name: str) -> str:
    """The path of the repository's config file `name` (e.g. `demo.py`)."""
    path = os.path.join(CONFIG_DIR, name)
    if not os.path.exists(path):
        raise UserError(f"config file {path} not found: avgmm's configs/ folder comes with "
                        "a checkout of the repository (install it with pip install -e .)")
    return path


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """`get_config()` of a config file given as `path` or `path:argument`."""
    path, argument = spec, None
    if not os.path.exists(path) and ":" in spec:
        path, argument = spec.rsplit(":", 1)
    module = load_config_module(path)
    return module.get_config() if argument is None else module.get_config(argument)


def load_config_module(path: str):
    """A config file as a module (for files that offer more than `get_config`, such as
    `configs/tiny.py`'s `shrink`)."""
    module_spec = importlib.util.spec_from_file_location(
        "_avgmm_config_" + os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def config_to_dict(config: ml_collections.ConfigDict) -> Dict[str, Any]:
    """The config as plain JSON data (what `config.json` holds)."""
    return json.loads(config.to_json_best_effort())


def flat(config: Any) -> Dict[str, Any]:
    """`{dotted.field: value}` of a ConfigDict or of its JSON data."""
    data = config if isinstance(config, Mapping) else config_to_dict(config)
    return {k.replace("/", "."): v for k, v in flatten_dict(data).items()}


_flat = flat


def config_diff(saved: Mapping[str, Any], new: Mapping[str, Any]) -> Dict[str, Tuple[Any, Any]]:
    """`{field: (saved, new)}` for every flattened field that differs, runtime fields
    aside. A field added to the configs with None ("not checked", e.g. data.expect.*)
    means the same as its absence from a run saved before it existed."""
    a, b = flat(saved), flat(new)
    absent = "<absent>"
    return {k: (a.get(k, absent), b.get(k, absent))
            for k in sorted(set(a) | set(b))
            if a.get(k, absent) != b.get(k, absent) and k not in RUNTIME_FIELDS
            and (a.get(k, absent), b.get(k, absent)) not in ((absent, None), (None, absent))}


def overrides(file_config: ml_collections.ConfigDict,
              config: ml_collections.ConfigDict) -> Dict[str, Tuple[Any, Any]]:
    """`{field: (file value, value in force)}` for every field the command line changed."""
    a, b = _flat(file_config), _flat(config)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def describe_overrides(diff: Dict[str, Tuple[Any, Any]]) -> str:
    """`loss.beta=0.0 (file: 1.0), method='concat' (file: 'adaptive')`."""
    return ", ".join(f"{k}={new!r} (file: {old!r})" for k, (old, new) in diff.items())


def field_comments(path: str) -> Dict[str, str]:
    """`{field: comment}` from a config file's source: the comment lines right above a
    `config.<field> = ...` line and the comment at its end, joined into one line."""
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (OSError, tokenize.TokenError, SyntaxError):
        return {}
    comments: Dict[int, str] = {}
    for tok in tokens:
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    lines = source.splitlines()
    out = {}
    for number, line in enumerate(lines, 1):
        match = _ASSIGNMENT.match(line)
        if not match:
            continue
        above = []
        previous = number - 1
        while previous >= 1 and lines[previous - 1].strip().startswith("#"):
            above.insert(0, comments.get(previous, ""))
            previous -= 1
        text = " ".join(part for part in above + [comments.get(number, "")] if part)
        if text:
            out[match.group(1)] = text
    return out


def render(config: ml_collections.ConfigDict, config_file: str,
           diff: Optional[Dict[str, Tuple[Any, Any]]] = None) -> str:
    """The resolved config, one `field = value  # comment` line per field; comments from
    configs/default.py, replaced by the config file's own where it has one."""
    comments = field_comments(DEFAULT_CONFIG)
    path = config_file if os.path.exists(config_file) else config_file.rsplit(":", 1)[0]
    comments.update(field_comments(path))
    diff = diff or {}
    lines = [f"# {config_file}" + (f" with {describe_overrides(diff)}" if diff else "")]
    for field, value in _flat(config).items():
        note = comments.get(field, "")
        if field in diff:
            note = f"[overridden; file: {diff[field][0]!r}] " + note
        lines.append(f"{field} = {value!r}" + (f"  # {note.strip()}" if note.strip() else ""))
    return "\n".join(lines)


def unknown_field_message(error: BaseException, args: Sequence[str]) -> Optional[str]:
    """One line for ml_collections' error about an override of a field that does not
    exist, or None if `error` is not that (then it is a bug and keeps its traceback).

    ml_collections' message is the repr of a KeyError, e.g.
    `'\\'betta\\'\\nDid you mean "beta" instead of "betta"?'`.
    """
    text = str(error.args[0]) if error.args else str(error)
    match = re.match(r"""^\W*'?(?P<key>\w+)'?\W*(?:\\n|\n|\s)*(?P<hint>Did you mean.*?)?['"]*$""",
                     text.strip(), re.S)
    key = match.group("key") if match else None
    if not key:
        return None
    flags = [a.split("=", 1)[0] for a in args if a.startswith("--config.")]
    named = [f for f in flags if key in f[len("--config."):].split(".")]
    if not named:
        return None
    field = named[0][len("--config."):]
    parent = field.rsplit(".", 1)[0] if "." in field else ""
    hint = (match.group("hint") or "").replace('\\"', '"').strip().strip("'\"")
    owner = f"config.{parent}" if parent and parent != key else "the config"
    message = f"{named[0]}: {owner} has no field '{key}'"
    if hint:
        message += f"; {hint[0].lower()}{hint[1:]}"
    else:
        message += "; see --print_config for the fields"
    return message
