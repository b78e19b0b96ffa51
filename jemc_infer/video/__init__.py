"""Video ingestion (torch-free): decoding with PyAV, sampling for the three feature streams,
preprocessing, and decoding in worker processes under a time limit."""

from jemc_infer.video.sampling import Sampling, i3d_input, resnet_input

__all__ = ["Sampling", "i3d_input", "resnet_input"]
