"""Run ``extract_dataset`` with the stub backbones in a child process (the kill -9 tests):
``python features_child.py VIDEOS CAPTIONS OUT [DELAY]``; JEMC_CRASH_AT picks where it dies."""

import sys
from pathlib import Path

from jemc_infer.collection import Options
from jemc_infer.train.extract import extract_dataset
from jemc_infer.train.formats import load_captions_jsonl
from support.stub_encoder import Stub

if __name__ == "__main__":  # the decoder workers are spawned: they import this module, and must not run it
    delay = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    extract_dataset(Path(sys.argv[1]), load_captions_jsonl(sys.argv[2]), Path(sys.argv[3]), lambda: Stub(delay=delay),
                    {"random_init": True}, options=Options(workers=1, frame_batch=32, clip_batch=4))
