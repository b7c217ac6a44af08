"""`hf-metaembed build`: save an untrained MetaEmbed model and its processor over backbones named on the command
line, so every other command (and `AutoModel.from_pretrained(folder, trust_remote_code=True)`) can take the folder."""

import sys

from ..io.files import check_writable_output
from .errors import EXIT_OK, UsageError
from .loading import build_from_backbones


def _head_settings(args) -> dict:
    """`num_labels` and `problem_type` of a sequence head (`--num-labels`, `--problem-type`); a regression head with
    several outputs is allowed and said what it means, a problem type without `--num-labels` is refused."""
    if args.num_labels is None:
        if args.problem_type is not None:
            raise UsageError(f"--problem-type {args.problem_type} sets up a sequence head: add --num-labels N")
        return {}
    problem_type = args.problem_type or ("regression" if args.num_labels == 1 else "single_label_classification")
    if problem_type != "regression" and args.num_labels == 1:
        raise UsageError(
            f"--problem-type {problem_type} with --num-labels 1 has a single class; a classifier needs "
            "--num-labels 2 or more (or use --problem-type regression for one number)"
        )
    if problem_type == "regression" and args.num_labels > 1:
        print(
            f"hf-metaembed build: note: --problem-type regression with --num-labels {args.num_labels} predicts "
            f"{args.num_labels} numbers per sample (multi-target regression, labels shaped (samples, "
            f"{args.num_labels})); for classes use --problem-type single_label_classification",
            file=sys.stderr,
        )
    return {"num_labels": args.num_labels, "problem_type": problem_type}


def run_build(args) -> int:
    """`hf-metaembed build`: build the model (seeded with `--seed`), save model and processor to `--output`."""
    output = check_writable_output(args.output)
    if output.exists() and not output.is_dir():
        raise UsageError(f"-o {args.output} is an existing file; give a folder for the model and processor")
    if output.is_dir() and any(output.iterdir()) and not args.overwrite:
        what = "a saved model" if (output / "config.json").is_file() else "files"
        raise UsageError(f"-o {args.output} already holds {what}; choose another folder, or pass --overwrite")
    head = _head_settings(args)
    if head:
        from ..modeling.modeling_metaembed import MetaEmbedForSequenceClassification as model_class
    else:
        from ..modeling.modeling_metaembed import MetaEmbedModel as model_class
    model, processor = build_from_backbones(args, model_class, **head)
    for name in ("unknown_residues", "long_sequences"):
        if getattr(args, name) is not None:
            setattr(processor, name, getattr(args, name))  # saved with the processor: its default for every call
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(output))
    processor.save_pretrained(str(output))
    config = model.config
    parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(
        f"saved an untrained {type(model).__name__} ({len(config.backbone_names)} backbone(s), fusion "
        f"{config.fusion!r}, level {config.level!r}, architecture {config.architecture!r}; {parameters} trainable "
        f"parameters) and its processor to {output}"
    )
    return EXIT_OK


__all__ = ["run_build"]
