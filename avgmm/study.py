"""Command line of avgmm/analysis/study.py; its usage is that module's docstring."""

from absl import app

from avgmm.analysis import study

__doc__ = study.__doc__  # absl prints the main module's docstring for --help

if __name__ == "__main__":
    study.define_flags()
    app.run(study.main)
