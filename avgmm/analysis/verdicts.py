"""The project's own verdicts, computed from its committed ledgers: does GMM guidance help
(the GMM-guidance study, four AV-MNIST settings), and what the equally tuned Table 1
says. `python -m avgmm.study` writes the study's verdict table; `python -m
avgmm.doc_blocks` writes README's headline from the same functions, so that no number in
them is typed by hand.

A setting *cannot tell* when the warm-up loss alone is within `HEADROOM_POINTS` of its own
accuracy on the clean clips: the degraded clips then cost so little that no treatment of
them can show; such a setting is reported, never pooled into the verdict.
"""

import os
import statistics
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from avgmm import experiments
from avgmm.analysis import comparison
from avgmm.experiments import ledger, tuning
from avgmm.experiments.variants import GUIDED_FINAL, GUIDED_PEERS

HEADROOM_POINTS = 2.0
REFERENCE = "warmup_only"
GUIDED = "guided_weak0"
PEERS = GUIDED_PEERS
# The study's rows beside the reference, in the table's order.
TREATMENTS = (("gmm_guided", GUIDED), ("eq. 10", "adaptive_paper"), ("ours", "adaptive_ours"))

Runs = Dict[str, List[Dict[str, Any]]]  # variant -> runs (`ledger.as_run`)


def _by_seed(runs: Sequence[Mapping[str, Any]], field: str = "test_accuracy") -> Dict[int, float]:
    return comparison.by_seed(list(runs), lambda results: results.get(field))


def mean_std(runs: Sequence[Mapping[str, Any]], field: str = "test_accuracy") -> str:
    """`mean ± sample std` (percent) over seeds."""
    return comparison.mean_std(list(_by_seed(runs, field).values()))


def paired(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]],
           field: str = "test_accuracy") -> Optional[Dict[str, float]]:
    """The paired difference a - b (points) over their common seeds, with its 95%
    Student-t interval; None without common seeds."""
    return comparison.paired(_by_seed(a, field), _by_seed(b, field))


def _reading(d: Optional[Mapping[str, float]]) -> str:
    if d is None or d["n"] < 2:
        return "untested"
    if d["lo"] > 0:
        return "better"
    if d["hi"] < 0:
        return "worse"
    return "level"


def best_peer(variants: Runs) -> Optional[str]:
    """The peer with the highest mean headline accuracy, the reference aside."""
    return comparison.best_peer(variants, PEERS, REFERENCE)


def guidance_row(name: str, variants: Runs) -> Dict[str, Any]:
    """One setting of the GMM-guidance study: the reference, its headroom, the best peer
    and each treatment's paired difference to both."""
    ref = variants.get(REFERENCE, [])
    overall = _by_seed(ref)
    clean = _by_seed(ref, "test_accuracy_clean")
    headroom = (100 * statistics.fmean(clean[s] - overall[s] for s in overall if s in clean)
                if set(overall) & set(clean) else None)
    peer = best_peer(variants)
    row = {"setting": name, "seeds": len(overall), "reference": mean_std(ref),
           "headroom": headroom, "can_tell": headroom is not None
           and headroom >= HEADROOM_POINTS, "peer": peer,
           "peer_acc": mean_std(variants[peer]) if peer else "-"}
    for label, variant in TREATMENTS:
        runs = variants.get(variant, [])
        row[label] = {"acc": mean_std(runs), "vs_reference": paired(runs, ref),
                      "vs_peer": paired(runs, variants[peer]) if peer else None}
    return row


def guidance_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The study's verdict table: per setting, the headroom and each treatment's paired
    differences (test accuracy at the best-validation checkpoint, points)."""
    header = ["setting", "seeds", "warm-up only", "clean − all (warm-up only)",
              "can tell?", "best peer"]
    for label, _ in TREATMENTS:
        header += [label, f"{label} vs warm-up only", f"{label} vs best peer"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["setting"], str(r["seeds"]), r["reference"],
                 "-" if r["headroom"] is None else f"{r['headroom']:.1f}",
                 "yes" if r["can_tell"] else "no", f"{r['peer']} {r['peer_acc']}"]
        for label, _ in TREATMENTS:
            t = r[label]
            cells += [t["acc"], comparison.format_difference(t["vs_reference"]),
                      comparison.format_difference(t["vs_peer"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def guidance_verdict(rows: Sequence[Mapping[str, Any]]) -> str:
    """One sentence: whether GMM guidance helps, over the settings that can tell."""
    telling = [r for r in rows if r["can_tell"]]
    mute = [r["setting"] for r in rows if not r["can_tell"]]
    tail = (f" ({', '.join(mute)}: the warm-up loss is within {HEADROOM_POINTS:.0f} points "
            "of its clean-clip accuracy, so that setting cannot tell)") if mute else ""
    if not telling:
        return "No setting can tell whether GMM guidance helps" + tail + "."
    by = {}
    for r in telling:
        by.setdefault(_reading(r["gmm_guided"]["vs_reference"]), []).append(r["setting"])
    parts = []
    for reading, words in (("better", "better than"), ("level", "level with"),
                           ("worse", "worse than"), ("untested", "not yet testable against")):
        if reading in by:
            parts.append(f"{words} the warm-up loss alone on {', '.join(by[reading])}")
    if "untested" in by:
        helps = "cannot be judged yet (fewer than two paired seeds)"
    elif set(by) == {"better"}:
        helps = "helps"
    else:
        helps = "does not help" if "better" not in by else "helps on some settings only"
    return (f"GMM guidance {helps}: gmm_guided is " + "; ".join(parts)
            + " (paired 95% intervals over seeds)" + tail + ".")


def table1_rows(variants: Runs) -> List[Tuple[str, str, str]]:
    """`(variant, accuracy, vs warm-up only)` of a Table 1 by mean accuracy."""
    ref = variants.get(REFERENCE, [])
    order = sorted(variants, key=lambda v: -statistics.fmean(_by_seed(variants[v]).values()
                                                             or [0.0]))
    return [(v, mean_std(variants[v]),
             comparison.format_difference(paired(variants[v], ref)) if v != REFERENCE else "-")
            for v in order]


def ledger_name(path: str) -> str:
    """A ledger's name: its file name without `.jsonl` (the setting, e.g. `noise`)."""
    return os.path.splitext(os.path.basename(path))[0]


