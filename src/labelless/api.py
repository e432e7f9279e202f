"""The Python API: the command line's verbs as typed functions.

Every function takes the same spec strings as the CLI (``labelless list ...`` shows them) and
returns a typed result instead of printing::

    adapt(method, model, data, ...)   -> RunResult        ``labelless adapt``
    zeroshot(model, data, ...)        -> RunResult        ``labelless zeroshot``
    zeroshot(model, classes=[...])    -> RunResult        (no data: a classifier only, no run folder)
    load_classifier(path)             -> LoadedClassifier ``predict``/``eval``'s --classifier
    predict(classifier, images)       -> Predictions      ``labelless predict``
    evaluate(classifier, data)        -> EvalResult       ``labelless eval``
    export(classifier, format, out)   -> ExportResult     ``labelless export``

``images`` is an image folder, one image path, a list of paths, a list of ``PIL.Image``, or a
float tensor ``(N, 3, H, W)`` / ``(3, H, W)`` with values in [0, 1]; the backbone's own
preprocessing (resize, crop, normalisation) is applied to every kind.

A runnable example on the tiny random model (``image_dir`` holds ``red/``, ``green/`` and
``blue/`` sub-folders of images; ``tmp`` is a scratch folder)::

    >>> import labelless
    >>> model = "openclip:labelless-tiny:random"
    >>> zs = labelless.zeroshot(model, f"imagefolder:root={image_dir}", out=f"{tmp}/zs")
    >>> zs.metrics.n, zs.classifier.classnames
    (18, ['blue', 'green', 'red'])
    >>> preds = labelless.predict(zs.classifier, image_dir)
    >>> len(preds), preds.logits.shape
    (18, torch.Size([18, 3]))
    >>> preds.labels[0] in zs.classifier.classnames
    True
    >>> clf = labelless.load_classifier(zs.classifier_dir)
    >>> bool((clf.predict(image_dir).logits - preds.logits).abs().max() < 1e-4)
    True
    >>> labelless.evaluate(clf, f"imagefolder:root={image_dir}").metrics.n
    18
    >>> fair = labelless.adapt("fair", model, f"imagefolder:root={image_dir}", out=f"{tmp}/fair",
    ...                        params={"n_crops": 2, "k": 1, "optim": {"epochs": 1, "batch_size": 6}})
    >>> fair.classifier.kind, len(fair.history) > 0
    ('prototype', True)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import torch

from labelless.backbones.base import Backbone
from labelless.data.folders import ImageDataset
from labelless.errors import ConfigError, LabellessError
from labelless.eval.metrics import Metrics
from labelless.methods.base import Classifier, Runtime

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from labelless.export import ExportResult

#: What :func:`predict` accepts as images.
Images = Union[str, Path, Sequence[Union[str, Path]], Sequence["Image.Image"], torch.Tensor]

__all__ = [
    "EvalResult",
    "Images",
    "LoadedClassifier",
    "Predictions",
    "RunResult",
    "adapt",
    "evaluate",
    "export",
    "load_classifier",
    "predict",
    "zeroshot",
]


# ------------------------------------------------------------------------------------ results


@dataclass
class Predictions:
    """Predictions for ``N`` images over ``C`` classes.

    logits: ``(N, C)`` float tensor on the CPU.
    classnames: the ``C`` class names, in logit order.
    ids: per image its path, or ``"<image i>"`` for in-memory images.
    skipped: ``(path, reason)`` of unreadable images (not in ``logits``).
    """

    logits: torch.Tensor
    classnames: list[str]
    ids: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    @property
    def probs(self) -> torch.Tensor:
        """``(N, C)`` softmax of the logits."""
        return self.logits.float().softmax(dim=-1)

    @property
    def indices(self) -> list[int]:
        """The predicted class index of each image."""
        return self.logits.argmax(dim=-1).tolist()

    @property
    def labels(self) -> list[str]:
        """The predicted class name of each image."""
        return [self.classnames[i] for i in self.indices]

    def topk(self, k: int = 5) -> list[list[tuple[str, float]]]:
        """Per image the ``k`` most probable ``(class name, probability)`` pairs."""
        conf, idx = self.probs.topk(min(k, len(self.classnames)), dim=-1)
        return [[(self.classnames[j], float(p)) for j, p in zip(i, c)]
                for i, c in zip(idx.tolist(), conf.tolist())]


@dataclass
class LoadedClassifier:
    """A classifier with its (adapted) backbone, ready to predict.

    classifier: the method's classifier (``kind`` says which; its tensors are the class head).
    backbone: the backbone with the adapted parameters applied.
    path: the artifact folder it was loaded from or saved to (None for an in-memory one).
    runtime: device, batch size, cache used by :meth:`predict` and :meth:`evaluate`.
    """

    classifier: Classifier
    backbone: Backbone
    path: Path | None = None
    runtime: Runtime = field(default_factory=lambda: _runtime(None, None))

    @property
    def classnames(self) -> list[str]:
        return list(self.classifier.classnames)

    @property
    def kind(self) -> str:
        return self.classifier.kind

    def predict(self, images: Images) -> Predictions:
        """Logits and labels for ``images`` (see the module docstring for the accepted kinds)."""
        return predict(self, images)

    def evaluate(self, data: str, out: str | Path | None = None) -> EvalResult:
        """Metrics on a labelled data-set spec (``imagefolder:root=DIR``, ``eurosat:...``)."""
        return evaluate(self, data, out=out)


@dataclass
class RunResult:
    """What :func:`adapt` and :func:`zeroshot` return.

    classifier: the fitted classifier, ready to predict.
    metrics: metrics on the evaluation set, or None when there was none.
    out_dir: the run folder (None for a data-free :func:`zeroshot`).
    results_path: its ``results.json``.
    history: per-epoch training records (empty for training-free methods).
    info: what the method recorded about its fit.
    """

    classifier: LoadedClassifier
    metrics: Metrics | None
    out_dir: Path | None
    results_path: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def classifier_dir(self) -> Path | None:
        """The saved artifact (what ``load_classifier``, ``predict --classifier`` and
        ``export`` read)."""
        return None if self.out_dir is None else self.out_dir / "classifier"


@dataclass
class EvalResult:
    """What :func:`evaluate` returns: metrics, the ``(N, C)`` logits, the results file."""

    metrics: Metrics
    logits: torch.Tensor
    results_path: Path | None = None


# ------------------------------------------------------------------------------------ helpers


def _runtime(runtime: Runtime | None, device: str | None, seed: int | None = None) -> Runtime:
    """A copy of ``runtime`` (default: the CLI's defaults without progress bars)."""
    if runtime is None:
        from labelless.data.features import default_cache_dir

        runtime = Runtime(cache_dir=str(default_cache_dir()), progress=False)
    rt = copy.copy(runtime)
    if device is not None:
        rt.device = device
        rt.__post_init__()  # resolves "auto"
    if seed is not None:
        rt.seed = seed
    return rt


class _MemoryImages(ImageDataset):
    """In-memory ``PIL`` images behind the :class:`ImageDataset` interface (never cached)."""

    def __init__(self, images: list, classnames: Sequence[str]):
        records = [(f"<image {i}>", -1) for i in range(len(images))]
        super().__init__(records, classnames, name="memory")
        self._images = {p: img.convert("RGB") for (p, _), img in zip(records, images)}

    def __getitem__(self, index: int) -> dict:
        path, label = self.records[index]
        img = self._images[path]
        return {"image": self.transform(img) if self.transform else img, "label": label, "index": index}

    def validate(self, num_workers: int = 0, progress: bool = True) -> _MemoryImages:
        return self


def _as_dataset(images: Images, classnames: list[str]) -> tuple[ImageDataset, bool]:
    """``(dataset, in_memory)`` for any accepted image input."""
    from PIL import Image as PILImage

    from labelless.data import build_dataset

    if isinstance(images, torch.Tensor):
        from torchvision.transforms.functional import to_pil_image

        t = images.detach().float().cpu()
        if t.ndim == 3:
            t = t.unsqueeze(0)
        if t.ndim != 4 or t.shape[1] != 3:
            raise ConfigError(f"an image tensor must be (N, 3, H, W) or (3, H, W), got {tuple(images.shape)}")
        if t.numel() and (t.min() < 0 or t.max() > 1):
            raise ConfigError("an image tensor must hold values in [0, 1] (the backbone normalises it)")
        return _MemoryImages([to_pil_image(x) for x in t], classnames), True
    if isinstance(images, PILImage.Image):
        images = [images]
    if isinstance(images, (str, Path)):
        p = Path(images)
        if p.is_dir():
            ds = build_dataset(f"folder:root={p}", classes=classnames)
        elif p.is_file():
            ds = ImageDataset([(str(p), -1)], classnames, name="files")
        else:
            raise ConfigError(f"'{images}' is neither an image folder nor an image file")
        return ds.validate(progress=False), False
    items = list(images)
    if not items:
        raise ConfigError("no images given")
    if all(isinstance(x, PILImage.Image) for x in items):
        return _MemoryImages(items, classnames), True
    if all(isinstance(x, (str, Path)) for x in items):
        missing = [str(x) for x in items if not Path(x).is_file()]
        if missing:
            raise ConfigError(f"{len(missing)} image file(s) do not exist, e.g. '{missing[0]}'")
        ds = ImageDataset([(str(x), -1) for x in items], classnames, name="files")
        return ds.validate(progress=False), False
    raise ConfigError("images must be a folder, a path, a list of paths, a list of PIL images or a tensor")


def _loaded(classifier: LoadedClassifier | str | Path, device: str | None = None) -> LoadedClassifier:
    if isinstance(classifier, LoadedClassifier):
        return classifier
    if isinstance(classifier, (str, Path)):
        return load_classifier(classifier, device=device or "auto")
    raise ConfigError(
        f"expected a LoadedClassifier or an artifact folder, got {type(classifier).__name__}"
    )


def _run_result(out: dict[str, Any], rt: Runtime) -> RunResult:
    out_dir = Path(out["out_dir"])
    fit = out["fit"]
    clf = LoadedClassifier(fit.classifier, out["backbone"], out_dir / "classifier", rt)
    rp = out.get("results_path")
    return RunResult(clf, out["metrics"], out_dir, Path(rp) if rp else None,
                     list(fit.history), dict(fit.info))


# ------------------------------------------------------------------------------------ verbs


def adapt(
    method: str,
    model: str,
    data: str,
    *,
    eval_data: str | None = None,
    classes: str | Sequence[str] | None = None,
    texts: str = "templates:name=clip",
    label_texts: str = "templates:name=clip",
    params: dict[str, Any] | None = None,
    config: str | Path | None = None,
    out: str | Path | None = None,
    seed: int = 0,
    resume: bool = False,
    device: str | None = None,
    runtime: Runtime | None = None,
) -> RunResult:
    """Adapt ``model`` to the classes of ``data`` without labels with ``method``.

    method: a registered method (``labelless list methods``), e.g. ``fair``, ``coft``.
    model: a backbone spec, e.g. ``openclip:ViT-B-32:openai``.
    data: the adaptation data-set spec (``folder:root=DIR`` needs ``classes``).
    eval_data: a labelled evaluation set; default: ``data`` itself when it has labels.
    classes: a class file, a comma list, or a list of names.
    texts, label_texts: text-source specs (``descriptions:name=cupl/eurosat``, ...).
    params: the method's settings (``labelless list methods -v``), nested mappings allowed.
    config: a YAML recipe; its fields are the defaults the arguments above override.
    out: the run folder (default ``runs/<method>-<data>-s<seed>``).
    """
    from labelless.config import deep_merge, from_dict, load_yaml
    from labelless.runner import RunConfig, run

    base: dict[str, Any] = load_yaml(config) if config else {}
    given = {"model": model, "data": data, "eval_data": eval_data, "texts": texts,
             "label_texts": label_texts, "out": None if out is None else str(out)}
    if classes is not None:
        given["classes"] = classes if isinstance(classes, str) else ",".join(classes)
    for k, v in given.items():
        # the recipe's value stands unless the caller gave one (texts: unless not the default)
        default = {"texts": "templates:name=clip", "label_texts": "templates:name=clip"}.get(k)
        if v is not None and not (k in base and v == default):
            base[k] = v
    base["method"] = method
    base["seed"] = seed
    base["params"] = deep_merge(base.get("params") or {}, params or {})
    rt_fields = base.pop("runtime", {}) or {}
    cfg = from_dict(RunConfig, base, where="")
    rt = _runtime(runtime, device, seed)
    for k, v in rt_fields.items():
        setattr(rt, k, v)
    cfg.runtime = rt
    return _run_result(run(cfg, resume=resume), rt)


def zeroshot(
    model: str,
    data: str | None = None,
    *,
    classes: str | Sequence[str] | None = None,
    eval_data: str | None = None,
    texts: str = "templates:name=clip",
    label_texts: str = "templates:name=clip",
    scorer: str = "clip",
    crops: int | None = None,
    out: str | Path | None = None,
    seed: int = 0,
    device: str | None = None,
    runtime: Runtime | None = None,
) -> RunResult:
    """Training-free CLIP / CuPL / WCA classification (``scorer``).

    With ``data``: a run like ``labelless zeroshot`` (run folder, artifact, metrics when the data
    has labels). Without ``data``: the classifier for ``classes`` only, in memory
    (``metrics``, ``out_dir`` None), e.g. to :func:`predict` a handful of images.
    """
    params: dict[str, Any] = {"scorer": scorer}
    if crops is not None:
        params["crops"] = crops
    if data is not None:
        return adapt("zeroshot", model, data, eval_data=eval_data, classes=classes, texts=texts,
                     label_texts=label_texts, params=params, out=out, seed=seed, device=device,
                     runtime=runtime)
    if classes is None:
        raise ConfigError("zeroshot needs data= (a data-set spec) or classes= (the class names)")
    from labelless.backbones import load_backbone
    from labelless.config import from_dict
    from labelless.data.classes import parse_classes
    from labelless.methods.base import FitContext
    from labelless.methods.zeroshot import ZeroShotConfig, build_zeroshot
    from labelless.text import build_texts

    rt = _runtime(runtime, device, seed)
    names = parse_classes(classes) if isinstance(classes, str) else list(classes)
    backbone = load_backbone(model, device=rt.device)
    ctx = FitContext(backbone=backbone, train=None, classnames=names,
                     texts=build_texts(texts, names), label_texts=build_texts(label_texts, names),
                     rt=rt, out_dir=Path("."))
    clf = build_zeroshot(ctx, from_dict(ZeroShotConfig, params, where="params"))
    return RunResult(LoadedClassifier(clf, backbone, None, rt), None, None, None)


def load_classifier(
    path: str | Path, device: str = "auto", runtime: Runtime | None = None
) -> LoadedClassifier:
    """Load a classifier artifact folder (a run's ``classifier/``) with its adapted backbone."""
    from labelless.methods.base import load_classifier as _load

    rt = _runtime(runtime, device)
    clf, backbone = _load(path, device=rt.device)
    return LoadedClassifier(clf, backbone, Path(path), rt)


def predict(
    classifier: LoadedClassifier | str | Path, images: Images, *, runtime: Runtime | None = None
) -> Predictions:
    """Logits and predicted labels of ``classifier`` (loaded, or an artifact folder) on
    ``images``."""
    clf = _loaded(classifier)
    rt = copy.copy(runtime or clf.runtime)
    ds, in_memory = _as_dataset(images, clf.classnames)
    if len(ds) == 0:
        raise LabellessError("no readable image to predict" + (
            f" ({len(ds.skipped)} skipped, e.g. {ds.skipped[0][0]}: {ds.skipped[0][1]})" if ds.skipped else ""))
    if in_memory:
        rt.cache_dir = None  # the feature cache is keyed by file identity
    with torch.no_grad():
        logits = clf.classifier.predict(clf.backbone, ds, rt).float().cpu()
    return Predictions(logits, clf.classnames, list(ds.paths), list(ds.skipped))


def evaluate(
    classifier: LoadedClassifier | str | Path,
    data: str,
    *,
    out: str | Path | None = None,
    runtime: Runtime | None = None,
) -> EvalResult:
    """Metrics of ``classifier`` on the labelled data set ``data``; with ``out``, a run folder
    with ``results.json`` and the confusion plot, like ``labelless eval``."""
    from labelless.runner import backbone_info, data_info, load_data
    from labelless.runner import evaluate as _evaluate

    clf = _loaded(classifier)
    rt = copy.copy(runtime or clf.runtime)
    ds = load_data(data, clf.classnames, rt)
    if not ds.has_labels:
        raise LabellessError(f"data set '{data}' has no labels: evaluate needs a labelled set")
    out_dir = None if out is None else Path(out)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    logits, metrics = _evaluate(clf.classifier, clf.backbone, ds, rt, out_dir)
    path = None
    if out_dir is not None:
        from labelless.eval import write_results

        path = write_results(
            out_dir, method=f"eval:{clf.kind}", backbone=backbone_info(clf.backbone),
            data=data_info(data, ds), seed=rt.seed, metrics=metrics,
            config={"classifier": str(clf.path) if clf.path else None},
        )
    return EvalResult(metrics, logits, None if path is None else Path(path))


def export(
    classifier: str | Path, format: str, out: str | Path, **options: Any
) -> ExportResult:
    """Export a classifier artifact folder for use without labelless (see
    :func:`labelless.export.export_classifier`)."""
    from labelless.export import export_classifier

    return export_classifier(classifier, format, out, **options)
