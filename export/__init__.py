"""Export (installed as ``jemc_infer.export``): a trained bundle → ONNX graphs → TensorRT engines.

- ``specs``: :class:`~jemc_infer.export.specs.ShapeLimits`, the shapes every graph must serve
  (names, dtypes and axes are the runtime's ``jemc_infer.specs``);
- ``onnx``: :func:`~jemc_infer.export.onnx.export_bundle`, the text encoders, video heads and
  backbones (``resnet``, ``i3d``, ``audio``) traced to ONNX behind the torch ↔ onnxruntime parity gate;
- ``text_int8``: the int8 text encoder for the CPU (each GRU as a ``Loop`` of int8 MatMuls), which
  ``export_bundle(..., text_int8=True)`` writes and gates as ``text.int8``;
- ``tensorrt``: :func:`~jemc_infer.export.tensorrt.build_engine` / ``build_engines``, TensorRT plans
  from the exported graphs, bound to this machine's TensorRT and GPU;
- ``calibration``: int8 calibration batches from a feature dataset.

Needs torch and onnx (the ``[train]`` extra); ``tensorrt``/``pycuda`` only to build engines.
"""
