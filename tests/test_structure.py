"""The shape of the code and of its documentation: no import cycle, small modules, a
trainer that does not know the GMM, a README that is a landing page, and docs whose
links and commands work."""

import ast
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from data_prep import registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "avgmm")
DOCS = [os.path.join(REPO, "README.md")] + sorted(
    os.path.join(REPO, "docs", f) for f in os.listdir(os.path.join(REPO, "docs"))
    if f.endswith(".md"))


def _modules():
    """`{dotted name: path}` of every module of the package."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                name = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                found[name[:-len(".__init__")] if name.endswith(".__init__") else name] = path
    return found


def import_graph():
    """Module -> the package modules it imports anywhere (function-local imports too)."""
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                deps |= {f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                         for a in node.names}
        deps = {d for d in deps if d in mods and d != name}
        # Importing a.b.c runs a/__init__ and a/b/__init__ first (except from inside them).
        for d in list(deps):
            parts = d.split(".")
            deps |= {".".join(parts[:i]) for i in range(1, len(parts))
                     if ".".join(parts[:i]) in mods
                     and not name.startswith(".".join(parts[:i]) + ".")}
        graph[name] = deps - {name}
    return graph


def cycles(graph):
    """The strongly connected components of more than one module."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_in_the_package():
    assert cycles(import_graph()) == []


def test_no_module_of_the_package_over_400_lines():
    long = {name: n for name, path in _modules().items()
            if (n := sum(1 for _ in open(path, encoding="utf-8"))) > 400}
    assert not long, long


def test_the_trainer_and_the_devices_do_not_know_the_gmm():
    for name in ("train.py", "parallel.py"):
        with open(os.path.join(PACKAGE, name), encoding="utf-8") as f:
            hits = [line for line in f if re.search(r"(^|[^a-z])gmm", line)]
        assert not hits, (name, hits)


def test_the_readme_is_a_landing_page():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    assert len(text.splitlines()) <= 200
    for needed in ("@article{", "pip install", "python -m pytest", "python -m avgmm.demo",
                   "docs/extending.md"):
        assert needed in text, needed


def _links(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("path", DOCS, ids=[os.path.relpath(p, REPO) for p in DOCS])
def test_every_relative_link_resolves(path):
    for link in _links(path):
        if re.match(r"[a-z]+://", link) or link.startswith("#") or link.startswith("mailto:"):
            continue
        target = os.path.normpath(os.path.join(os.path.dirname(path), link.split("#")[0]))
        assert os.path.exists(target), f"{os.path.relpath(path, REPO)}: {link}"


def documented_commands():
    """Every `python -m MODULE` and `./launch.sh COMMAND` named in README.md and docs/."""
    modules, launches = set(), set()
    for path in DOCS:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        modules |= set(re.findall(r"python3? -m ((?:avgmm|data_prep)[\w.]*)", text))
        # Lower-case names only: `./launch.sh SWEEP CONFIG` is a placeholder.
        launches |= set(re.findall(r"\./launch\.sh ([a-z][a-z_0-9]*)(?: ([a-z][a-z_0-9]*))?",
                                   text))
    return sorted(modules), sorted(launches)


# How each launch.sh command answers without doing work.
_LAUNCH_PROBES = {
    "ablations": ["configs/demo.py", "--dry-run"], "table1": ["configs/demo.py", "--dry-run"],
    "study": ["configs/demo.py", "--dry-run"], "multihost": ["configs/demo.py", "--dry-run"],
    "guided": ["configs/demo.py", "--dry-run"],
    "sweep": ["list"], "help": [], "train": ["configs/demo.py", "--help"],
}


def _probe(command):
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env,
                          timeout=300)
    return command, proc


def test_every_documented_command_answers_help_or_a_dry_run():
    modules, launches = documented_commands()
    assert "avgmm.main" in modules and ("table1", "") in {(a, "") for a, _ in launches}
    commands = [[sys.executable, "-m", m, "--help"] for m in modules]
    prepare_names = {e.prepare_name for e in registry.entries() if e.prepare_name}
    for name, arg in sorted(set(launches)):
        if name == "test":  # the suite itself
            continue
        if name in _LAUNCH_PROBES:
            args = _LAUNCH_PROBES[name]
        elif name == "prepare" and arg and arg not in prepare_names:
            args = ["--help"]  # a user's own dataset in a walk-through (`prepare mine`)
        elif name in ("prepare", "bench"):
            args = ([arg] if arg else []) + ["--help"]
        else:
            args = ["--help"]
        commands.append(["bash", "launch.sh", name, *args])
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(_probe, commands))
    for command, proc in results:
        out = proc.stdout + proc.stderr
        # absl answers --help with exit status 1; everything else with 0.
        assert proc.returncode in (0, 1) and "Traceback" not in out, (command, out[-2000:])
        assert out.strip(), command


def test_generated_blocks_of_the_pages_are_up_to_date():
    from avgmm import doc_blocks

    assert doc_blocks.main(["doc_blocks", "--check"]) == 0
