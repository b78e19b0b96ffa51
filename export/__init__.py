"""Export (installed as ``jemc_infer.export``): bundle → ONNX → TensorRT. Not built yet (issue 4)."""
