"""What every method shares: the runtime, the classifier artifact, the method interface.

A *method* (:class:`Method`, registered in ``METHODS``) turns a backbone, an unlabeled data set
and class texts into a :class:`Classifier`. A classifier maps any data set to logits and saves
itself as an *artifact* folder that ``labelless predict``/``eval`` and
:func:`load_classifier` read back:

    artifact.json         kind, class names, backbone spec + fingerprint, config, provenance
    tensors.safetensors   the classifier's own tensors (anchors, prototypes, heads)
    backbone.safetensors  the backbone parameters the method changed (only those), if any

Artifacts hold tensors only (safetensors), so loading one never runs code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file

from labelless.backbones import Backbone, load_backbone
from labelless.errors import LabellessError
from labelless.registry import CLASSIFIERS
from labelless.utils.io import atomic_save, atomic_write_json

ARTIFACT_VERSION = 1


@dataclass
class Runtime:
    """Where and how work runs; not part of a method's identity.

    device: ``cpu``, ``cuda``, ``cuda:1`` ... (``auto``: CUDA when available).
    batch_size: images per forward for feature extraction and prediction.
    num_workers: DataLoader worker processes.
    cache_dir: feature cache root (None: no cache).
    progress: show progress bars.
    seed: the run's seed (crops, sample order, initialisation).
    views_on: where views are made: ``device`` (the loader decodes, the views are cut batched on
        ``device``), ``cpu`` (PIL in the loader workers, the reference path) or ``auto``
        (``device`` on CUDA, else ``cpu``); see :mod:`labelless.views.device`.
    """

    device: str = "auto"
    batch_size: int = 64
    num_workers: int = 0
    cache_dir: str | None = None
    progress: bool = True
    seed: int = 0
    views_on: str = "auto"

    def __post_init__(self):
        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        from labelless.views.device import resolve_views_on

        self.views_on = resolve_views_on(self.views_on, self.device)


class Classifier:
    """Maps a data set to ``(N, C)`` logits; saved and loaded as an artifact folder."""

    kind: ClassVar[str] = ""

    def __init__(self, classnames: list[str], backbone_spec: str, config: dict | None = None):
        self.classnames = list(classnames)
        self.backbone_spec = backbone_spec
        self.config = dict(config or {})

    # -- prediction ---------------------------------------------------------------------------
    def predict(self, backbone: Backbone, dataset, rt: Runtime) -> torch.Tensor:
        """``(N, C)`` logits for every image of ``dataset``."""
        raise NotImplementedError

    # -- artifact -----------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        """The classifier's own tensors (saved to ``tensors.safetensors``)."""
        return {}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        pass

    def save(
        self,
        out_dir: str | Path,
        backbone: Backbone,
        tuned: dict[str, torch.Tensor] | None = None,
        extra: dict | None = None,
    ) -> Path:
        """Write the artifact; ``tuned`` = backbone parameters that differ from the base model."""
        out = Path(out_dir)
        tens = {k: v.detach().cpu().contiguous() for k, v in self.tensors().items()}
        bad = _non_finite(tens) + [f"backbone {k}" for k in _non_finite(tuned or {})]
        if bad:
            raise LabellessError(
                f"refusing to save a {self.kind} classifier with NaN or infinite values in "
                f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}: training diverged. Lower the "
                "learning rate (--set optim.lr=...) and run again."
            )
        out.mkdir(parents=True, exist_ok=True)
        atomic_save(out / "tensors.safetensors", lambda p: save_file(tens, str(p)))
        tuned = {k: v.detach().cpu().contiguous() for k, v in (tuned or {}).items()}
        if tuned:
            atomic_save(out / "backbone.safetensors", lambda p: save_file(tuned, str(p)))
        elif (out / "backbone.safetensors").exists():
            (out / "backbone.safetensors").unlink()
        meta = {
            "artifact_version": ARTIFACT_VERSION,
            "kind": self.kind,
            "classnames": self.classnames,
            "backbone": {"spec": self.backbone_spec, "fingerprint": backbone.base_fingerprint},
            "tuned_parameters": sorted(tuned),
            "config": self.config,
            **(extra or {}),
        }
        atomic_write_json(out / "artifact.json", meta)
        return out


