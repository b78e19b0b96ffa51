"""The runtime path in a child process (run by block_imports.py with torch blocked): load a bundle,
encode text and video features with the engines ``auto`` picks; print what came out as one JSON line.

    python tests/support/block_imports.py torch,torchvision,tensorrt,pycuda tests/support/runtime_no_torch.py BUNDLE
"""

from __future__ import annotations

import json
import sys

import numpy as np

from jemc_infer.bundle import read_bundle
from jemc_infer.engines import open_engine

bundle = read_bundle(sys.argv[1])
text, why_text = open_engine(bundle.path, "text")
ids, lengths = bundle.vocab.encode_batch(["a red dog is running", "someone is cooking"])
t = text.run({"ids": ids, "lengths": lengths})
video, why_video = open_engine(bundle.path, "video")
feats = {i.name: (np.ones(3, bool) if i.dtype == "bool" else np.ones((3, i.shape[1]), np.float32)) for i in video.spec.inputs}
v = video.run(feats)
print(json.dumps({"text": {k: list(x.shape) for k, x in t.items()}, "video": {k: list(x.shape) for k, x in v.items()},
                  "why": [why_text, why_video], "torch_loaded": "torch" in sys.modules}))
