"""The generated parts of README.md and docs/*.md: what the registries hold (methods,
evaluators, sweeps, datasets) and the headline results of the committed ledgers, written
from them so that the pages never go stale.

    python -m avgmm.doc_blocks [--check]

A block is the text between `<!-- generated: NAME -->` and `<!-- end generated -->`;
the command rewrites every block of every page, or with `--check` exits 1 naming the
pages whose blocks are out of date (the test suite runs it).
"""

import os
import re
import sys
from typing import Callable, Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_BLOCK = re.compile(r"(<!-- generated: (\w+) -->\n)(.*?)(<!-- end generated -->)", re.S)


def _first_line(doc) -> str:
    """The first paragraph of a docstring, on one line."""
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def methods_block() -> str:
    """The registered methods, in Table 1's order."""
    from avgmm import methods

    return "".join(f"- `{name}`: {cls.label}. {_first_line(cls.__doc__)}\n"
                   for name, cls in methods.REGISTRY.items())


def evaluators_block() -> str:
    """The registered evaluators and the fields they produce."""
    from avgmm import evaluators

    lines = []
    for name, cls in evaluators.REGISTRY.items():
        if not cls.__module__.startswith("avgmm.evaluators."):
            continue  # registered elsewhere (e.g. by a test): not part of the tool
        keys = ", ".join(f"`{f.key}`" for f in cls.fields + cls.final_fields)
        lines.append(f"- `{name}`: {_first_line(cls.__doc__)}" + (f" ({keys})" if keys else "")
                     + "\n")
    return "".join(lines)


def sweeps_block() -> str:
    """The declared sweeps."""
    from avgmm import experiments

    return "".join(f"- `{s.name}` ({len(s.variants())} variants): {s.description}\n"
                   for s in experiments.SWEEPS.values())


def datasets_block() -> str:
    """The datasets the converters' registry knows (built in), with their config."""
    from data_prep import registry

    lines = []
    for e in registry.entries(builtin_only=True):
        how = f"`./launch.sh prepare {e.prepare_name}`" if e.prepare_name else "built on first use"
        config = f", `configs/{e.config}`" if e.config else ""
        lines.append(f"- {e.display_name} (`{e.tfds_name}`): {how}{config}\n")
    return "".join(lines)


def headline_block() -> str:
    """README's headline results from the project's committed ledgers."""
    from avgmm.analysis import verdicts

    return verdicts.headline_block(REPO)


GENERATORS: Dict[str, Callable[[], str]] = {
    "methods": methods_block, "evaluators": evaluators_block, "sweeps": sweeps_block,
    "datasets": datasets_block, "headline": headline_block,
}


def pages() -> List[str]:
    """README.md and every page of docs/."""
    docs = os.path.join(REPO, "docs")
    return [os.path.join(REPO, "README.md")] + sorted(
        os.path.join(docs, f) for f in os.listdir(docs) if f.endswith(".md"))


def render(text: str) -> str:
    """`text` with every generated block rewritten."""
    def block(match):
        name = match.group(2)
        if name not in GENERATORS:
            raise KeyError(f"unknown generated block {name!r}: one of {sorted(GENERATORS)}")
        return match.group(1) + GENERATORS[name]() + match.group(4)
    return _BLOCK.sub(block, text)


def main(argv: List[str]) -> int:
    check = argv[1:] == ["--check"]
    if argv[1:] in (["--help"], ["-h"]):
        print("usage: python -m avgmm.doc_blocks [--check]\n\nWrites the generated lists "
              "of README.md and docs/ (methods, evaluators, sweeps, datasets, headline results); --check "
              "only says which are stale (exit status 1).")
        return 0
    if argv[1:] and not check:
        print("usage: python -m avgmm.doc_blocks [--check]", file=sys.stderr)
        return 2
    stale = []
    for path in pages():
        with open(path, encoding="utf-8") as f:
            text = f.read()
        new = render(text)
        if new != text:
            stale.append(os.path.relpath(path, REPO))
            if not check:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(new)
    if check and stale:
        print("out of date (run python -m avgmm.doc_blocks): " + ", ".join(stale),
              file=sys.stderr)
        return 1
    if not check:
        print("rewrote " + (", ".join(stale) if stale else "nothing (up to date)"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
