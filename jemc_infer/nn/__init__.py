"""Torch modules shared by training, export and the torch engine (needs the ``[train]`` extra).

Only torch-side code imports this package; the runtime never does.
"""

from jemc_infer.nn.io import model_from_bundle, resolve_device, save_model
from jemc_infer.nn.jemc import JEMC, JointSpace, TextEncoder, VideoHead

__all__ = ["JEMC", "JointSpace", "TextEncoder", "VideoHead", "model_from_bundle", "resolve_device", "save_model"]
