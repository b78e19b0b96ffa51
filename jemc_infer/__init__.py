"""jemc-infer: search video collections with sentences (JEMC, ICMR 2018).

The top-level package is the torch-free runtime; ``jemc_infer.nn`` and ``jemc_infer.train``
need the ``[train]`` extra.
"""

__version__ = "0.1.0"
