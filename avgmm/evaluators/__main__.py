"""`python -m avgmm.evaluators`: the registered evaluators and the fields they produce."""

import sys

from avgmm import cli, evaluators

if __name__ == "__main__":
    if sys.argv[1:] and sys.argv[1:] != ["--help"]:
        cli.usage_error(f"unexpected arguments {sys.argv[1:]}: usage: python -m avgmm.evaluators")
    for name, doc in evaluators.describe().items():
        cls = evaluators.REGISTRY[name]
        keys = ", ".join(f.key for f in cls.fields + cls.final_fields) or "(writes a file)"
        print(f"{name:18s} {doc}\n{'':18s} fields: {keys}")
