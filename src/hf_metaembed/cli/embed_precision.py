"""`hf-metaembed embed --precision int8|uint8|binary|ubinary`: quantise the embeddings an embed run wrote
(`hf_metaembed.compact.quantize_embeddings`), with the int8/uint8 calibration ranges stored beside them.

The run itself is `embed.run_embed`; this module quantises its `.npy` or `.npz` output afterwards, in place: the
embeddings become int8/uint8 codes `(records, width)` or packed bits `(records, ceil(width / 8))`, and
`OUTPUT.calibration.json` keeps the ranges (from `--calibration-ranges FILE`, or computed over this output) so later
runs quantise the same way. Imports only the standard library until the command runs.
"""

import argparse

PRECISION_CHOICES = ("float32", "int8", "uint8", "binary", "ubinary")


def add_precision_arguments(parser: argparse.ArgumentParser) -> None:
    """`--precision` and `--calibration-ranges` of `hf-metaembed embed`."""
    parser.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        default="float32",
        help="store the embeddings quantised (int8/uint8 with calibration ranges, or 1 bit per dimension; .npy or "
        ".npz output; default: float32)",
    )
    parser.add_argument(
        "--calibration-ranges",
        help="int8/uint8: ranges JSON written by an earlier run (OUTPUT.calibration.json) to quantise with the same "
        "ranges (default: computed over this output)",
    )


def ranges_path(output) -> str:
    return f"{output}.calibration.json"


def quantize_output(output, precision: str, calibration_ranges: str | None = None) -> dict:
    """Quantise the embeddings of an embed output file in place; returns what was done."""
    from pathlib import Path

    import numpy as np

    from ..compact import CalibrationRanges, quantize_embeddings
    from .errors import UsageError

    path = Path(output)
    if path.suffix not in (".npy", ".npz"):
        raise UsageError(
            f"--precision {precision} writes quantised codes into a .npy or .npz output; got {str(path)!r}: "
            "give -o OUTPUT.npy or OUTPUT.npz"
        )
    if path.suffix == ".npy":
        arrays = {"embeddings": np.load(path)}
    else:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
    embeddings = arrays["embeddings"]
    if embeddings.dtype != np.float32:  # a finished run rerun: quantised already
        return {"precision": precision, "quantized": False, "dtype": str(embeddings.dtype)}
    ranges = CalibrationRanges.load(calibration_ranges) if calibration_ranges else None
    codes, ranges = quantize_embeddings(embeddings, precision, ranges=ranges)
    arrays["embeddings"] = codes
    if path.suffix == ".npy":
        np.save(path, codes)
    else:
        np.savez(path, **arrays)
    done = {"precision": precision, "quantized": True, "dtype": str(codes.dtype), "shape": list(codes.shape)}
    if ranges is not None:
        ranges.save(ranges_path(path))
        done["calibration_ranges"] = ranges_path(path)
    return done


def run_embed_with_precision(args: argparse.Namespace) -> int:
    """`embed.run_embed`, then the quantisation `--precision` asks for."""
    import sys

    from .embed import run_embed
    from .errors import UsageError

    if args.precision != "float32" and not str(args.output).endswith((".npy", ".npz")):
        raise UsageError(f"--precision {args.precision} needs a .npy or .npz output (-o OUT.npy); got {args.output}")
    if args.calibration_ranges and args.precision not in ("int8", "uint8"):
        raise UsageError("--calibration-ranges goes with --precision int8 or uint8")
    code = run_embed(args)
    if code == 0 and args.precision != "float32":
        done = quantize_output(args.output, args.precision, args.calibration_ranges)
        where = f"; ranges in {done['calibration_ranges']}" if "calibration_ranges" in done else ""
        state = "quantised to" if done["quantized"] else "already stored as"
        print(f"hf-metaembed embed: embeddings {state} {args.precision} ({done['dtype']}){where}", file=sys.stderr)
    return code
