"""Command line of avgmm/analysis/analyze.py; its usage is that module's docstring."""

from avgmm import cli
from avgmm.analysis import analyze

__doc__ = analyze.__doc__  # absl prints the main module's docstring for --help

if __name__ == "__main__":
    analyze.define_flags()
    cli.run(analyze.main)
