"""Engines (installed as ``jemc_infer.engines``): onnxruntime, TensorRT, torch. Not built yet (issue 4)."""
