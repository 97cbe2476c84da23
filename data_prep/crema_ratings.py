"""CREMA-D's human ratings (`processedResults/summaryTable.csv`) as per-clip ground truth.

CREMA-D's raters labelled every clip three times: from the voice alone, from the face
alone and from both. The summary table gives, per clip and per presentation, the
plurality emotion (`VoiceVote`, `FaceVote`, `MultiModalVote`; several letters joined by
`:` when tied) and the mean intensity that the raters who chose it gave it (`VoiceLevel`,
... in 0-100; one number per tied emotion). The intended emotion is the clip name's
third field.

The rule (`rate`): a presentation is **right** when the intended emotion is among its
plurality emotions (a tie that includes it counts). A clip where exactly one of voice
alone and face alone is right has one modality that did not inform people: the other
one carried the emotion. Its sign is kept, because the two cases are different
imbalances: `human_only_voice_right` (the face misled or said nothing) and
`human_only_face_right` (the voice did). On the real table (7,442 clips) this gives:
voice alone right 47.88%, face alone right 71.02%, exactly one right 38.81% (583 voice
only, 2,305 face only), both 40.04%, neither 21.15%.

A level is the intended emotion's level when it is among the plurality, otherwise the
mean of the plurality's levels (the table has no level for an emotion nobody chose most).
"""

import csv
import dataclasses
import hashlib
import io
import os
from typing import Dict, Iterator, Mapping, Sequence

import numpy as np

from data_prep.convert import DataPrepError

# The table's emotion letters, by the three-letter code in the clip names.
LETTER = {"ANG": "A", "DIS": "D", "FEA": "F", "HAP": "H", "NEU": "N", "SAD": "S"}
# Where the dataset's repository keeps the table, relative to the CREMA-D root.
RELATIVE_PATH = os.path.join("processedResults", "summaryTable.csv")
PRESENTATIONS = {"voice": "Voice", "face": "Face", "av": "MultiModal"}
# The per-clip features, with their dtypes: what the converter stores and the loader carries.
BOOL_FEATURES = ("human_voice_right", "human_face_right", "human_av_right",
                 "human_only_voice_right", "human_only_face_right",
                 "human_one_modality_uninformative")
FLOAT_FEATURES = ("human_voice_level", "human_face_level", "human_av_level")


@dataclasses.dataclass(frozen=True)
class Rating:
    """One table row: the plurality emotions and their levels, per presentation."""

    votes: Mapping[str, Sequence[str]]  # presentation -> letters, e.g. ("A", "D")
    levels: Mapping[str, Sequence[float]]  # presentation -> one level per letter


def _text(path: str) -> io.StringIO:
    """The table's text, refused in one line when it is not UTF-8 text: a spreadsheet's
    "Unicode text" export (UTF-16, named by its byte-order mark) or binary bytes."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise DataPrepError(f"--summary_table={path} is UTF-16 text (a spreadsheet's "
                            "Unicode export): save it as CSV UTF-8")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataPrepError(f"--summary_table={path} is not UTF-8 text (line {line}, byte "
                            f"{e.start}): pass CREMA-D's {RELATIVE_PATH}, saved as CSV "
                            "UTF-8") from None
    if "\0" in text:
        raise DataPrepError(f"--summary_table={path} holds NUL bytes (UTF-16 without a "
                            "byte-order mark, or not text): save CREMA-D's "
                            f"{RELATIVE_PATH} as CSV UTF-8")
    return io.StringIO(text, newline="")


def _rows(reader: csv.DictReader, path: str) -> Iterator[Dict[str, str]]:
    """The reader's rows; what the csv module cannot parse is one error naming the line."""
    try:
        yield from reader
    except csv.Error as e:
        raise DataPrepError(f"{path}:{reader.line_num}: not a CSV row ({e}): pass CREMA-D's "
                            f"{RELATIVE_PATH}") from None


