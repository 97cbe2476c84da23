"""Command line of avgmm/analysis/study.py; its usage is that module's docstring."""

from avgmm import cli
from avgmm.analysis import study

__doc__ = study.__doc__  # absl prints the main module's docstring for --help

if __name__ == "__main__":
    study.define_flags()
    cli.run(study.main)
