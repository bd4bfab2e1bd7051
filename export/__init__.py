"""ONNX export, INT8 quantization, TensorRT build and the engine manifest.

Entry point: ``export_run(ExportConfig(...))`` (edge_mla.export.pipeline). Importing
this package is cheap; torch, onnx and onnxruntime load inside the functions.
"""


def __getattr__(name):  # lazy: `from edge_mla.export import export_run`
    if name in ("ExportConfig", "ExportResult", "export_run"):
        from edge_mla.export import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
