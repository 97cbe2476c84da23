"""The dataset registry: the built-in entries, docs/data.md's table, and a throw-away
converter added from outside the repository."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from avgmm import config_text
from data_prep import registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILTIN = {"ave_av", "av_mnist", "av_mnist_conflict", "av_mnist_graded", "av_mnist_noise",
           "av_mnist_none", "av_mnist_two_sided", "av_mnist_multibench", "arrays_av", "avsynth/default",
           "avsynth/tiny", "crema_d_av", "folder_av", "kinetics_sounds_av", "vggsound_av"}


def test_builtin_entries_match_their_builders_and_configs():
    import tensorflow_datasets as tfds

    entries = {e.tfds_name: e for e in registry.entries(builtin_only=True)}
    assert set(entries) == BUILTIN
    assert registry.problems() == ()
    for name, entry in entries.items():
        base = name.split("/")[0]
        if entry.prepare_name and base in ("crema_d_av", "ave_av", "av_mnist",
                                           "kinetics_sounds_av", "vggsound_av", "folder_av"):
            # The recipe the registry shows is the one the converter applies.
            assert tfds.builder_cls(base).DEFAULT_AUDIO == entry.audio, name
        if entry.config:  # the declared config trains on this very dataset
            config = config_text.load_config_file(os.path.join(REPO, "configs", entry.config))
            assert config.data.name == name, (name, entry.config)
    assert registry.display_name("crema_d_av") == "CREMA-D"
    assert registry.display_name("avsynth/tiny:1.1.0") == "avsynth (tiny)"
    assert registry.display_name("my_own_av") == "my_own_av"
    assert registry.config_file("ave_av") == "ave.py"
    assert registry.config_file("av_mnist_two_sided") == "av_mnist.py:two_sided"
    assert registry.config_file("folder_av") is None and registry.config_file("x") is None
    assert registry.prepare_command("crema_d_av", "D") == (
        "python -m data_prep.crema_d --raw_dir=<CREMA-D download> --data_dir=D")
    assert registry.prepare_command("av_mnist_graded", "D") == (
        "python -m data_prep.av_mnist --setting=graded --fsdd_dir=<FSDD recordings folder> "
        "--digits_dir=sklearn --data_dir=D")
    assert registry.prepare_command("avsynth/default", "D") == "python -m avgmm.demo --data_dir=D"
    assert registry.for_prepare("ks").tfds_name == "kinetics_sounds_av"
    assert registry.for_prepare("kinetics_sounds_av").prepare_name == "ks"
    with pytest.raises(registry.RegistryError, match=r"no dataset is named 'kinetic'; "
                                                      r"prepare one of: .*\bks\b"):
        registry.for_prepare("kinetic")
    with pytest.raises(registry.RegistryError, match="not prepared by hand"):
        registry.for_prepare("avsynth")


def test_clashing_declarations_are_refused(monkeypatch):
    import types

    from data_prep import crema_d

    twin = types.ModuleType("data_prep.zz_twin")
    twin.DATASET = registry.DatasetEntry(tfds_name="other_av", prepare_name="crema_d",
                                         display_name="Twin")
    monkeypatch.setitem(sys.modules, "data_prep.zz_twin", twin)
    monkeypatch.setattr(registry, "EMBEDDED", registry.EMBEDDED + ("data_prep.zz_twin",))
    with pytest.raises(registry.RegistryError,
                       match=rf"{crema_d.__name__} and data_prep.zz_twin both declare the "
                             r"dataset prepare_name 'crema_d'"):
        registry.discover()


def test_docs_dataset_table_is_the_registry():
    with open(os.path.join(REPO, "docs", "data.md"), encoding="utf-8") as f:
        text = f.read()
    begin = "<!-- datasets: python -m data_prep --list --markdown -->\n"
    end = "\n<!-- end of datasets -->"
    assert begin in text and end in text
    table = text.split(begin, 1)[1].split(end, 1)[0]
    assert table == registry.markdown_table(registry.entries(builtin_only=True)), (
        "docs/data.md's dataset table is stale: paste `python -m data_prep --list "
        "--markdown` between its markers")


CHECK = textwrap.dedent("""
    import json, subprocess, sys
    from avgmm.data import pipeline
    from data_prep import registry
    launch, data_dir = sys.argv[1:]
    out = {}
    try:
        pipeline.load_dataset("toy_av", data_dir, 1)
    except ValueError as e:
        out["refusal"] = str(e)
    run = subprocess.run(["bash", launch, "prepare", "toy", "--count=5",
                          "--data_dir=" + data_dir], capture_output=True, text=True)
    out["prepare"] = [run.returncode, run.stdout[-500:], run.stderr[-2000:]]
    ds = pipeline.load_dataset("toy_av", data_dir, 1)
    batch = ds.read("test", [4, 1])
    out["batch"] = {k: batch[k].tolist() for k in ("label", "hard", "level", "step")}
    entry = registry.find("toy_av")
    out["entry"] = [entry.module, entry.display_name, registry.config_file("toy_av"),
                    "toy_av" in registry.converters()]
    print(json.dumps(out))
