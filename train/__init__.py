"""JEMC training: datasets of precomputed features, losses, metrics, the loop, Table 1 presets.

Installed as ``jemc_infer.train``; needs the ``[train]`` extra (``metrics`` and ``data`` alone are
numpy-only).
"""