def _non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity."""
    return [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def _read_tensors(path: Path, root: Path) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file of an artifact; a damaged (e.g. truncated) or non-finite file is a
    user-facing error naming it, never a traceback or a classifier that predicts NaN."""
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises SafetensorError / OSError on a damaged file
        raise LabellessError(
            f"classifier file '{path}' cannot be read ({type(e).__name__}: {e}); it is damaged or "
            f"incomplete (a copy cut short?). Copy the '{root}' folder again, or re-run the method "
            "that wrote it."
        ) from None
    bad = _non_finite(tensors)
    if bad:
        raise LabellessError(
            f"classifier file '{path}' holds NaN or infinite values in {', '.join(bad[:3])}: it "
            "comes from a run that diverged and cannot predict. Re-run that method with a lower "
            "learning rate."
        )
    return tensors


def load_classifier(
    path: str | Path, device: str = "cpu", backbone: Backbone | None = None
) -> tuple[Classifier, Backbone]:
    """Load an artifact folder: the classifier and its (adapted) backbone, ready to predict.

    >>> clf, backbone = load_classifier("runs/fair-eurosat/classifier")
    >>> logits = clf.predict(backbone, dataset, Runtime())
    """
    root = Path(path)
    meta_path = root / "artifact.json"
    if not meta_path.is_file():
        raise LabellessError(
            f"'{root}' is not a labelless classifier artifact (no artifact.json); pass the "
            "'classifier' folder that `labelless zeroshot`/`adapt` wrote"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise LabellessError(f"'{meta_path}' is not valid JSON: {e}") from None
    if meta.get("artifact_version") != ARTIFACT_VERSION:
        raise LabellessError(f"'{root}': unsupported artifact version {meta.get('artifact_version')}")
    cls = CLASSIFIERS.get(meta["kind"])
    if backbone is None:
        backbone = load_backbone(meta["backbone"]["spec"], device=device)
    if backbone.base_fingerprint != meta["backbone"]["fingerprint"]:
        raise LabellessError(
            f"artifact '{root}' was made with backbone weights {meta['backbone']['fingerprint']}, "
            f"but '{meta['backbone']['spec']}' now loads {backbone.base_fingerprint}: the checkpoint "
            "file changed. Use the original weights."
        )
    tuned_path = root / "backbone.safetensors"
    if tuned_path.exists():
        tuned = _read_tensors(tuned_path, root)
        own = dict(backbone.model.named_parameters())
        unknown = sorted(set(tuned) - set(own))
        if unknown:
            raise LabellessError(f"artifact '{root}' tunes parameters the backbone lacks: {unknown[:3]}")
        with torch.no_grad():
            for name, t in tuned.items():
                own[name].copy_(t.to(own[name].device))
        backbone.mark_tuned(tuned)
    clf = cls.from_meta(meta)
    tensors_path = root / "tensors.safetensors"
    if tensors_path.exists():
        clf.load_tensors({k: v.to(device) for k, v in _read_tensors(tensors_path, root).items()})
    return clf, backbone


@dataclass
class FitResult:
    """What :meth:`Method.fit` returns: the classifier and what to record about training."""

    classifier: Classifier
    tuned: dict[str, torch.Tensor] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


class Method:
    """A label-free method: ``fit`` adapts (or just assembles) a classifier.

    Subclasses set ``Config`` (a dataclass: the method's hyper-parameters), and implement
    :meth:`fit`. ``needs_texts`` tells the runner whether class texts are required.
    """

    Config: ClassVar[type]
    name: ClassVar[str] = ""
    trains: ClassVar[bool] = False
    #: under torchrun, N ranks x batch B train exactly like one rank with batch N x B (every
    #: batch-level statistic of the method is gathered across ranks; tests/test_distributed.py)
    ddp_exact: ClassVar[bool] = False

    def __init__(self, cfg):
        self.cfg = cfg

    def fit(self, ctx: FitContext) -> FitResult:
        raise NotImplementedError


@dataclass
class FitContext:
    """Everything a method's ``fit`` gets.

    backbone: the backbone (methods may train it in place).
    train: the unlabeled adaptation data set (its labels, if any, are for monitoring only).
    classnames: the C class names, in label order.
    texts: ``{class: [sentences]}`` of the chosen text source.
    label_texts: ``{class: [sentences]}`` of the plain label prompts (e.g. "a photo of a {c}.").
    rt: runtime settings.
    out_dir: the run folder (checkpoints, logs).
    resume: continue from ``out_dir/checkpoint.pt``.
    monitor: an optional labelled data set used only to log accuracy (never for selection).
    """

    backbone: Backbone
    train: Any
    classnames: list[str]
    texts: dict[str, list[str]]
    label_texts: dict[str, list[str]]
    rt: Runtime
    out_dir: Path
    resume: bool = False
    monitor: Any = None