""")


def test_a_throw_away_converter_is_listed_prepared_and_found(tmp_path):
    ext = tmp_path / "ext"
    (ext / "data_prep").mkdir(parents=True)  # no __init__.py: it extends the package
    shutil.copy(os.path.join(REPO, "tests", "toy_converter.py"),
                ext / "data_prep" / "toy_conv.py")
    (ext / "toy_config.py").write_text(textwrap.dedent("""
        from configs import tiny

        def get_config():
            config = tiny.get_config()
            config.data.name = "toy_av"
            config.data.image_size = 8
            return config
    """))
    env = dict(os.environ, PYTHONPATH=f"{ext}{os.pathsep}{REPO}", PYTHON=sys.executable)
    listed = subprocess.run([sys.executable, "-m", "data_prep", "--list"], cwd=str(tmp_path),
                            capture_output=True, text=True, env=env)
    assert listed.returncode == 0, listed.stderr[-2000:]
    row = [line.split() for line in listed.stdout.splitlines() if " toy_av " in line]
    assert row and row[0][:3] == ["toy", "toy_av", "Toy"], listed.stdout
    assert "python -m data_prep.toy_conv --count=<clips per split> --data_dir=DATA_DIR" \
        in listed.stdout
    script = tmp_path / "check.py"
    script.write_text(CHECK)
    data_dir = str(tmp_path / "data")
    done = subprocess.run([sys.executable, str(script), os.path.join(REPO, "launch.sh"),
                           data_dir], cwd=str(tmp_path), capture_output=True, text=True,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["refusal"] == (
        f"dataset 'toy_av' is not prepared in {data_dir}; prepare it with: "
        f"python -m data_prep.toy_conv --count=<clips per split> --data_dir={data_dir}")
    code, stdout, stderr = out["prepare"]
    assert code == 0 and "prepared toy_av: 5 clips per split" in stdout, stderr
    assert out["batch"] == {"label": [0, 1], "hard": [False, False], "level": [1, 1],
                            "step": [40, 10]}
    assert out["entry"] == ["data_prep.toy_conv", "Toy AV", str(ext / "toy_config.py"), True]
    config = config_text.load_config_file(out["entry"][2])
    assert config.data.name == "toy_av"


def test_prepare_refuses_an_unknown_name_and_passes_flags_through(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, PYTHON=sys.executable)
    launch = os.path.join(REPO, "launch.sh")
    out = subprocess.run(["bash", launch, "prepare", "kinetic"], capture_output=True,
                         text=True, env=env)
    assert out.returncode == 2
    assert ("error: no dataset is named 'kinetic'; prepare one of: arrays, av_mnist, "
            "av_mnist_conflict, av_mnist_graded") in out.stderr and ", ks, vggsound" in out.stderr
    # A setting's fixed argument reaches the converter, which refuses a clashing flag
    # before decoding anything.
    out = subprocess.run(["bash", launch, "prepare", "av_mnist_graded", f"--fsdd_dir={tmp_path}",
                          "--digits_dir=sklearn", "--visual_noise_fraction=0.1",
                          f"--data_dir={tmp_path}"], capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert ("error: --setting=graded fixes the degradation: drop --visual_noise_fraction"
            in out.stderr), out.stderr
    out = subprocess.run(["bash", launch, "prepare", "av_mnist", f"--fsdd_dir={tmp_path}",
                          "--digits_dir=sklearn", "--audio_mix_snr_db=0,-6",
                          f"--data_dir={tmp_path}"], capture_output=True, text=True, env=env)
    assert "error: --audio_mix_snr_db=0,-6: finite dB values, LO <= HI" in out.stderr
