"""Library entry points behind the CLI: run a method, evaluate, predict.

``run(RunConfig(...))`` is what ``labelless zeroshot`` and ``labelless adapt`` call: it builds
the backbone, data and texts from their spec strings, fits the method, saves the classifier
artifact, evaluates on the labelled evaluation set (if any) and writes ``results.json`` plus a
confusion-matrix plot. Nothing here reads ``argparse`` objects.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from labelless.backbones import Backbone, load_backbone
from labelless.config import from_dict, to_dict
from labelless.data import build_dataset
from labelless.data.classes import parse_classes
from labelless.engine import distributed
from labelless.errors import ConfigError, DataError, LabellessError
from labelless.eval import RunRecorder, classification_metrics, plot_confusion, write_results
from labelless.evidence import artifact_reference, record_evidence, zeroshot_reference
from labelless.methods.base import Classifier, FitContext, Runtime, load_classifier
from labelless.registry import METHODS
from labelless.runfolder import RunFolder, check_out_dir, check_out_file
from labelless.text import build_texts
from labelless.utils.io import atomic_save, stable_hash
from labelless.utils.paths import slug as _slug  # the run-folder flavour

log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    """One run of one method.

    method: a registered method (``labelless list methods``).
    model: backbone spec, e.g. ``openclip:ViT-B-32:laion2b_s34b_b79k``.
    data: the adaptation data set spec (unlabeled images, or a benchmark split).
    eval_data: a labelled evaluation data set spec; None evaluates on ``data`` when it has labels
        (the transductive setting) and skips evaluation otherwise.
    classes: class list (file or comma list); required for unlabeled folders.
    texts: class text source spec (descriptions, templates, names).
    label_texts: the plain label prompts (WCA's text weights, zero-shot pseudo-labels).
    out: run folder; default ``runs/<method>-<data>-s<seed>``.
    seed: seeds crops, sample order and initialisation.
    monitor: log accuracy on ``eval_data`` during training (never used for model selection).
    params: the method's own config (see ``labelless list methods -v``).
    runtime: device, batch size, workers, cache.
    """

    method: str = "zeroshot"
    model: str = ""
    data: str = ""
    eval_data: str | None = None
    classes: str | None = None
    texts: str = "templates:name=clip"
    label_texts: str = "templates:name=clip"
    out: str | None = None
    seed: int = 0
    monitor: bool = True
    params: dict = field(default_factory=dict)
    runtime: Runtime = field(default_factory=Runtime)

    def __post_init__(self):
        if not self.model:
            raise ConfigError("no backbone given: pass --model, e.g. openclip:ViT-B-32:laion2b_s34b_b79k")
        if not self.data:
            raise ConfigError("no data given: pass --data, e.g. folder:root=my_images or eurosat:root=...,split=train")


def default_out(cfg: RunConfig) -> Path:
    data_name = cfg.data.split(":", 1)[0]
    split = re.search(r"split=(\w+)", cfg.data)
    tag = f"{data_name}-{split.group(1)}" if split else data_name
    return Path("runs") / _slug(f"{cfg.method}-{tag}-s{cfg.seed}")


def method_config(name: str, params: dict) -> Any:
    """The method's typed config from a (partial) mapping."""
    method_cls = METHODS.get(name)
    return from_dict(method_cls.Config, params or {}, where="params")


def data_identity(ds) -> str:
    """A short hash of which images (absolute paths), labels and class names a data set holds:
    two image folders never share it, the same folder reached by two paths does."""
    records = getattr(ds, "records", None)
    if records is None:
        records = list(zip(getattr(ds, "paths", []), getattr(ds, "labels", [])))
    items = [[os.path.abspath(str(p)), int(y)] for p, y in records]
    return stable_hash({"records": items, "classnames": list(ds.classnames)})


def _content_identity(ds) -> str:
    """Like :func:`data_identity`, and also changes when an image file is rewritten."""
    return ds.fingerprint(stat=True) if hasattr(ds, "fingerprint") else data_identity(ds)


def data_info(spec: str, ds) -> dict[str, Any]:
    return {
        "spec": spec,
        "name": getattr(ds, "name", spec.split(":", 1)[0]),
        "split": getattr(ds, "split", None),
        "n": len(ds),
        "num_classes": len(ds.classnames),
        "fingerprint": data_identity(ds),
        "skipped": [list(s) for s in getattr(ds, "skipped", [])],
        "n_skipped": len(getattr(ds, "skipped", [])),
    }


def check_classnames(classnames: list[str], where: str) -> None:
    """At least two classes: with one, every image gets it, training has nothing to separate
    (its losses are 0) and the accuracy says nothing."""
    if len(classnames) < 2:
        raise DataError(
            f"{where} has {len(classnames)} class{'' if len(classnames) == 1 else 'es'}"
            f"{' (' + repr(classnames[0]) + ')' if classnames else ''}: classification needs at least "
            "2 classes. Pass the full class list with --classes (or a data set with 2 or more class "
            "folders)."
        )


def run_settings(cfg: RunConfig, mcfg: Any) -> dict[str, Any]:
    """What makes a run this run (a resume must keep it): the method and its full config, the
    model, data, classes, texts and seed; not the output folder or the runtime."""
    return {
        "method": cfg.method, "params": to_dict(mcfg), "model": cfg.model, "data": cfg.data,
        "eval_data": cfg.eval_data, "classes": cfg.classes, "texts": cfg.texts,
        "label_texts": cfg.label_texts, "seed": cfg.seed, "monitor": cfg.monitor,
    }


def backbone_info(backbone: Backbone) -> dict[str, Any]:
    return {
        "spec": backbone.spec,
        "name": f"{backbone.backend}:{backbone.arch}",
        "weights": str(backbone.weights),
        "fingerprint": backbone.fingerprint,
    }


def load_data(spec: str, classes: list[str] | None, rt: Runtime):
    """Build and validate a data set (corrupt images are skipped, counted and listed)."""
    ds = build_dataset(spec, classes=classes)
    ds.validate(num_workers=0, progress=rt.progress)
    if len(ds) == 0:
        raise LabellessError(f"data set '{spec}' has no readable image (all {len(ds.skipped)} skipped)")
    return ds


def evaluate(
    clf: Classifier, backbone: Backbone, ds, rt: Runtime, out_dir: Path | None = None
):
    """Logits and metrics of ``clf`` on a labelled data set; writes the confusion plot."""
    with torch.no_grad():
        logits = clf.predict(backbone, ds, rt).float().cpu()
    metrics = classification_metrics(logits, ds.labels, len(clf.classnames), clf.classnames)
    if out_dir is not None:
        plot_confusion(
            metrics.confusion, clf.classnames, out_dir / "confusion.png",
            title=f"{clf.kind} on {getattr(ds, 'name', '')} ({metrics.top1:.1f}% top-1)",
        )
    return logits, metrics


def _setting(cfg: RunConfig, train, eval_ds) -> str:
    """transductive: adapted on the evaluation images themselves; inductive: on other images."""
    if eval_ds is None:
        return "none"
    same = eval_ds is train or sorted(eval_ds.paths) == sorted(train.paths)
    return "transductive" if same else "inductive"


def run(cfg: RunConfig, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Fit ``cfg.method``, save its classifier, evaluate, write ``results.json``; return it.

    ``resume`` continues the interrupted run in the output folder (refused when its settings
    differ); ``overwrite`` clears a folder that holds another run (refused otherwise), see
    :class:`labelless.runfolder.RunFolder`.
    """
    rt = cfg.runtime
    out = Path(cfg.out) if cfg.out else default_out(cfg)
    params = dict(cfg.params or {})
    folder = RunFolder(out, resume=resume, overwrite=overwrite)
    # before any work: the folder is writable, holds no other run, and a resume keeps its settings
    folder.claim(run_settings(cfg, method_config(cfg.method, params)), to_dict(rt))
    if "testbed" in (params.get("captions"), params.get("groups")):
        from labelless.data.testbed import task_of_spec
        from labelless.testbed.groups import resolve_testbed_files

        params = resolve_testbed_files(params, out, task=task_of_spec(cfg.data))
    mcfg = method_config(cfg.method, params)
    torch.manual_seed(cfg.seed)
    with RunRecorder(previous_wall_s=folder.previous_wall_s) as rec:
        backbone = load_backbone(cfg.model, device=rt.device)
        classes = parse_classes(cfg.classes) if cfg.classes else None
        train = load_data(cfg.data, classes, rt)
        classnames = list(train.classnames)
        check_classnames(classnames, f"data set '{cfg.data}'")
        eval_ds = None
        if cfg.eval_data:
            eval_ds = load_data(cfg.eval_data, classnames, rt)
        elif train.has_labels:
            eval_ds = train  # transductive: adapt on the evaluation images themselves
        texts = build_texts(cfg.texts, classnames)
        label_texts = build_texts(cfg.label_texts, classnames)
        folder.check_inputs({  # a resume refuses changed images, weights, classes or texts
            "backbone": backbone.fingerprint, "classnames": classnames,
            "data": _content_identity(train),
            "eval_data": _content_identity(eval_ds) if cfg.eval_data else None,
            "texts": stable_hash(texts), "label_texts": stable_hash(label_texts),
        })
        method = METHODS.get(cfg.method)(mcfg)
        ctx = FitContext(
            backbone=backbone, train=train, classnames=classnames, texts=texts,
            label_texts=label_texts, rt=rt, out_dir=out, resume=resume,
            monitor=eval_ds if cfg.monitor else None,
        )
        if distributed.world_size() > 1 and method.trains and not method.ddp_exact:
            log.warning(
                f"{cfg.method}: under torchrun each rank computes its batch-level statistics "
                "(prototype updates, contrastive negatives, queues) on its own batch, so N ranks x "
                "batch B do not train exactly like one rank with batch N x B")
        # the images the run predicts on, and the zero-shot reference on them (label-free
        # diagnostics), taken before the method may change the backbone
        predict_ds = eval_ds if eval_ds is not None else train
        ref_logits = zeroshot_reference(backbone, predict_ds, classnames, texts, rt)
        fit = method.fit(ctx)
        main = distributed.is_main()  # under torchrun rank 0 alone writes; all ranks evaluate
        resolved = {"run": to_dict(cfg), "method": to_dict(mcfg)}
        if main:
            fit.classifier.save(out / "classifier", backbone, fit.tuned, extra={"run_config": resolved})
        if fit.tuned:
            backbone.mark_tuned(fit.tuned)  # adapted weights: never reuse the base model's features
        metrics = None
        if eval_ds is not None:  # (feature extraction is sharded over the ranks)
            logits, metrics = evaluate(fit.classifier, backbone, eval_ds, rt, out if main else None)
        else:  # unlabeled: predict the adaptation images themselves
            with torch.no_grad():
                logits = fit.classifier.predict(backbone, train, rt).float().cpu()
        if not main:
            return {"results_path": None, "out_dir": str(out), "metrics": metrics, "fit": fit,
                    "backbone": backbone}
        # predicted_on names the RunConfig field, never whether labels exist (label-free)
        label_free = record_evidence(out, predict_ds, logits, ref_logits, classnames, fit.history,
                                     predicted_on="eval_data" if cfg.eval_data else "data")
    folder.finish(rec.wall_s)
    if metrics is not None:
        log.info(f"[{cfg.method}] {metrics.summary()}")
    extra = {"train_data": data_info(cfg.data, train), "history": fit.history, **fit.info,
             "setting": _setting(cfg, train, eval_ds)}
    if folder.resumes:
        extra["resumes"] = folder.resumes
    path = write_results(
        out, method=cfg.method, backbone=backbone_info(backbone),
        data=data_info(cfg.eval_data or cfg.data, eval_ds) if eval_ds is not None else data_info(cfg.data, train),
        seed=cfg.seed, metrics=metrics, config=resolved, recorder=rec, extra=extra,
        label_free=label_free,
    )
    est = label_free.get("estimated_top1")
    if est is not None:
        log.info(f"[{cfg.method}] label-free estimate of top-1: {est:.1f}% ({label_free['estimator']}); "
                 f"{label_free['agreement']['changed']:.1f}% of predictions changed vs zero-shot")
    log.info(f"results: {path}")
    return {"results_path": str(path), "out_dir": str(out), "metrics": metrics, "fit": fit,
            "backbone": backbone}


def eval_artifact(classifier_dir: str, data: str, rt: Runtime, out: str | None = None) -> dict[str, Any]:
    """Evaluate a saved classifier on a labelled data set and write ``results.json``."""
    out_dir = Path(out) if out else Path(classifier_dir).parent / f"eval-{_slug(data.split(':', 1)[0])}"
    check_out_dir(out_dir)  # before any work
    with RunRecorder() as rec:
        clf, backbone = load_classifier(classifier_dir, device=rt.device)
        ds = load_data(data, clf.classnames, rt)
        if not ds.has_labels:
            raise LabellessError(f"data set '{data}' has no labels: `labelless eval` needs a labelled set")
        logits, metrics = evaluate(clf, backbone, ds, rt, out_dir)
        ref_logits = artifact_reference(classifier_dir, backbone, ds, clf.classnames, rt)
        label_free = record_evidence(out_dir, ds, logits, ref_logits, clf.classnames, predicted_on="eval_data")
    log.info(metrics.summary())
    path = write_results(
        out_dir, method=f"eval:{clf.kind}", backbone=backbone_info(backbone), data=data_info(data, ds),
        seed=rt.seed, metrics=metrics, config={"classifier": str(classifier_dir)}, recorder=rec,
        label_free=label_free,
    )
    log.info(f"results: {path}")
    return {"results_path": str(path), "metrics": metrics}


def predict_folder(
    clf: Classifier, backbone: Backbone, images: str, out_csv: str | Path, rt: Runtime, topk: int = 5
) -> Path:
    """Predict every image under ``images``; write ``path,predicted,confidence,top5`` CSV."""
    from labelless.data import build_dataset as _build

    out_csv = check_out_file(out_csv)  # before any work
    ds = _build(f"folder:root={images}", classes=clf.classnames)
    ds.validate(progress=rt.progress)
    if len(ds) == 0:
        raise LabellessError(f"no readable image under '{images}'")
    with torch.no_grad():
        probs = clf.predict(backbone, ds, rt).float().softmax(dim=-1).cpu()
    k = min(topk, probs.shape[1])
    conf, idx = probs.topk(k, dim=1)

    def write(p: Path) -> None:
        with open(p, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "predicted", "confidence", f"top{k}"])
            for path, c, i in zip(ds.paths, conf.tolist(), idx.tolist()):
                top = ";".join(f"{clf.classnames[j]}:{pc:.4f}" for j, pc in zip(i, c))
                w.writerow([path, clf.classnames[i[0]], f"{c[0]:.4f}", top])
            for path, reason in ds.skipped:
                w.writerow([path, "", "", f"skipped: {reason}"])

    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(out_csv, write)
    return out_csv
