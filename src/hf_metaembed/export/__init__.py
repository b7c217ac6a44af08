"""Exports of saved MetaEmbed models for runtimes without torch: `export_onnx` (the whole fused graph as one ONNX
model, checked with onnxruntime). Needs the `export` extra: `pip install 'hf_metaembed[export]'`."""

from .onnx_export import DEFAULT_ATOL, ONNX_FILE, QUANTIZED_FILE, ExportableMetaEmbed, OnnxExportError, export_onnx

__all__ = ["DEFAULT_ATOL", "ONNX_FILE", "QUANTIZED_FILE", "ExportableMetaEmbed", "OnnxExportError", "export_onnx"]
