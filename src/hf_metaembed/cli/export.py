"""`hf-metaembed export onnx`: a saved model's whole fused graph as one ONNX model, checked with onnxruntime.

The parser is built without importing torch or onnx; `run_export_onnx` imports them when the command runs.
"""

import argparse
import sys

EXPORT_EXTRA_HINT = "pip install 'hf_metaembed[export]'"


def add_export_onnx_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `hf-metaembed export onnx`; run with `run_export_onnx`."""
    parser.add_argument("--model", required=True, help="folder of a saved MetaEmbed model and its processor")
    parser.add_argument("-o", "--output", required=True, help="folder to write model.onnx and the processor files to")
    parser.add_argument(
        "--quantize",
        choices=["int8"],
        help="also write model.int8.onnx, dynamically quantised by onnxruntime (its difference is reported)",
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    parser.add_argument(
        "--atol",
        type=float,
        default=1e-4,
        help="largest absolute difference from torch accepted for the float32 graph (default: 1e-4)",
    )
    parser.add_argument(
        "--example",
        action="append",
        help="a sequence to trace the graph with (repeatable; default: built-in examples of the backbones' kind)",
    )


def run_export_onnx(args) -> int:
    """`hf-metaembed export onnx`: export, check with onnxruntime, print the differences; exit code 2 for a model or
    block that cannot be exported (the message names it)."""
    from .errors import EXIT_OK, UsageError, require
    from .loading import check_model_folder

    for package in ("onnx", "onnxruntime"):
        require(package, EXPORT_EXTRA_HINT)
    folder = check_model_folder(args.model)
    from ..export.onnx_export import OnnxExportError, export_onnx

    try:
        report = export_onnx(
            folder, args.output, quantize=args.quantize, opset=args.opset, atol=args.atol, examples=args.example
        )
    except OnnxExportError as error:
        raise UsageError(str(error)) from error
    print(
        f"wrote {args.output}/{report['onnx_file']} (inputs: {', '.join(report['inputs'])}; outputs: "
        f"{', '.join(report['outputs'])}) and the processor files"
    )
    print(f"onnxruntime vs torch: max abs difference {report['max_abs_diff']:.3g} (limit {report['atol']:g})")
    if "int8_file" in report:
        print(
            f"wrote {args.output}/{report['int8_file']}: int8 vs torch max abs difference "
            f"{report['int8_max_abs_diff']:.3g}"
        )
    sys.stdout.flush()
    return EXIT_OK


__all__ = ["add_export_onnx_arguments", "run_export_onnx"]
