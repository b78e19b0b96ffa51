"""A training run that is easy to kill mid-epoch (a child process of tests/train/test_loop.py):
every checkpoint is followed by a short sleep, widening the window between checkpoints.

    python tests/support/train_slowly.py DATA OUT CONFIG_JSON
"""

from __future__ import annotations

import json
import sys
import time

import jemc_infer.train.loop as loop
from jemc_infer.train.loop import TrainConfig, train

save = loop._save_state


def slow_save(*args: object, **kwargs: object) -> None:
    save(*args, **kwargs)
    time.sleep(0.15)  # widen the window so the parent can kill mid-epoch


loop._save_state = slow_save
config = TrainConfig(**json.loads(sys.argv[3]))
train(sys.argv[1], "shared-resnet-audio", sys.argv[2], config, progress=False)
