"""CREMA-D's human ratings (the real summaryTable.csv) joined to generated media."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

import media_fixtures
from data_prep import convert, crema_d, crema_ratings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE = os.path.join(os.path.dirname(REPO), "shared", "data", "crema_d", "summaryTable.csv")
SMALL = convert.FrameParams(num_frames=2, frame_size=16)
needs_table = pytest.mark.skipif(
    not os.path.exists(TABLE), reason=f"CREMA-D's real summaryTable.csv is not at {TABLE}")

# Real rows of the table, worked by hand (VoiceVote / FaceVote / MultiModalVote, levels):
HAND = {
    # A:D 37.2:58.6 | A 45.5 | A 44.2: the tie includes the intended anger.
    "1001_IEO_ANG_MD": dict(voice=True, face=True, av=True, levels=(37.2, 45.5, 44.2)),
    # N 71.67 | H 57 | H 57.38: only the face shows happiness.
    "1001_IEO_HAP_LO": dict(voice=False, face=True, av=True, levels=(71.67, 57.0, 57.38)),
    # F 60.6 | D 54 | F 44.8: only the voice carries the fear.
    "1001_DFA_FEA_XX": dict(voice=True, face=False, av=True, levels=(60.6, 54.0, 44.8)),
    # N 60.14 | A:F 30.67:51.00 | N 63.5: nobody saw sadness; a wrong tie's mean level.
    "1001_IEO_SAD_HI": dict(voice=False, face=False, av=False,
                            levels=(60.14, (30.67 + 51.0) / 2, 63.5)),
}


@needs_table
def test_the_rule_on_the_real_table_gives_the_published_shares():
    table = crema_ratings.read_table(TABLE)
    assert len(table) == 7442
    rated = [crema_ratings.rate(r, name.split("_")[2]) for name, r in table.items()]
    got = crema_ratings.proportions(rated)
    # The 71% / 48% / 39%, as counts of the 7,442 clips.
    assert got["counts"] == {
        "human_voice_right": 3563, "human_face_right": 5285, "human_av_right": 5706,
        "human_only_voice_right": 583, "human_only_face_right": 2305,
        "human_one_modality_uninformative": 2888, "both_right": 2980, "neither_right": 1574}
    assert got["shares"]["human_face_right"] == 0.7102
    assert got["shares"]["human_voice_right"] == 0.4788
    assert got["shares"]["human_one_modality_uninformative"] == 0.3881
    for name, want in HAND.items():
        r = crema_ratings.rate(table[name], name.split("_")[2])
        assert (r["human_voice_right"], r["human_face_right"], r["human_av_right"]) == \
            (want["voice"], want["face"], want["av"])
        np.testing.assert_allclose(
            [r["human_voice_level"], r["human_face_level"], r["human_av_level"]],
            want["levels"], rtol=1e-6)
        assert r["human_only_voice_right"] == (want["voice"] and not want["face"])
        assert r["human_only_face_right"] == (want["face"] and not want["voice"])
        assert r["human_one_modality_uninformative"] == (want["voice"] != want["face"])


def _tree_with_table(root: str, names) -> None:
    media_fixtures.make_crema_tree(root, ids=[(n, n.split("_")[2]) for n in names],
                                   broken=False)
    os.makedirs(os.path.join(root, "processedResults"))
    shutil.copy(TABLE, os.path.join(root, crema_ratings.RELATIVE_PATH))


@needs_table
def test_prepared_clips_record_the_human_flags(tmp_path):
    names = list(HAND) + ["1001_IEO_NEU_XX", "1001_IEO_HAP_HI", "1001_DFA_DIS_XX",
                          "1002_IEO_ANG_LO", "1001_IEO_SAD_LO", "1001_IEO_HAP_MD"]
    raw = str(tmp_path / "raw")
    _tree_with_table(raw, names)
    table = crema_d.summary_table_option(raw, "auto")  # found in the raw tree
    assert table == os.path.join(raw, "processedResults", "summaryTable.csv")
    assert crema_d.summary_table_option(raw, "none") is None
    data_dir = str(tmp_path / "data")
    convert.prepare(crema_d.CremaDAv, raw, data_dir, frames=SMALL, workers=1,
                    split_options={"summary_table": table})
    builder = tfds.builder("crema_d_av", data_dir=data_dir)
    features = builder.info.features
    for key in crema_ratings.BOOL_FEATURES:
        assert features[key].np_dtype == np.bool_
    for key in crema_ratings.FLOAT_FEATURES:
        assert features[key].np_dtype == np.float32
    meta = builder.info.metadata
    assert meta["human_ratings"] == f"summaryTable.csv: {crema_ratings.table_sha1(TABLE)}"
    # One modality only: HAP_LO, HAP_MD (face); FEA_XX, DIS_XX, 1002_IEO_ANG_LO (voice).
    summary = meta["summary"]["human_ratings"]
    assert summary["clips"] == 10
    assert summary["counts"]["human_one_modality_uninformative"] == 5
    seen = {}
    for split in builder.info.splits:
        src = tfds.data_source("crema_d_av", data_dir=data_dir, split=split)
        seen.update({src[i]["id"].decode(): src[i] for i in range(len(src))})
    assert sorted(seen) == sorted(names)
    for name, want in HAND.items():
        ex = seen[name]
        assert bool(ex["human_voice_right"]) == want["voice"]
        assert bool(ex["human_face_right"]) == want["face"]
        assert bool(ex["human_av_right"]) == want["av"]
        assert bool(ex["human_only_face_right"]) == (want["face"] and not want["voice"])
        assert bool(ex["human_only_voice_right"]) == (want["voice"] and not want["face"])
        np.testing.assert_allclose(
            [ex["human_voice_level"], ex["human_face_level"], ex["human_av_level"]],
            want["levels"], rtol=1e-6)
    assert bool(seen["1002_IEO_ANG_LO"]["human_only_voice_right"])  # A | D | D
    # Preparing again without the table is another dataset: refused, not mixed.
    with pytest.raises(convert.DataPrepError, match="summary_table"):
        convert.prepare(crema_d.CremaDAv, raw, data_dir, frames=SMALL, workers=1)


@needs_table
def test_a_clip_missing_from_the_table_is_one_clear_error(tmp_path):
    raw = str(tmp_path / "raw")
    _tree_with_table(raw, ["1001_IEO_NEU_XX", "1001_IEO_HAP_HI", "1001_DFA_DIS_XX"])
    media_fixtures.make_crema_tree(raw, ids=[("9999_IEO_NEU_XX", "NEU")], broken=False)
    with pytest.raises(convert.DataPrepError,
                       match=r"summaryTable.csv has no row for 1 clip\(s\), e.g. "
                             r"\['9999_IEO_NEU_XX'\]"):
        convert.prepare(crema_d.CremaDAv, raw, str(tmp_path / "data"), frames=SMALL,
                        workers=1, split_options={"summary_table": crema_d.summary_table_option(
                            raw, "auto")})


def test_a_malformed_table_is_refused_with_its_line(tmp_path):
    path = tmp_path / "summaryTable.csv"
    header = '"","FileName","VoiceVote","VoiceLevel","FaceVote","FaceLevel",' \
             '"MultiModalVote","MultiModalLevel"\n'
    path.write_text(header + '"1","1001_IEO_NEU_XX","N","69.1","N","92.22","N","64.78"\n'
                    '"2","1001_IEO_HAP_LO","N:H","71.67","H","57","H","57.38"\n')
    with pytest.raises(convert.DataPrepError, match=r"summaryTable.csv:3: VoiceVote / "
                                                    r"VoiceLevel of 1001_IEO_HAP_LO"):
        crema_ratings.read_table(str(path))
    path.write_text('"FileName","VoiceVote"\n"x","N"\n')
    with pytest.raises(convert.DataPrepError, match="lacks the columns"):
        crema_ratings.read_table(str(path))
    out = subprocess.run([sys.executable, "-m", "data_prep.crema_d", f"--raw_dir={tmp_path}",
                          f"--data_dir={tmp_path / 'd'}", "--summary_table=/nonexistent.csv"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1] == \
        "error: --summary_table=/nonexistent.csv does not exist"


HEADER = '"","FileName","VoiceVote","VoiceLevel","FaceVote","FaceLevel","MultiModalVote",' \
         '"MultiModalLevel"\n'
ROW_1 = '"1","1001_IEO_NEU_XX","N","69.1","N","92.22","N","64.78"\n'
ROW_2 = '"2","1001_IEO_HAP_LO","N","71.67","H","57","H","57.38"\n'


@pytest.mark.parametrize("content,message", [
    ((HEADER + ROW_1 + '"2","1001_IEO_HAP_LO","N","71.67",').encode(),
     r"summaryTable.csv:3: the row has 5 of the header's 8 fields \(a table cut off\?\)"),
    ((HEADER + ROW_1 + ROW_2).encode("utf-16"),
     r"summaryTable.csv is UTF-16 text \(a spreadsheet's Unicode export\): save it as CSV "
     r"UTF-8"),
    ((HEADER + ROW_1 + ROW_2).encode("utf-16-le"), r"holds NUL bytes"),
    (HEADER.encode() + bytes(range(128, 256)) * 4,
     r"summaryTable.csv is not UTF-8 text \(line 2, byte 97\)"),
    ((HEADER + ROW_1 + ROW_2 + ROW_1.replace('"69.1"', '"70"')).encode(),
     r"1001_IEO_NEU_XX is rated twice with other votes or levels \(lines 2 and 4\): keep "
     r"one row per clip"),
])
def test_a_cut_foreign_or_contradictory_table_is_one_line(content, message, tmp_path):
    path = tmp_path / "summaryTable.csv"
    path.write_bytes(content)
    with pytest.raises(convert.DataPrepError, match=message):
        crema_ratings.read_table(str(path))
    raw = str(tmp_path / "raw")
    media_fixtures.make_crema_tree(raw, ids=[("1001_IEO_NEU_XX", "NEU")], broken=False)
    out = subprocess.run([sys.executable, "-m", "data_prep.crema_d", f"--raw_dir={raw}",
                          f"--data_dir={tmp_path / 'd'}", f"--summary_table={path}",
                          "--workers=1"], capture_output=True, text=True, cwd=REPO,
                         timeout=300)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert lines[-1].startswith("error: ") and "summaryTable.csv" in lines[-1], lines[-1]


def test_a_clip_rated_twice_alike_is_read_once(tmp_path):
    path = tmp_path / "summaryTable.csv"
    path.write_text(HEADER + ROW_1 + ROW_2 + ROW_1)
    assert sorted(crema_ratings.read_table(str(path))) == ["1001_IEO_HAP_LO", "1001_IEO_NEU_XX"]
