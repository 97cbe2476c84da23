"""The datasets avgmm knows, each declared once by the module that prepares it.

A converter module of the `data_prep` package declares its dataset at module level:

    DATASET = registry.DatasetEntry(tfds_name="crema_d_av", prepare_name="crema_d",
                                    display_name="CREMA-D", inputs="--raw_dir=<...>",
                                    audio=AUDIO, config="crema.py")

(or `DATASETS = (entry, ...)` for a module that makes several, e.g. AV-MNIST's
settings). Discovery imports every module of the package, including those of a
`data_prep/` folder elsewhere on `sys.path` (the package's path is extensible), so a
converter of your own is found without editing anything here. The embedded synthetic
`avsynth` declares its entries in `avgmm/data/avsynth.py`.

`python -m data_prep --list` prints the table; the loader, `launch.sh prepare` and the
analysis read names, commands and config files from here.
"""

import dataclasses
import functools
import importlib
import os
import pkgutil
import shlex
from typing import Dict, List, Optional, Sequence, Tuple

from data_prep.features import AudioParams

# Modules outside the data_prep package that declare datasets.
EMBEDDED = ("avgmm.data.avsynth",)
PACKAGE = "data_prep"
_OWN_DIR = os.path.dirname(os.path.abspath(__file__))


class RegistryError(ValueError):
    """A name no dataset has, or two declarations that clash; the message says which."""


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
    """One prepared dataset as people and the tools name it.

    Attributes:
      tfds_name: the prepared dataset's tfds name (`config.data.name`), e.g. `crema_d_av`.
      display_name: the name in tables and titles, e.g. `CREMA-D`.
      prepare_name: the name `python -m data_prep NAME` and `./launch.sh prepare NAME`
        take; empty for a dataset nobody prepares by hand (avsynth: the loader builds it).
      inputs: what the converter needs, as shown in "prepare it with: ..." lines.
      audio: the spectrogram recipe the converter applies (its default where flags can
        change it; None for data that has none, like the synthetic avsynth).
      config: the config file that trains on it: a file name under `configs/` (with an
        optional `:argument`, e.g. `av_mnist.py:graded`) or an absolute path.
      args: arguments the converter always gets for this dataset (e.g. `--setting=graded`).
      command: the preparing program when it is not `python -m <module>` (avsynth's demo).
      module: the declaring module; discovery fills it in.
    """

    tfds_name: str
    display_name: str
    prepare_name: str = ""
    inputs: str = ""
    audio: Optional[AudioParams] = None
    config: str = ""
    args: Tuple[str, ...] = ()
    command: str = ""
    module: str = ""

    def program(self) -> str:
        """The command line before the inputs: `python -m data_prep.x [args]`."""
        head = self.command or f"python -m {self.module}"
        return " ".join([head, *map(shlex.quote, self.args)])

    def prepare_command(self, data_dir: str) -> str:
        """The full command that prepares this dataset into `data_dir`."""
        return " ".join(p for p in (self.program(), self.inputs, f"--data_dir={data_dir}") if p)


@dataclasses.dataclass(frozen=True)
class Registry:
    """Every entry found, and the modules that could not be imported (with why)."""

    entries: Tuple[DatasetEntry, ...]
    problems: Tuple[str, ...]
    builtin: frozenset  # tfds names declared by this repository's own modules


def _declared(module) -> List[DatasetEntry]:
    found = getattr(module, "DATASETS", None)
    found = list(found) if found is not None else []
    if getattr(module, "DATASET", None) is not None:
        found.append(module.DATASET)
    for entry in found:
        if not isinstance(entry, DatasetEntry):
            raise RegistryError(f"{module.__name__} declares {entry!r}, not a "
                                "registry.DatasetEntry")
    return [dataclasses.replace(e, module=e.module or module.__name__) for e in found]


def discover() -> Registry:
    """Imports every module of the data_prep package (all its folders) and the embedded
    ones, and collects their declarations; raises RegistryError on clashing names."""
    package = importlib.import_module(PACKAGE)
    names = [f"{PACKAGE}.{m.name}" for m in pkgutil.iter_modules(package.__path__)
             if not m.name.startswith("_") and m.name != "registry"]
    entries, problems, builtin = [], [], set()
    for name in sorted(set(names)) + list(EMBEDDED):
        try:
            module = importlib.import_module(name)
        except Exception as e:  # one broken converter must not hide the others
            problems.append(f"{name} cannot be imported ({type(e).__name__}: {e})")
            continue
        declared = _declared(module)
        path = os.path.abspath(getattr(module, "__file__", "") or "")
        if name in EMBEDDED or os.path.dirname(path) == _OWN_DIR:
            builtin.update(e.tfds_name for e in declared)
        entries.extend(declared)
    for key in ("tfds_name", "prepare_name"):
        seen: Dict[str, DatasetEntry] = {}
        for e in entries:
            value = getattr(e, key)
            if value and value in seen:
                raise RegistryError(f"{seen[value].module} and {e.module} both declare the "
                                    f"dataset {key} {value!r}; rename one")
            seen[value] = e
    entries.sort(key=lambda e: e.tfds_name)
    return Registry(tuple(entries), tuple(problems), frozenset(builtin))


