"""A fake of pycuda (2026.1) for tests on machines without a GPU: NOT shipped.

Only the subset ``jemc_infer.engines.tensorrt`` and ``jemc_infer.export.tensorrt`` use, with pycuda's
real names and signatures (checked against pycuda 2026.1's ``src/wrapper/wrap_cudadrv.cpp`` and
``pycuda/autoprimaryctx.py``). Device memory is a set of numpy byte buffers addressed by integer
"pointers"; streams queue their work and run it on ``synchronize()``. See ``pycuda/driver.py``.

There is deliberately no ``pycuda.autoinit``: it creates a second CUDA context, and the code under
test must share the primary one (``pycuda.autoprimaryctx``).
"""

VERSION = (2026, 1)
VERSION_TEXT = "2026.1"
