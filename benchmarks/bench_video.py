"""Video decode throughput of the indexer's frame sampler (media/video.sample_frames), in frames per second per core.

Encodes a synthetic H.264 video per resolution (demo scenes, one every `--scene-seconds`, panning, with grain so
every frame differs a little), then times `decode_record` (the function the local indexer and Ray's decode tasks
call): every frame decoded, scene-change thumbnails, the kept frames cropped for the model. The decoder is held to
one thread, so CPU seconds are one core's; it reports decoded frames per CPU second (per core), per wall second,
and the kept frames.

    python benchmarks/bench_video.py --seconds 30 --fps 30 --sizes 640x360,1280x720,1920x1080
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bt_search.media.decoding import decode_record  # noqa: E402
from bt_search.media.images import Preprocessing  # noqa: E402
from bt_search.media.scan import FileRecord  # noqa: E402
from bt_search.media.video import VideoSampling  # noqa: E402
from bt_search_dev.demo_data import random_scene, render  # noqa: E402


def encode(path: Path, width: int, height: int, seconds: float, fps: int, scene_seconds: float) -> int:
    import av
    from PIL import Image

    rng = np.random.Generator(np.random.PCG64(0))
    frames = int(seconds * fps)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        base = None
        for i in range(frames):
            if i % int(scene_seconds * fps) == 0:  # a new scene, a little larger than the frame for the pan
                base = np.asarray(render(random_scene(rng)).resize((width + 64, height + 64), Image.BILINEAR))
            shift = (i % int(scene_seconds * fps)) * 64 // int(scene_seconds * fps)
            picture = base[shift : shift + height, shift : shift + width].astype(np.int16)
            picture = np.clip(picture + rng.integers(-6, 7, picture.shape[:2] + (1,)), 0, 255).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        container.mux(stream.encode(None))
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--scene-seconds", type=float, default=6.0)
    parser.add_argument("--sizes", default="640x360,1280x720,1920x1080")
    parser.add_argument("--crop", type=int, default=384, help="the model's input side (large BridgeTower: 384)")
    args = parser.parse_args()
    prep = Preprocessing(size=args.crop, crop=args.crop)
    sampling = VideoSampling()
    print(f"{'size':>10} {'frames':>7} {'kept':>5} {'wall s':>7} {'cpu s':>7} {'fps/core':>9} {'fps wall':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            width, height = map(int, size.split("x"))
            path = Path(tmp) / f"v{size}.mp4"
            frames = encode(path, width, height, args.seconds, args.fps, args.scene_seconds)
            stat = path.stat()
            record = FileRecord(str(path), stat.st_size, stat.st_mtime_ns)
            best = None
            for _ in range(2):  # the better of two runs: the machine is shared
                wall, cpu = time.perf_counter(), time.process_time()
                decoded = decode_record(record, prep, draft=True, video=sampling)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                if best is None or cpu < best[1]:
                    best = (wall, cpu, decoded)
            wall, cpu, decoded = best
            kept = len(decoded.frame_times)
            print(f"{size:>10} {frames:>7} {kept:>5} {wall:7.2f} {cpu:7.2f} {frames / cpu:9.0f} {frames / wall:9.0f}")


if __name__ == "__main__":
    main()
