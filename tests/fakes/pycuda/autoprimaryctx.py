"""Fake ``pycuda.autoprimaryctx``: the same steps as the real module (init, retain the primary
context of the default device, push it), minus the atexit hook (tests reset the fake instead)."""

from __future__ import annotations

import pycuda.driver as cuda

cuda.init()

context = cuda.Device(0).retain_primary_context()
context.push()
device = context.get_device()
