"""Small raw trees in the exact CREMA-D and AVE layouts, with real media files.

WAV audio with signal, FLV (flv1 video + mp3 audio) and MP4 (mpeg4 video + aac audio)
with moving content, and a few deliberately broken files. Used by the data_prep tests
and benchmarks; nothing here is downloaded.
"""

import os
import wave
from typing import Dict, List, Optional, Sequence, Tuple

import av
import numpy as np

CREMA_EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")


def tone(seconds: float, sr: int, freq: float, seed: int = 0) -> np.ndarray:
    """A chirp-like tone with a little noise, float32 in [-1, 1]."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    x = 0.5 * np.sin(2 * np.pi * (freq + 40 * t) * t) + 0.02 * rng.standard_normal(len(t))
    return np.clip(x, -1, 1).astype(np.float32)


def write_wav(path: str, samples: np.ndarray, sr: int) -> None:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())


def truncate_file(path: str, size: int) -> None:
    """Cuts a file to its first `size` bytes, like an interrupted download."""
    with open(path, "r+b") as f:
        f.truncate(size)


def moving_frames(n: int, height: int, width: int, seed: int) -> np.ndarray:
    """`n` RGB frames of a coloured square moving across a gradient."""
    rng = np.random.default_rng(seed)
    colour = rng.integers(40, 255, 3)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 80)], -1)
    frames = np.repeat(base[None], n, axis=0).astype(np.uint8)
    side = max(4, height // 4)
    for i in range(n):
        top = (i * 2) % (height - side)
        left = (i * 3) % (width - side)
        frames[i, top:top + side, left:left + side] = colour
    return frames


def write_video(path: str, frames: np.ndarray, fps: int, audio: Optional[np.ndarray],
                sr: int, container: str) -> None:
    """Encodes frames (and audio) with PyAV: flv -> flv1 + mp3, mp4 -> mpeg4 + aac."""
    vcodec, acodec = {"flv": ("flv", "libmp3lame"), "mp4": ("mpeg4", "aac")}[container]
    with av.open(path, "w", format=container) as out:
        vs = out.add_stream(vcodec, rate=fps)
        vs.width, vs.height = frames.shape[2], frames.shape[1]
        vs.pix_fmt = "yuv420p"
        vs.bit_rate = 400_000
        a_stream = None
        if audio is not None:
            a_stream = out.add_stream(acodec, rate=sr)
            a_stream.layout = "mono"
        for f in frames:
            for packet in vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        if a_stream is not None:
            chunk = 1024
            pts = 0
            for start in range(0, len(audio), chunk):
                piece = audio[start:start + chunk]
                af = av.AudioFrame.from_ndarray(piece[None, :].astype(np.float32),
                                                format="flt", layout="mono")
                af.sample_rate = sr
                af.pts = pts
                pts += len(piece)
                for packet in a_stream.encode(af):
                    out.mux(packet)
            for packet in a_stream.encode():
                out.mux(packet)


def make_crema_tree(root: str, per_class: int = 3, frame_hw: Tuple[int, int] = (48, 64),
                    ids: Optional[Sequence[Tuple[str, str]]] = None,
                    broken: bool = True) -> Dict[str, List[str]]:
    """`AudioWAV/*.wav` + `VideoFlash/*.flv` like CREMA-D. Returns the clip ids by kind.

    `ids` gives explicit `(clip_id, EMO)` pairs (e.g. from the real split files);
    otherwise `per_class` clips of each emotion with made-up actor/sentence ids. With
    `broken`, five more clips are added: a zero-byte WAV, a truncated WAV, a silent WAV,
    an FLV whose bytes are a text file and an FLV cut to its first 1,500 bytes (which
    OpenCV opens and decodes to one or two corrupt frames).
    """
    os.makedirs(os.path.join(root, "AudioWAV"), exist_ok=True)
    os.makedirs(os.path.join(root, "VideoFlash"), exist_ok=True)
    if ids is None:
        sentences = ("IEO", "TIE", "IOM", "ITH", "DFA")
        ids = [(f"{1001 + i}_{sentences[i % 5]}_{emo}_XX", emo)
               for k, emo in enumerate(CREMA_EMOTIONS) for i in range(per_class)]
    good = []
    for n, (clip, emo) in enumerate(ids):
        sr = 16000  # CREMA-D's WAVs are 16 kHz; the converter resamples to 22,050
        seconds = 2.0 + 0.25 * (n % 4)
        write_wav(os.path.join(root, "AudioWAV", clip + ".wav"),
                  tone(seconds, sr, 200 + 60 * CREMA_EMOTIONS.index(emo), seed=n), sr)
        frames = moving_frames(int(30 * seconds), *frame_hw, seed=n)
        write_video(os.path.join(root, "VideoFlash", clip + ".flv"), frames, 30,
                    tone(seconds, 22050, 300, seed=n), 22050, "flv")
        good.append(clip)
    bad = []
    if broken:
        specs = {"1091_IEO_ANG_LO": "empty", "1091_TIE_DIS_MD": "truncated",
                 "1091_IOM_FEA_HI": "silent", "1091_ITH_HAP_XX": "video-not-video",
                 "1091_DFA_NEU_XX": "truncated-video"}
        for clip, kind in specs.items():
            wav = os.path.join(root, "AudioWAV", clip + ".wav")
            flv = os.path.join(root, "VideoFlash", clip + ".flv")
            frames = moving_frames(60, *frame_hw, seed=99)
            write_video(flv, frames, 30, None, 22050, "flv")
            if kind == "empty":
                open(wav, "wb").close()
            elif kind == "truncated":
                write_wav(wav, tone(2.0, 16000, 300), 16000)
                with open(wav, "r+b") as f:
                    f.truncate(30)  # header cut short: no readable samples
            elif kind == "silent":
                write_wav(wav, np.zeros(32000, np.float32), 16000)
            elif kind == "truncated-video":
                write_wav(wav, tone(2.0, 16000, 300), 16000)
                truncate_file(flv, 1500)
            else:
                write_wav(wav, tone(2.0, 16000, 300), 16000)
                with open(flv, "w") as f:
                    f.write("this is not a video\n" * 20)
            bad.append(clip)
    return {"good": good, "broken": bad}


AVE_CATEGORIES = ("Church bell", "Male speech, man speaking", "Bark", "Acoustic guitar")


def make_ave_tree(root: str, videos: int = 6, fps: int = 8, frame_hw=(48, 64),
                  header: bool = True, broken: bool = True) -> Dict[str, object]:
    """`AVE/<id>.mp4`, `Annotations.txt` and the three split files, like AVE.

    Every video is 10 s with an audio track; video 0 has two annotated events (two rows,
    as 45 real ids do), and with `broken` one more row names a zero-byte mp4.
    """
    os.makedirs(os.path.join(root, "AVE"), exist_ok=True)
    rows = []
    for v in range(videos):
        vid = f"vid{v:03d}{'abcdefgh'[v % 8]}"
        cat = AVE_CATEGORIES[v % len(AVE_CATEGORIES)]
        frames = moving_frames(10 * fps, *frame_hw, seed=v)
        write_video(os.path.join(root, "AVE", vid + ".mp4"), frames, fps,
                    tone(10.0, 16000, 250 + 90 * (v % 4), seed=v), 16000, "mp4")
        rows.append((cat, vid, "good", 1 + v % 3, 6 + v % 4))
        if v == 0:
            rows.append((AVE_CATEGORIES[2], vid, "good", 6, 9))
    if broken:
        open(os.path.join(root, "AVE", "brokenzz.mp4"), "wb").close()
        rows.append((AVE_CATEGORIES[1], "brokenzz", "good", 0, 10))
    lines = [f"{c}&{v}&{q}&{s}&{e}" for c, v, q, s, e in rows]
    with open(os.path.join(root, "Annotations.txt"), "w") as f:
        if header:
            f.write("Category&VideoID&Quality&StartTime&EndTime\n")
        f.write("\n".join(lines) + "\n")
    splits = {"trainSet.txt": [], "valSet.txt": [], "testSet.txt": []}
    for i, line in enumerate(lines):
        name = ("trainSet.txt", "trainSet.txt", "valSet.txt", "testSet.txt")[i % 4]
        splits[name].append(line)
    for name, split_lines in splits.items():
        with open(os.path.join(root, name), "w") as f:
            f.write("\n".join(split_lines) + "\n")
    return {"rows": rows, "splits": splits}
