"""Experiments: named variants (overrides and a label), the sweeps made of them, and the
runner that executes a sweep for N seeds and summarizes it (`python -m avgmm.experiments`,
`./launch.sh SWEEP CONFIG`)."""

from avgmm.experiments.variants import (SWEEPS, Sweep, Variant, all_variants, find,  # noqa
                                        table1)

__all__ = ["SWEEPS", "Sweep", "Variant", "all_variants", "find", "table1"]
