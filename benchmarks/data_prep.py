"""Conversion throughput (clips/s) of the CREMA-D and AVE converters on generated media.

Usage: python benchmarks/data_prep.py [--crema_clips 48] [--ave_videos 16]
       [--workers 1,0] [--frame_size 224] [--json results.jsonl]

Makes raw trees in the exact CREMA-D / AVE layouts (tests/media_fixtures.py: 2-3 s FLV
clips with WAVs, 10 s MP4s with AAC audio), converts them with 1 and with all workers
(0 = all cores), and prints clips/s of the decoding stage and of the whole conversion,
plus the bytes per prepared example. Asserts nothing.
"""

import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]
from avgmm import cli  # noqa: E402

import media_fixtures  # noqa: E402
from data_prep import ave, convert, crema_d  # noqa: E402
from bench_results import append_jsonl  # noqa: E402


def dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def run(name, builder_cls, raw, workers, frame_size):
    with tempfile.TemporaryDirectory() as data_dir:
        start = time.perf_counter()
        builder = convert.prepare(builder_cls, raw, data_dir, workers=workers,
                                  frames=convert.FrameParams(3, frame_size))
        total = time.perf_counter() - start
        n = sum(s.num_examples for s in builder.info.splits.values())
        summary = builder.info.metadata["summary"]
        size = dir_bytes(builder.data_dir)
    return {"dataset": name, "workers": builder.workers, "clips": n,
            "decode_clips_per_s": summary["clips_per_second"],
            "total_clips_per_s": n / total, "seconds": total,
            "bytes_per_example": size / max(n, 1)}


def main():
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crema_clips", type=int, default=48)
    parser.add_argument("--ave_videos", type=int, default=16)
    parser.add_argument("--workers", default="1,0")
    parser.add_argument("--frame_size", type=int, default=224)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as raw:
        crema_raw, ave_raw = os.path.join(raw, "crema"), os.path.join(raw, "ave")
        media_fixtures.make_crema_tree(crema_raw, per_class=max(1, args.crema_clips // 6),
                                       frame_hw=(360, 480), broken=False)
        media_fixtures.make_ave_tree(ave_raw, videos=args.ave_videos, fps=25,
                                     frame_hw=(240, 320), broken=False)
        # Warm-up: the first decode in a process pays for lazy imports (librosa, soxr, cv2).
        run("crema_d", crema_d.CremaDAv, crema_raw, 1, 32)
        for workers in (int(w) for w in args.workers.split(",")):
            rows.append(run("crema_d", crema_d.CremaDAv, crema_raw, workers, args.frame_size))
            rows.append(run("ave", ave.AveAv, ave_raw, workers, args.frame_size))
    print(f"# data_prep throughput | {os.cpu_count()} cores | frame_size {args.frame_size}")
    print(f"{'dataset':>8} {'workers':>7} {'clips':>5} {'decode clips/s':>14} "
          f"{'total clips/s':>13} {'KB/example':>10}")
    for r in rows:
        print(f"{r['dataset']:>8} {r['workers']:>7} {r['clips']:>5} "
              f"{r['decode_clips_per_s']:>14.2f} {r['total_clips_per_s']:>13.2f} "
              f"{r['bytes_per_example'] / 1024:>10.0f}")
        append_jsonl(args.json, {"bench": "data_prep", **r})


if __name__ == "__main__":
    main()
