"""Per-clip predictions of the best-validation checkpoint on the test split, written to
the workdir's `predictions.csv`: what a paired, per-clip comparison of runs needs."""

import csv
import io

import numpy as np

from avgmm import files
from avgmm.evaluators import base
from avgmm.workdir import Workdir

# Per-sample columns of the pass, in the file's order after id and label.
_COLUMNS = ("pred", "pred_audio", "pred_visual", "p_audio", "p_visual", "gap")


def predictions_csv(host, class_names) -> str:
    """The rows of a per-sample pass as CSV text: id, label, the multimodal and unimodal
    predictions (class names), the true-class probabilities, the gap, and every per-clip
    ground-truth field the data has."""
    extra = [k for k in host if k not in _COLUMNS + ("index", "id", "label")]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "label", *_COLUMNS, *extra])
    for i in range(len(host["label"])):
        row = [host["id"][i], class_names[int(host["label"][i])]]
        for k in _COLUMNS:
            v = host[k][i]
            row.append(class_names[int(v)] if k.startswith("pred") else f"{float(v):.6f}")
        row += [int(np.asarray(host[k][i])) for k in extra]
        writer.writerow(row)
    return out.getvalue()


class Predictions(base.Evaluator):
    """Per-clip predictions (multimodal, audio-only, visual-only) of the best-validation
    checkpoint on the test split -> predictions.csv."""

    name = "predictions"
    passes = ("samples",)

    def final(self, ctx):
        _, host = ctx.samples("test", "best")
        if ctx.par.is_primary:
            files.write_text(ctx.workdir.file(Workdir.PREDICTIONS),
                             predictions_csv(host, ctx.ds.meta.class_names))
        return {}
