"""Command line of avgmm/analysis/report.py; its usage is that module's docstring."""

from avgmm import cli
from avgmm.analysis import report

__doc__ = report.__doc__  # absl prints the main module's docstring for --help

if __name__ == "__main__":
    report.define_flags()
    cli.run(report.main)
