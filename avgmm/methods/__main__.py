"""`python -m avgmm.methods`: the registered methods, their labels and tuned
hyper-parameter."""

import sys

from avgmm import methods

if __name__ == "__main__":
    if sys.argv[1:] and sys.argv[1:] != ["--help"]:
        sys.exit("usage: python -m avgmm.methods")
    for name, cls in methods.REGISTRY.items():
        doc = (cls.__doc__ or "").strip().split("\n")[0]
        tuned = ", ".join(f"{k} in {v}" for k, v in cls.tuning.items()) or "-"
        print(f"{name:14s} {cls.label}: {doc}\n{'':14s} tuned: {tuned}")
