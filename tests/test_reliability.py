"""The edges a user meets first, each answered in one line: command-line mistakes, the
analysis of every method's run, non-finite settings and divergence, damaged caches,
absurd preprocessing, converters' inputs and workers, --fresh, full disks, Ctrl-C while
saving, an unwritable compilation cache (docs/reliability.md lists what each shows)."""

import json
import logging as py_logging
import os
import shutil
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest

from avgmm import checkpoints, divergence, errors, evaluation, main, methods, run_config, train
from avgmm.analysis import plots
from avgmm.workdir import Workdir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=REPO, PYTHON=sys.executable)


def _run(*args, **kwargs):
    return subprocess.run(list(args), cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=kwargs.pop("timeout", 120), **kwargs)


def _one_error_line(proc, status: int = 2) -> str:
    """The single stderr line of a refused command (its status checked)."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == status and len(lines) == 1, (proc.returncode, proc.stderr)
    assert lines[0].startswith("error: "), lines
    return lines[0]


# --------------------------------------------------------------------------- command lines
def test_launch_refuses_bad_arguments_of_train_and_multihost_before_anything_runs(tmp_path):
    launch = os.path.join(REPO, "launch.sh")
    line = _one_error_line(_run("bash", launch, "train", "--workdir=x"))
    assert "train needs a config file first" in line and "basename" not in line
    line = _one_error_line(_run("bash", launch, "train", "configs/tiny.py", "--workdir=/"))
    assert "--workdir='/' is not allowed" in line
    for args, expected in (
            (["--workdir=", "--dry-run"], "--workdir is required"),
            (["--workdir=/", "--dry-run"], "--workdir='/' is not allowed"),
            (["--bogus", "--dry-run"], "Unknown command line flag 'bogus'"),
            (["--config.optimizer.learning_rate=nan", "--dry-run"],
             "config.optimizer.learning_rate=nan is not allowed")):
        proc = _run("bash", launch, "multihost", "configs/tiny.py", *args)
        assert expected in _one_error_line(proc), args
        assert "srun" not in proc.stdout  # nothing printed as if it would run
    line = _one_error_line(_run("bash", launch, "multihost", "configs/nope.py", "--dry-run"))
    assert "config file 'configs/nope.py' not found" in line
    assert "unknown benchmark 'bogus'" in _one_error_line(_run("bash", launch, "bench", "bogus"))


@pytest.mark.parametrize("args,expected", [
    (["-m", "avgmm.analyze"], "--workdir is required"),
    (["-m", "avgmm.analyze", "--workdir=/"], "--workdir='/' is not allowed"),
    (["-m", "avgmm.analyze", "--workdir=x", "--bogus"], "Unknown command line flag 'bogus'"),
    (["-m", "avgmm.report"], "name the runs"),
    (["-m", "avgmm.demo", "--workdir=/"], "--workdir='/' is not allowed"),
    (["-m", "avgmm.study", "a", "b"], "name one study folder"),
    (["-m", "data_prep.folder", "--csv={tmp}/clips.csv", "--hop_length=100000"],
     "hop_length=100000 leaves 1 time frame(s)"),
    (["-m", "data_prep.crema_d"], "--raw_dir"),
    (["benchmarks/gmm_bench.py", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_every_program_answers_a_mistake_in_one_line_with_status_2(args, expected, tmp_path):
    (tmp_path / "clips.csv").write_text("video_path,label\na.mp4,dog\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert expected in _one_error_line(_run(sys.executable, *args))


def test_another_methods_setting_is_said_to_be_unused():
    proc = _run(sys.executable, "-m", "avgmm.main", "--config=configs/tiny.py",
                "--workdir=runs/never", "--config.method=mla", "--config.ogm_ge.alpha=-5",
                "--config.mla.audio_weight=0.4", "--check_only")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "warning: unused override(s) --config.ogm_ge.alpha=-5.0: config.method='mla' reads "
        "only its own section of the methods' settings (config.mla); the run goes on "
        "without them"]
    assert not os.path.exists(os.path.join(REPO, "runs", "never"))


# --------------------------------------------------------------------------- analysis
# The train terms each registered method logs (as in a tiny run's metrics.jsonl) and its
# phases; a method added to the registry must be added here.
LOGGED = {
    "concat": (["concat"], ["ce_fused"]),
    "g_blending": (["g_blending"], ["ce_audio", "ce_fused", "ce_visual", "kept_fraction",
                                    "w_audio", "w_fused", "w_visual"]),
    "ogm_ge": (["ogm_ge"], ["ce_audio", "ce_fused", "ce_visual", "coeff_a", "coeff_v",
                            "ratio_v"]),
    "greedy": (["greedy"], ["ce_audio", "ce_fused", "ce_visual", "d_speed", "rebalancing"]),
    "pmr": (["pmr"], ["ce_fused", "coef_audio", "coef_visual", "proto_ce_audio",
                      "proto_ce_visual", "proto_entropy_audio", "proto_entropy_visual",
                      "rho"]),
    "agm": (["agm"], ["ce_audio", "ce_fused", "ce_visual", "clipped", "coeff_a", "coeff_v",
                      "score_audio", "score_visual"]),
    "mla": (["mla"], ["ce_audio", "ce_fused", "ce_visual", "fusion_weight_audio",
                      "projection_alpha_audio"]),
    "diagnose_relearn": (["diagnose_relearn"], ["ce_fused"]),
    "opm_ogm": (["opm_ogm"], ["ce_audio", "ce_fused", "ce_visual", "coeff_a", "executed",
                              "kept_audio", "q_a"]),
    "ogm": (["ogm"], ["ce_audio", "ce_fused", "ce_visual", "coeff_a", "coeff_v", "ratio_v"]),
    "opm": (["opm"], ["ce_audio", "ce_fused", "ce_visual", "executed", "kept_audio", "q_a"]),
    "mmpareto": (["mmpareto"], ["ce_audio", "ce_fused", "ce_visual", "cos_audio",
                                "k_mm_audio"]),
    "sample_valuation": (["sample_valuation"], ["ce_audio_only", "ce_fused", "ce_visual_only",
                                                "copies_audio"]),
    "remix": (["warmup", "remix"], ["audio_fraction", "ce_audio", "ce_fused", "ce_visual",
                                    "loss_audio_samples", "loss_visual_samples"]),
    "tcmax": (["tcmax"], ["ce_audio", "ce_fused", "ce_visual", "log_z", "tc_loss_audio",
                          "tc_loss_visual"]),
    "warmup_only": (["warmup"], ["ce_audio", "ce_fused", "ce_visual"]),
    "gmm_guided": (["warmup", "guided"], ["ce_audio", "ce_fused", "ce_visual", "w_imb_mean",
                                          "weak_weight_mean"]),
    "adaptive": (["warmup", "adaptive"], ["ce_audio", "ce_fused", "ce_visual", "gap_mean",
                                          "gap_shift", "gap_sq", "w_imb_mean",
                                          "weighted_ce"]),
}


def _records(method):
    phases, keys = LOGGED[method]
    records = []
    for epoch, phase in enumerate(phases, 1):
        train_terms = {k: 0.1 * (i + 1) for i, k in enumerate(keys)}
        if phase == "warmup":  # the warm-up phases log the paper's warm-up terms only
            train_terms = {k: v for k, v in train_terms.items()
                           if k in ("ce_fused", "ce_audio", "ce_visual")}
        train_terms.update(loss=2.0, accuracy=0.5, learning_rate=0.01,
                           samples_per_second=100.0)
        records.append({"epoch": epoch, "phase": phase, "train": train_terms,
                        "val": {"accuracy": 0.5, "accuracy_audio": 0.4,
                                "accuracy_visual": 0.3}})
    return records


def test_the_loss_figure_of_every_registered_method_names_its_logged_terms(tmp_path):
    assert set(LOGGED) == set(methods.REGISTRY)  # a new method needs its row above
    mla = _records("mla")[0]
    assert plots.loss_terms(mla, {}, "mla") == {
        "total loss": 2.0, "CE(audio)": 0.1, "CE(fused)": 0.2, "CE(visual)": 0.30000000000000004}
    pmr = plots.loss_terms(_records("pmr")[0], {}, "pmr")
    assert list(pmr) == ["total loss", "CE(fused)", "prototype CE(audio)",
                         "prototype CE(visual)", "prototype entropy (audio)",
                         "prototype entropy (visual)"]  # no coefficient, no rho
    remix = plots.loss_terms(_records("remix")[1], {}, "remix")
    assert "loss of the audio-trained samples" in remix and "audio_fraction" not in str(remix)
    # The paper's methods keep their weighted terms.
    adaptive = plots.loss_terms(_records("adaptive")[1], {"alpha": 1.0, "beta": 0.0,
                                                          "gamma": 2.0}, "adaptive")
    assert adaptive == {"total loss": 2.0, "alpha * w_bal * CE(fused)": 0.8,
                        "lambda_t * gamma * w_imb * (g - mu_0)^2": 2 * 0.5}
    for method in LOGGED:
        path = str(tmp_path / f"{method}.png")
        plots.losses(path, _records(method), {}, method, method=method)
        assert os.path.getsize(path) > 5000


# --------------------------------------------------------------------------- settings
def _float_fields(config, prefix=""):
    for key, value in config.items():
        if hasattr(value, "items"):
            yield from _float_fields(value, f"{prefix}{key}.")
        elif isinstance(value, float):
            yield f"{prefix}{key}"


def _set(config, field, value):
    *parents, leaf = field.split(".")
    node = config
    for p in parents:
        node = node[p]
    node[leaf] = value


def test_every_float_setting_of_every_method_refuses_nan_and_inf_before_compiling():
    from configs import tiny

    fields = list(_float_fields(tiny.get_config()))
    # The methods' own settings are among them (the config holds every method's).
    assert {"mmpareto.gamma", "ogm_ge.alpha", "pmr.alpha", "data.cache_max_gb",
            "optimizer.learning_rate"} <= set(fields)
    for field in fields:
        for bad in (float("nan"), float("inf"), -float("inf")):
            config = tiny.get_config()
            config.method = field.split(".")[0] if field.split(".")[0] in methods.REGISTRY \
                else "adaptive"
            _set(config, field, bad)
            if field == "data.cache_max_gb" and bad == float("inf"):
                run_config.validate_config(config, num_devices=1)  # inf: no limit
                continue
            with pytest.raises(errors.UserError, match=rf"config\.{field}=.* is not allowed"):
                run_config.validate_config(config, num_devices=1)


def test_checkpoint_keep_below_one_is_refused():
    from configs import tiny

    config = tiny.get_config()
    for keep in (0, -1):
        config.checkpoint_keep = keep
        with pytest.raises(errors.UserError, match=r"config\.checkpoint_keep=.* integer >= 1"):
            run_config.validate_config(config, num_devices=1)


# --------------------------------------------------------------------------- divergence
class _FakeData:
    """A dataset whose clip `bad` (if any) has NaN audio."""

    def __init__(self, n: int, bad=None):
        self.meta = types.SimpleNamespace(
            num_examples={"train": n, "validation": n, "test": n}, name="fake")
        self.bad, self.data_dir = bad, "/data"

    def read(self, split, indices):
        audio = np.zeros((len(indices), 2, 3), np.float16)
        for row, i in enumerate(indices):
            if i == self.bad:
                audio[row, 0, 1] = np.nan
        return {"audio": audio}


def _par_returning(host):
    return types.SimpleNamespace(
        model=None, method=None,
        config=types.SimpleNamespace(data=types.SimpleNamespace(image_size=16)),
        sample_rows=lambda *args, **kwargs: ({}, host))


def test_a_gap_collection_finding_nan_is_divergence_naming_cause_and_last_good():
    host = {"gap": np.array([0.1, np.nan, 0.2, np.inf]), "index": np.arange(4),
            "id": np.array(["a", "b", "c", "d"], dtype=object)}
    with pytest.raises(errors.DivergedError) as e:
        evaluation.sample_rows(_par_returning(host), None, _FakeData(4), "train", 4,
                               last_good=lambda: "the last good checkpoint is ck/latest/2")
    message = str(e.value)
    assert message.startswith("the model diverged: 2 of 4 modality gaps on the train split "
                              "are NaN or inf (first: clip b, index 1); their inputs are "
                              "finite: the model's outputs overflowed")
    assert "the last good checkpoint is ck/latest/2" in message
    assert message.endswith("Lower config.optimizer.learning_rate and start again with --fresh")
    with pytest.raises(errors.DivergedError, match=r"the audio input of 1 train clip\(s\) "
                       r"holds NaN or inf \(first: index 3\).*prepare it again"):
        evaluation.sample_rows(_par_returning(host), None, _FakeData(4, bad=3), "train", 4)


def test_divergence_names_what_is_non_finite_and_the_data_it_came_from():
    tree = {"parameters": {"enc": {"w": np.array([1.0, np.nan, np.inf])}},
            "optimizer state": {"m": np.zeros(2)}}
    with pytest.raises(errors.DivergedError) as e:
        divergence.check_finite(3, tree, float("nan"), "the last good checkpoint is x/2",
                                _FakeData(5, bad=4))
    assert str(e.value).startswith(
        "training diverged in epoch 3 (the epoch's mean loss is nan; NaN or inf in the "
        "parameters (first: enc/w (2 of 3 values))): the audio input of 1 train clip(s) "
        "holds NaN or inf (first: index 4), read from the prepared dataset fake in /data")
    assert "optimizer state" not in str(e.value) and "learning_rate" not in str(e.value)
    with pytest.raises(errors.DivergedError, match=r"outputs are NaN or inf on the "
                       r"validation split \(loss nan\).*the validation inputs are finite \(all 5 "
                       r"clips "
                       r"checked\).*updates blew up"):
        divergence.check_outputs(2, {"val": {"loss": float("nan")}, "test": {"loss": 1.0}},
                                 "x", _FakeData(5))
    divergence.check_outputs(2, {"val": {"loss": 1.0}, "test": {"loss": 2.0}}, "x")


def test_nan_in_the_decoded_cache_is_blamed_on_the_cache_not_the_learning_rate(tiny_config,
                                                                                tmp_path):
    config = tiny_config
    config.method, config.epochs = "concat", 1
    config.data.cache_dir = str(tmp_path / "cache")
    ds = run_config.open_dataset(config)  # builds this test's own cache
    audio_file = ds.cache["train"]["audio"].filename
    audio = np.load(audio_file, mmap_mode="r+")
    audio[5, 0, :3] = np.nan
    audio.flush()
    del audio, ds
    workdir = str(tmp_path / "run")
    with pytest.raises(errors.DivergedError) as e:
        train.train_and_evaluate(config, workdir)
    message = str(e.value)
    assert "the audio input of 1 train clip(s) holds NaN or inf (first: index 5), read from " \
           f"the decoded cache {os.path.dirname(audio_file)}" in message
    assert message.endswith(f"The prepared records are finite: delete the decoded cache "
                            f"{os.path.dirname(audio_file)} (the next run rebuilds it) and "
                            "run the same command again")
    assert "learning_rate" not in message
    assert not [d for d in os.listdir(os.path.join(workdir, "checkpoints", "latest"))
                if d.isdigit()]


def test_nonfinite_evaluation_outputs_stop_the_run_before_the_epoch_is_saved(
        tiny_config, tmp_path, monkeypatch):
    config = tiny_config
    config.method, config.epochs = "concat", 2
    real = evaluation.evaluate
    calls = {"n": 0}

    def nan_in_epoch_2(par, state, ds, split, *args):
        out = real(par, state, ds, split, *args)
        calls["n"] += 1
        if calls["n"] > 2:  # epoch 2's validation and test passes
            out = dict(out, loss=float("nan"))
        return out

    monkeypatch.setattr(evaluation, "evaluate", nan_in_epoch_2)
    workdir = str(tmp_path / "run")
    with pytest.raises(errors.DivergedError, match=r"training diverged in epoch 2 \(the "
                       r"model's outputs are NaN or inf on the validation split \(loss nan\) and "
                       r"the test split \(loss nan\).*the last good checkpoint is .*latest/1\."):
        train.train_and_evaluate(config, workdir)
    assert Workdir(workdir).latest_epoch() == 1
    assert [r["epoch"] for r in Workdir(workdir).read_metrics()] == [1]


# --------------------------------------------------------------------------- data
def test_a_damaged_decoded_cache_is_named_and_rebuilt(tiny_data_dir, tmp_path, capsys):
    from avgmm.data import pipeline

    cache = str(tmp_path / "cache")
    ds = pipeline.load_dataset("avsynth/tiny", tiny_data_dir, 1, cache_dir=cache)
    expected = np.array(ds.cache["train"]["audio"])
    path = os.path.dirname(ds.cache["train"]["audio"].filename)
    del ds
    audio_file = os.path.join(path, "audio.npy")
    with open(audio_file, "r+b") as f:
        f.truncate(os.path.getsize(audio_file) // 2)
    capsys.readouterr()
    ds = pipeline.load_dataset("avsynth/tiny", tiny_data_dir, 1, cache_dir=cache)
    out = capsys.readouterr().out
    assert (f"the decoded cache {path} is damaged ({audio_file}: ValueError: mmap length is "
            "greater than file size); rebuilding it") in out
    np.testing.assert_array_equal(np.asarray(ds.cache["train"]["audio"]), expected)
    with open(os.path.join(path, "id.json"), "w") as f:  # a damaged id list too
        f.write('["a", "b"')
    ds = pipeline.load_dataset("avsynth/tiny", tiny_data_dir, 1, cache_dir=cache)
    assert "id.json: JSONDecodeError" in capsys.readouterr().out
    assert len(ds.cache["train"]["id"]) == 48


def test_absurd_spectrogram_parameters_are_refused_naming_the_bound():
    from data_prep.features import AudioParams

    ok = AudioParams(sample_rate=22050, clip_seconds=3.0, hop_length=9450)
    assert ok.shape == (257, 8)
    for kwargs, message in (
            ({"hop_length": 100000}, r"hop_length=100000 leaves 1 time frame\(s\) in a 3 s "
                                     r"clip .* at least 8 are needed: use hop_length <= 9450"),
            ({"hop_length": 9451}, r"use hop_length <= 9450"),
            ({"n_fft": 100000}, r"n_fft=100000 exceeds the 66150 samples of a 3 s clip at "
                                r"22050 Hz: use n_fft <= 66150"),
            ({"n_fft": 8}, r"n_fft=8 gives 5 frequency bin\(s\); at least 8 are needed: use "
                           r"n_fft >= 14")):
        with pytest.raises(ValueError, match=message):
            AudioParams(sample_rate=22050, clip_seconds=3.0, **kwargs)


def test_a_csv_with_a_byte_order_mark_reads_like_one_without(tmp_path):
    from data_prep import folder

    (tmp_path / "a.mp4").write_bytes(b"")
    text = "video_path,label\na.mp4,dog\n"
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    (tmp_path / "plain.csv").write_text(text)
    rows = folder.read_clip_csv(str(tmp_path / "bom.csv"))
    assert rows == folder.read_clip_csv(str(tmp_path / "plain.csv"))
    assert [(os.path.basename(r.video), r.label) for r in rows] == [("a.mp4", "dog")]


def test_clips_padded_by_more_than_half_are_reported(tmp_path, capsys):
    import media_fixtures as mf
    from data_prep import convert, folder

    lines = ["video_path,label,split,audio_path"]
    for i, seconds in enumerate((3.0, 0.3, 2.0, 1.2)):
        video, wav = str(tmp_path / f"c{i}.mp4"), str(tmp_path / f"c{i}.wav")
        mf.write_video(video, mf.moving_frames(6, 32, 32, seed=i), 2, None, 22050, "mp4")
        mf.write_wav(wav, mf.tone(seconds, 22050, 300 + 50 * i), 22050)
        lines.append(f"{video},{'ab'[i % 2]},train,{wav}")
    (tmp_path / "clips.csv").write_text("\n".join(lines) + "\n")
    data_dir = str(tmp_path / "data")
    convert.prepare(folder.builder_class("padded_av"), str(tmp_path), data_dir,
                    frames=convert.FrameParams(2, 16), workers=1,
                    csv_path=str(tmp_path / "clips.csv"))
    out = capsys.readouterr().out
    report = os.path.join(data_dir, "padded_av", "padded.jsonl")
    assert (f"padded_av: 2 kept clip(s) have less than half of the 3 s of audio and are "
            f"mostly repeats of it (e.g. {tmp_path}/c1.wav: 0.30 s); listed in {report}") in out
    with open(report) as f:
        rows = [json.loads(line) for line in f]
    assert [(os.path.basename(r["audio"]), r["seconds"]) for r in rows] == [
        ("c1.wav", 0.3), ("c3.wav", 1.2)]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie is dead
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_converter_workers_die_with_the_converter(tmp_path):
    script = tmp_path / "converter.py"
    script.write_text(f"""
