"""Write the demo's sample videos (``make demo`` has no real videos to index offline).

    python scripts/demo_videos.py DIR [--count 8] [--seconds 3]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jemc_infer.video.samples import write_clip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for i in range(args.count):
        write_clip(args.out / f"clip{i:02d}.mp4", args.seconds, size=(320, 240), bitrate=500_000, audio=i % 3 != 2, seed=i)
    print(f"{args.out}: {args.count} sample videos")


if __name__ == "__main__":
    main()