@functools.lru_cache(maxsize=None)
def _registry() -> Registry:
    return discover()


def entries(builtin_only: bool = False) -> Tuple[DatasetEntry, ...]:
    """Every declared dataset, by tfds name (only this repository's own with
    `builtin_only`)."""
    reg = _registry()
    return tuple(e for e in reg.entries if not builtin_only or e.tfds_name in reg.builtin)


def problems() -> Tuple[str, ...]:
    """Modules of the data_prep package that could not be imported, with the reason."""
    return _registry().problems


def find(name: str) -> Optional[DatasetEntry]:
    """The entry of a tfds name (`base[/config][:version]`); None for an unknown one.
    A name with a builder config unknown here (`avsynth/other`) gets its base's first
    entry."""
    name = name.split(":")[0]
    by_name = {e.tfds_name: e for e in entries()}
    if name in by_name:
        return by_name[name]
    base = name.split("/")[0]
    return next((e for e in entries() if e.tfds_name.split("/")[0] == base), None)


def for_prepare(name: str) -> DatasetEntry:
    """The entry `python -m data_prep NAME` runs: by prepare name, else by tfds name."""
    for e in entries():
        if e.prepare_name == name:
            return e
    entry = find(name)
    if entry is not None and entry.tfds_name.split("/")[0] == name.split("/")[0]:
        if not entry.prepare_name:
            raise RegistryError(
                f"{name!r} is not prepared by hand: {entry.prepare_command('DATA_DIR')} "
                "builds it, and the loader builds it on first use")
        return entry
    known = ", ".join(e.prepare_name for e in entries() if e.prepare_name)
    raise RegistryError(f"no dataset is named {name!r}; prepare one of: {known} "
                        "(python -m data_prep --list shows what each needs)")


def display_name(tfds_name: str) -> str:
    """The name for tables and titles (`CREMA-D`); an unknown dataset keeps its own."""
    entry = find(tfds_name)
    return entry.display_name if entry is not None else tfds_name


def config_file(tfds_name: str) -> Optional[str]:
    """The config file that trains on `tfds_name`: a file name under `configs/` (maybe
    with `:argument`) or an absolute path; None when the dataset has none."""
    entry = find(tfds_name)
    return (entry.config or None) if entry is not None else None


def prepare_command(tfds_name: str, data_dir: str) -> Optional[str]:
    """The command that prepares `tfds_name` into `data_dir`; None for an unknown one."""
    entry = find(tfds_name)
    return entry.prepare_command(data_dir) if entry is not None else None


def converters() -> Dict[str, str]:
    """`{tfds name: module}` of the datasets a data_prep module prepares."""
    return {e.tfds_name: e.module for e in entries() if e.prepare_name}


def audio_summary(audio: Optional[AudioParams]) -> str:
    """`22.05 kHz, 3 s -> 257 x 188` (`-` for a dataset without a recipe)."""
    if audio is None:
        return "-"
    f, t = audio.shape
    return f"{audio.sample_rate / 1000:g} kHz, {audio.clip_seconds:g} s -> {f} x {t}"


def markdown_table(rows: Sequence[DatasetEntry]) -> str:
    """The dataset table of docs/data.md (`python -m data_prep --list --markdown`)."""
    lines = ["| dataset | `config.data.name` | prepare | audio | config |",
             "|---|---|---|---|---|"]
    for e in rows:
        if e.prepare_name:
            prepare = "`" + " ".join(p for p in ("./launch.sh prepare", e.prepare_name,
                                                 e.inputs) if p) + "`"
        else:
            prepare = f"`{e.program()}` (or automatically)"
        config = f"`configs/{e.config}`" if e.config and not os.path.isabs(e.config) else (
            f"`{e.config}`" if e.config else "-")
        lines.append(f"| {e.display_name} | `{e.tfds_name}` | {prepare} | "
                     f"{audio_summary(e.audio)} | {config} |")
    return "\n".join(lines)


def text_table(rows: Sequence[DatasetEntry]) -> str:
    """The `python -m data_prep --list` table, one dataset per line."""
    header = ("NAME", "DATASET", "DISPLAY NAME", "AUDIO", "CONFIG", "PREPARE WITH")
    body = [(e.prepare_name or "-", e.tfds_name, e.display_name, audio_summary(e.audio),
             e.config or "-", e.prepare_command("DATA_DIR")) for e in rows]
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1]
                     for r in [header] + body)
