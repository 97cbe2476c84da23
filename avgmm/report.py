"""Command line of avgmm/analysis/report.py; its usage is that module's docstring."""

from absl import app

from avgmm.analysis import report

__doc__ = report.__doc__  # absl prints the main module's docstring for --help

if __name__ == "__main__":
    report.define_flags()
    app.run(report.main)
