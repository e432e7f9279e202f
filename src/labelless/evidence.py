"""What a run leaves as evidence besides its metrics: predictions and label-free diagnostics.

The runner calls :func:`zeroshot_reference` before the method trains (so the reference sees the
backbone as it was loaded) and :func:`record_evidence` after predicting; the latter writes
``predictions.csv`` and returns the ``label_free`` record of ``results.json``
(:func:`labelless.eval.label_free.label_free_diagnostics`). Nothing here reads a label except to
copy it into the predictions file, so an unlabeled folder gets the same diagnostics as a
benchmark.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from labelless.eval.label_free import label_free_diagnostics
from labelless.eval.predictions import PREDICTIONS_FILENAME, write_predictions

if TYPE_CHECKING:
    from labelless.backbones.base import Backbone

log = logging.getLogger(__name__)

__all__ = ["REFERENCE", "artifact_reference", "backfill", "record_evidence", "zeroshot_reference"]

#: how the zero-shot reference classifies, as recorded in ``label_free.reference``
REFERENCE = ("zero-shot: cosine to the mean embedding of each class's texts (--texts), "
             "at the backbone's own logit scale, before adaptation")


def zeroshot_reference(backbone: Backbone, dataset, classnames: Sequence[str], texts: dict[str, list[str]], rt) -> torch.Tensor:
    """``(N, C)`` logits of the zero-shot reference on ``dataset``.

    The reference is the training-free classifier every method starts from: each class is the
    normalised mean embedding of its texts (CLIP's prompt ensemble with templates, CuPL with
    descriptions), scored by cosine at the backbone's *learned* logit scale (its own
    temperature, which is what makes its softmax a probability worth reading). Call it before a
    method changes the backbone.
    """
    from labelless.config import to_dict
    from labelless.methods.zeroshot import ZeroShotClassifier, ZeroShotConfig, encode_texts
    from labelless.scoring import ClassTextFeat

    # the method trains after this: leave its random numbers exactly as they were (a DataLoader
    # draws its base seed from torch's generator even without workers)
    device = torch.device(backbone.device)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        feat = encode_texts(backbone, texts)
        cfg = ZeroShotConfig(scorer="cupl", logit_scale=float(backbone.logit_scale))
        clf = ZeroShotClassifier(list(classnames), backbone.spec, to_dict(cfg),
                                 ClassTextFeat(feat.embeds, feat.mask, None))
        return clf.predict(backbone, dataset, rt).float().cpu()


def artifact_reference(classifier_dir: str | Path, backbone: Backbone, dataset, classnames: Sequence[str], rt) -> torch.Tensor | None:
    """The zero-shot reference of a saved classifier's run, on ``dataset`` (for ``labelless eval``).

    The class texts come from the run config stored in the artifact; an adapted backbone is
    reloaded from its spec so the reference sees the weights before adaptation. Returns None
    (with a warning) when the texts cannot be rebuilt, e.g. a description file that moved.
    """
    import json

    from labelless.backbones import load_backbone
    from labelless.errors import LabellessError
    from labelless.text import build_texts

    try:
        meta = json.loads((Path(classifier_dir) / "artifact.json").read_text(encoding="utf-8"))
        spec = ((meta.get("run_config") or {}).get("run") or {}).get("texts") or "templates:name=clip"
        texts = build_texts(spec, list(classnames))
    except (OSError, ValueError, LabellessError) as e:
        log.warning(f"no zero-shot reference for '{classifier_dir}' (class texts: {e}); "
                    "label_free has no agreement or reference-based estimate")
        return None
    base = backbone
    if backbone.fingerprint != backbone.base_fingerprint:  # adapted weights: the base model again
        base = load_backbone(backbone.spec, device=str(backbone.device))
    return zeroshot_reference(base, dataset, classnames, texts, rt)


def record_evidence(
    out_dir: str | Path | None,
    dataset,
    logits: torch.Tensor,
    ref_logits: torch.Tensor | None,
    classnames: Sequence[str],
    history: Sequence[dict] | None = None,
    predicted_on: str = "data",
) -> dict[str, Any]:
    """Write ``<out_dir>/predictions.csv`` (when ``out_dir`` is given) and return ``label_free``.

    logits ``(N, C)``: the run's classifier on ``dataset``; ref_logits ``(N, C)``: the zero-shot
    reference's (:func:`zeroshot_reference`) or None; predicted_on: ``data`` (the adaptation
    images) or ``eval_data`` (a separate evaluation set), recorded beside the diagnostics.
    """
    probs = logits.float().softmax(dim=-1).cpu()
    ref = ref_logits.float().softmax(dim=-1).cpu() if ref_logits is not None else None
    record = label_free_diagnostics(probs, ref, classnames, history)
    record["predicted_on"] = predicted_on
    record["reference"] = REFERENCE if ref is not None else None
    if out_dir is not None:
        # absolute paths: the report may be written from another working directory
        write_predictions(Path(out_dir) / PREDICTIONS_FILENAME, [os.path.abspath(p) for p in dataset.paths],
                          torch.as_tensor(dataset.labels), probs, ref, classnames)
        record["predictions"] = PREDICTIONS_FILENAME
    return record


def backfill(run_dir: str | Path, rt=None, force: bool = False) -> dict[str, Any] | None:
    """Add ``label_free`` (and ``predictions.csv``) to a run folder written before labelless
    recorded them, from its saved classifier; returns the record (None when it already had one
    and ``force`` is off).

    The classifier predicts the run's evaluation data again (its ``eval_data``, else its
    ``data``); when the run has metrics, the recomputed top-1 and image count must equal the
    recorded ones, so a changed data set or artifact is refused instead of producing
    diagnostics of other predictions. The record says ``"backfilled": true``.
    """
    import json

    from labelless.errors import LabellessError
    from labelless.eval.metrics import classification_metrics
    from labelless.methods.base import Runtime, load_classifier
    from labelless.runner import load_data
    from labelless.utils.io import atomic_write_json

    run_dir = Path(run_dir)
    path = run_dir / "results.json"
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LabellessError(f"'{path}' cannot be read as a run record: {e}") from None
    if rec.get("label_free") and not force:
        return None
    run = (rec.get("config") or {}).get("run") or {}
    spec = run.get("eval_data") or run.get("data")
    if not spec or not (run_dir / "classifier").is_dir():
        raise LabellessError(f"'{run_dir}' has no classifier/ or no data spec in results.json: "
                             "only run folders of `labelless zeroshot` / `adapt` can be backfilled")
    rt = rt or Runtime(progress=False)
    clf, backbone = load_classifier(run_dir / "classifier", device=rt.device)
    ds = load_data(spec, list(clf.classnames), rt)
    with torch.no_grad():
        logits = clf.predict(backbone, ds, rt).float().cpu()
    metrics = rec.get("metrics") or {}
    if metrics.get("top1") is not None and ds.has_labels:
        again = classification_metrics(logits, torch.as_tensor(ds.labels), len(clf.classnames))
        if again.n != metrics.get("n", again.n) or abs(again.top1 - metrics["top1"]) > 0.05:
            raise LabellessError(
                f"'{run_dir}': the saved classifier now gives top-1 {again.top1:.2f} on {again.n} "
                f"images of '{spec}', the run recorded {metrics['top1']:.2f} on {metrics.get('n')}: "
                "data or artifact changed, not backfilling")
    ref = artifact_reference(run_dir / "classifier", backbone, ds, list(clf.classnames), rt)
    history = (rec.get("extra") or {}).get("history")
    record = record_evidence(run_dir, ds, logits, ref, list(clf.classnames), history,
                             predicted_on="eval_data" if run.get("eval_data") else "data")
    record["backfilled"] = True
    rec["label_free"] = record
    atomic_write_json(path, rec)
    return record