# The project's own tables: their committed ledgers, relative to the repository.
TABLE1_LEDGER = "docs/table1/demo.jsonl"
TABLE1_REUSED = "docs/table1/av_mnist_noise.jsonl"
GUIDANCE_SETTINGS = ("noise", "graded", "two_sided", "none")
FINAL_SEEDS = 5


def guidance_ledger(setting: str) -> str:
    """The committed ledger of one setting of the GMM-guidance study."""
    return f"docs/gmm_guidance/{setting}.jsonl"


def _lines(repo: str, path: str) -> List[Dict[str, Any]]:
    return ledger.read([os.path.join(repo, path)])


def _grouped(lines: Sequence[Mapping[str, Any]]) -> Runs:
    out: Runs = {}
    for line in sorted(lines, key=lambda l: (l["variant"], l["seed"])):
        out.setdefault(line["variant"], []).append(ledger.as_run(line))
    return out


def _complete(variants: Runs, expected: Sequence[str]) -> bool:
    return all(len(_by_seed(variants.get(v, []))) >= FINAL_SEEDS for v in expected)


def _table1_line(repo: str, path: str, what: str, expected: Sequence[str],
                 tuned: bool) -> str:
    lines = _lines(repo, path)
    try:
        chosen = tuning.chosen_lines(lines, tuning.selection_of_lines(lines)) if tuned \
            else lines
    except ValueError:
        chosen = []
    variants = _grouped(chosen)
    if not lines or not _complete(variants, expected):
        state = (f"in progress, {len(lines)} runs recorded in `{path}`" if lines
                 else f"not started (its ledger will be `{path}`)")
        return (f"- {what}: {state}; `./launch.sh` resumes it from the ledger "
                "(docs/table1.md).\n")
    rows = table1_rows(variants)
    top = ", ".join(f"{v} {acc}" for v, acc, _ in rows[:3])
    ours = {v: d for v, _, d in rows}
    return (f"- {what}, {FINAL_SEEDS} seeds, test accuracy at the best-validation "
            f"checkpoint: best {top}; against the warm-up loss alone, gmm_guided "
            f"{ours.get('gmm_guided', '-')}, the paper's eq. 10 {ours.get('adaptive_paper', '-')}, "
            f"ours {ours.get('adaptive_ours', '-')} (points, paired 95% intervals; "
            f"`{path}`).\n")


def headline_block(repo: str) -> str:
    """README's headline results, from the committed ledgers alone (or where each sweep
    stands while it runs)."""
    table1 = [v.name for v in experiments.table1()]
    out = _table1_line(repo, TABLE1_LEDGER, "Table 1, equally tuned, demo data", table1, True)
    out += _table1_line(repo, TABLE1_REUSED, "Table 1 on AV-MNIST (noise), the demo's "
                        "choices", table1, False)
    settings = {s: _grouped(_lines(repo, guidance_ledger(s))) for s in GUIDANCE_SETTINGS}
    done = [s for s, v in settings.items() if _complete(v, GUIDED_FINAL)]
    if len(done) < len(GUIDANCE_SETTINGS):
        counts = ", ".join(f"{s} {sum(len(r) for r in v.values())}/"
                           f"{len(GUIDED_FINAL) * FINAL_SEEDS}" for s, v in settings.items())
        return out + (f"- Does GMM guidance help? In progress, runs recorded per setting: "
                      f"{counts} (docs/gmm_guidance.md).\n")
    rows = [guidance_row(s, settings[s]) for s in GUIDANCE_SETTINGS]
    return out + (f"- Does GMM guidance help? {guidance_verdict(rows)} "
                  "([docs/gmm_guidance/verdict.md](docs/gmm_guidance/verdict.md))\n")
