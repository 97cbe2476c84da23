"""`python -m avgmm.methods`: the registered methods, their labels and the hyper-parameter
an equal tuning varies."""

import sys

from avgmm import cli, methods


def _value(v) -> str:
    """A tuning value as a reader types it (`0.8`, `True`)."""
    return f"{v:g}" if isinstance(v, float) else str(v)


if __name__ == "__main__":
    if sys.argv[1:] and sys.argv[1:] != ["--help"]:
        cli.usage_error(f"unexpected arguments {sys.argv[1:]}: usage: python -m avgmm.methods")
    width = max(len(name) for name in methods.REGISTRY) + 2
    for name, cls in methods.REGISTRY.items():
        doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
        tuned = ", ".join(f"{k} in ({', '.join(_value(v) for v in values)})"
                          for k, values in cls.tuning.items()) or "-"
        print(f"{name:{width}s}{cls.label}: {doc}\n{'':{width}s}tuned: {tuned}")