def read_table(path: str) -> Dict[str, Rating]:
    """`{clip name: Rating}` from a summary table. A malformed row (a cut-off line
    included), a table that is not UTF-8 text or a clip rated twice with other votes is a
    DataPrepError naming the file and the line."""
    if not os.path.isfile(path):
        raise DataPrepError(f"--summary_table={path} does not exist")
    out: Dict[str, Rating] = {}
    first_line: Dict[str, int] = {}
    reader = csv.DictReader(_text(path))
    columns = {c.lower(): c for c in (reader.fieldnames or []) if c}
    needed = ["filename"] + [f"{p}{k}".lower() for p in PRESENTATIONS.values()
                             for k in ("Vote", "Level")]
    absent = [c for c in needed if c not in columns]
    if absent:
        raise DataPrepError(
            f"{path} lacks the columns {absent}: is it CREMA-D's "
            f"{RELATIVE_PATH} (FileName, VoiceVote, VoiceLevel, FaceVote, ...)?")
    for lineno, row in enumerate(_rows(reader, path), 2):
        if any(row.get(columns[c]) is None for c in needed):
            # DictReader fills the fields a short row lacks with None: a cut-off table.
            raise DataPrepError(
                f"{path}:{lineno}: the row has {len([v for v in row.values() if v is not None])}"
                f" of the header's {len(reader.fieldnames)} fields (a table cut off?): "
                f"pass the complete {RELATIVE_PATH}")
        name = row[columns["filename"]].strip()
        votes, levels = {}, {}
        for key, prefix in PRESENTATIONS.items():
            letters = row[columns[f"{prefix}Vote".lower()]].strip().split(":")
            numbers = row[columns[f"{prefix}Level".lower()]].strip().split(":")
            try:
                values = [float(x) for x in numbers]
            except ValueError:
                values = []
            if (len(values) != len(letters)
                    or not set(letters) <= set(LETTER.values())
                    or not all(np.isfinite(values))):
                raise DataPrepError(
                    f"{path}:{lineno}: {prefix}Vote / {prefix}Level of {name} should be "
                    f"emotion letters and as many levels joined by ':', got "
                    f"{row[columns[f'{prefix}Vote'.lower()]]!r} / "
                    f"{row[columns[f'{prefix}Level'.lower()]]!r}")
            votes[key], levels[key] = tuple(letters), tuple(values)
        rating = Rating(votes, levels)
        if name in out and out[name] != rating:
            # Which row is right cannot be told; the later one must not win in silence.
            raise DataPrepError(
                f"{path}: {name} is rated twice with other votes or levels (lines "
                f"{first_line[name]} and {lineno}): keep one row per clip")
        out[name] = rating
        first_line.setdefault(name, lineno)
    if not out:
        raise DataPrepError(f"{path} has no rows")
    return out


def table_sha1(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def rate(rating: Rating, emotion: str) -> Dict[str, object]:
    """The per-clip features of one clip whose intended emotion is `emotion` (e.g. ANG)."""
    letter = LETTER[emotion]
    out: Dict[str, object] = {}
    for key in PRESENTATIONS:
        votes, levels = rating.votes[key], rating.levels[key]
        right = letter in votes
        out[f"human_{key}_right"] = right
        out[f"human_{key}_level"] = np.float32(
            levels[votes.index(letter)] if right else float(np.mean(levels)))
    voice, face = out["human_voice_right"], out["human_face_right"]
    out["human_only_voice_right"] = voice and not face
    out["human_only_face_right"] = face and not voice
    out["human_one_modality_uninformative"] = voice != face
    return out


def rate_clips(table: Mapping[str, Rating], labels: Mapping[str, str],
               path: str) -> Dict[str, Dict[str, object]]:
    """Features of every clip in `labels` (`{clip: EMO}`); a clip the table lacks is an
    error (the table rates all 7,442 CREMA-D clips)."""
    absent = sorted(c for c in labels if c not in table)
    if absent:
        raise DataPrepError(
            f"{path} has no row for {len(absent)} clip(s), e.g. {absent[:3]}; pass the "
            "summary table of the same CREMA-D download, or --summary_table=none")
    return {c: rate(table[c], emo) for c, emo in labels.items()}


def proportions(rated: Sequence[Mapping[str, object]]) -> Dict[str, object]:
    """Share of clips per human category (the dataset records it in its summary)."""
    n = len(rated)
    count = {k: int(sum(bool(r[k]) for r in rated)) for k in BOOL_FEATURES}
    both = int(sum(bool(r["human_voice_right"] and r["human_face_right"]) for r in rated))
    neither = n - both - count["human_one_modality_uninformative"]
    shares = {k: round(v / n, 4) if n else None for k, v in count.items()}
    return {"clips": n, "counts": {**count, "both_right": both, "neither_right": neither},
            "shares": {**shares, "both_right": round(both / n, 4) if n else None,
                       "neither_right": round(neither / n, 4) if n else None}}