import os, sys, time
sys.path.insert(0, {REPO!r})
from data_prep import convert
def stuck(args):
    print(os.getpid(), flush=True)
    time.sleep(120)
convert._decode_star = stuck  # the forked workers run this in place of decoding
clips = [convert.Clip(key=f"k{{i}}", clip_id=str(i), label="a", split="train",
                      video_path="v", audio_path="a") for i in range(2)]
convert.decode_all(clips, None, convert.FrameParams(1, 8), {str(tmp_path / 'work')!r}, 2)
""")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=ENV)
    try:
        workers = [int(proc.stdout.readline()) for _ in range(2)]
        assert all(_alive(w) for w in workers)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 10
        while any(_alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), "workers outlived the converter"
    finally:
        proc.kill()
        for w in workers if "workers" in locals() else []:
            if _alive(w):
                os.kill(w, signal.SIGKILL)


def test_a_data_dir_that_is_a_file_or_unreadable_is_one_line(tmp_path, monkeypatch):
    from avgmm.data import pipeline

    afile = tmp_path / "data"
    afile.write_text("")
    with pytest.raises(errors.UserError, match=r"config\.data\.data_dir='.*data' is a file, "
                                               r"not a folder"):
        pipeline.load_dataset("avsynth/tiny", str(afile), 1)
    folder_ = tmp_path / "locked"
    folder_.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(folder_)
                        else real_access(p, mode))  # root reads anything: simulated
    with pytest.raises(errors.UserError, match=r"data_dir='.*locked' cannot be read by this "
                                               r"user: fix its permissions"):
        pipeline.load_dataset("crema_d_av", str(folder_), 1)


# --------------------------------------------------------------------------- workdir
def test_fresh_checks_every_output_before_deleting_any(tiny_config, tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    (workdir / "checkpoints" / "latest" / "1").mkdir(parents=True)
    (workdir / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (workdir / "config.json").write_text("{}")
    elsewhere = tmp_path / "big_disk_fits"
    elsewhere.mkdir()
    (elsewhere / "fit_000.npz").write_bytes(b"x")
    os.symlink(elsewhere, workdir / "gmm_fits")
    before = sorted(os.listdir(workdir))
    with pytest.raises(errors.UserError, match=r"--fresh cannot start over in .*: .*gmm_fits "
                                               r"is a symbolic link .*nothing was deleted"):
        train.train_and_evaluate(tiny_config, str(workdir), fresh=True)
    assert sorted(set(os.listdir(workdir)) - {".lock"}) == before  # the run's lock aside
    assert os.path.exists(workdir / "checkpoints" / "latest" / "1")
    assert os.path.exists(elsewhere / "fit_000.npz")
    os.remove(workdir / "gmm_fits")
    locked = str(workdir / "checkpoints" / "latest")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == locked
                        else real_access(p, mode))  # root deletes anything: simulated
    with pytest.raises(errors.UserError, match=rf"{locked} is not writable by this user; "
                                               r"nothing was deleted"):
        Workdir(str(workdir)).delete_outputs()
    assert os.path.exists(workdir / "metrics.jsonl")


# --------------------------------------------------------------------------- checkpoints
def _state(k: int):
    return {"w": np.arange(4096, dtype=np.float32) * k, "epoch": np.asarray(k, np.int32)}


def test_a_disk_filling_up_in_a_background_save_names_the_real_last_good(tmp_path):
    ckpt = checkpoints.Checkpointer(str(tmp_path), keep=3, say=lambda m: None)
    ckpt.save(1, _state(1), {}, best=False)
    ckpt.save(2, _state(2), {}, best=False)  # its failure shows only when it is waited for
    full = ValueError("RESOURCE_EXHAUSTED: Error writing local file: Failed to write 508 "
                      "bytes: No space left on device [os_error_code='28']")
    real_wait, real_close = ckpt.latest.wait_until_finished, ckpt.latest.close

    def fails(*args):
        raise full

    ckpt.latest.wait_until_finished = fails
    latest = os.path.join(str(tmp_path), "checkpoints", "latest")
    with pytest.raises(errors.DiskFullError, match=rf"device of {latest}/2: .*; the last good "
                                                   rf"checkpoint is {latest}/1\. Free"):
        ckpt.save(3, _state(3), {}, best=False)
    ckpt.latest.close = fails
    with pytest.raises(errors.DiskFullError, match=rf"the last good checkpoint is {latest}/1"):
        ckpt.close()
    ckpt.latest.wait_until_finished = real_wait
    real_close()


def test_orbax_logs_no_traceback_for_a_save_interrupted_while_waited_for(tmp_path, caplog):
    ckpt = checkpoints.Checkpointer(str(tmp_path), keep=3, say=lambda m: None)
    ckpt.save(1, _state(1), {}, best=False)
    thread = ckpt.latest._finalize_thread.get_not_none()
    real_join, real_alive = thread.join, thread.is_alive

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    thread.join, thread.is_alive = interrupted, lambda: True  # Ctrl-C in orbax's wait
    with caplog.at_level(py_logging.INFO):
        with pytest.raises(KeyboardInterrupt):
            ckpt.wait()
    assert not [r for r in caplog.records if r.levelno >= py_logging.ERROR], caplog.text
    thread.join, thread.is_alive = real_join, real_alive
    ckpt.wait()
    ckpt.close()


def test_ctrl_c_while_an_epoch_is_saved_names_the_epoch_to_resume_after(
        tiny_config, tmp_path, capsys, monkeypatch):
    config = tiny_config
    config.method, config.epochs = "concat", 2
    config.data.cache = False
    real_save = checkpoints.SharedCheckpoints.save

    def interrupted_saving_epoch_2(self, epoch, *args, **kwargs):
        if epoch == 2:
            raise KeyboardInterrupt  # Ctrl-C as the epoch is handed to the saving thread
        return real_save(self, epoch, *args, **kwargs)

    monkeypatch.setattr(checkpoints.SharedCheckpoints, "save", interrupted_saving_epoch_2)
    workdir = str(tmp_path / "run")
    assert main.run(config, workdir) == 130
    captured = capsys.readouterr()
    assert "epoch 2/2 [concat]" in captured.out  # its line was printed ...
    assert captured.err == ("interrupted while epoch 2 was being saved (after epoch 1; "
                            "epoch 2 is trained again); run the same command to resume\n")
    assert Workdir(workdir).latest_epoch() == 1  # ... and it resumes after epoch 1


def _unwritable_folder(path) -> bool:
    """Makes `path` a folder no file can be created in (chattr +i for root, chmod for
    others); False where neither works here."""
    os.makedirs(path)
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(
                ["chattr", "+i", str(path)], capture_output=True).returncode:
            return False
    else:
        os.chmod(path, 0o555)
    try:
        open(os.path.join(path, "probe"), "w").close()
    except OSError:
        return True
    return False


def test_an_unwritable_compilation_cache_is_one_line(tmp_path):
    cache = str(tmp_path / "cache")
    if not _unwritable_folder(cache):
        pytest.skip("cannot make a folder unwritable here")
    try:
        proc = _run(sys.executable, "-c", f"""
from avgmm import compile_cache
import jax, jax.numpy as jnp
compile_cache.enable({cache!r})
for i in range(4):
    jax.jit(lambda x, i=i: x * i + 1)(jnp.ones(3)).block_until_ready()
print("compiled")
""")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", cache])
    assert proc.returncode == 0 and proc.stdout.strip() == "compiled", proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"warning: the compilation cache {cache} cannot be written ("), proc.stderr
    assert "compiling without it" in lines[0]


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs (root only)")
def test_a_full_disk_during_a_real_run_is_one_line_naming_the_last_good(tiny_data_dir,
                                                                        tmp_path):
    disk = str(tmp_path / "disk")
    os.makedirs(disk)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=450k", "tmpfs", disk],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        proc = _run(sys.executable, "-m", "avgmm.main", "--config=configs/tiny.py",
                    f"--workdir={disk}/run", f"--config.data.data_dir={tiny_data_dir}",
                    timeout=600)
    finally:
        subprocess.run(["umount", disk])
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"error: no space left on the device of {disk}/run")
    assert f"the last good checkpoint is {disk}/run/checkpoints/latest/1." in lines[0]
