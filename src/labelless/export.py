"""Export a classifier artifact for deployment without labelless.

``export_classifier(CLASSIFIER_DIR, FORMAT, OUT)`` (``labelless export``) writes one of:

* ``open_clip``: ``open_clip_config.json`` + ``open_clip_model.safetensors`` with the adapted
  weights merged (LayerNorm, merged LoRA or full fine-tuning: every artifact stores plain
  backbone tensors), loadable by plain ``open_clip.create_model_and_transforms("local-dir:OUT")``;
* ``hf``: a ``save_pretrained`` folder (model, tokenizer, image processor) for ``hf:`` backbones;
* ``onnx``: ``model.onnx``, one graph from the preprocessed image tensor ``images (B, 3, S, S)``
  to ``logits (B, C)``, checked with onnxruntime;
* ``torchscript``: ``model.pt``, the same graph traced (``torch.jit.load``), checked likewise.

Every format also writes ``head.json`` (class names, how logits are formed, the preprocessing)
and, for the weight formats, ``head.safetensors`` with the class head::

    logits = logit_scale * f(image) @ weight.T + bias

``f`` is the L2-normalised image embedding (``feature: "embeds"``; zero-shot CLIP/CuPL,
FAIR's anchors, LaTTe-CLIP's and FLYP's prototypes) or the [CLS] token after the final LayerNorm,
before the projection (``feature: "cls"``, ``normalize: false``; CoFT's linear head). With
several prototypes per class (``weight (C, K, d)``) the K scores are reduced by ``aggregate``.

Classifiers whose logits are not one image -> logits map cannot be merged: WCA (random crops x
descriptions) and the region probe (regions x texts, a top-k, then a linear layer). They say so
(``head.json`` ``mergeable: false`` with the reason), and export what they can: the adapted
backbone weights and the classifier's own tensors; the graph formats then map images to
embeddings.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from labelless.backbones.base import Backbone
from labelless.errors import ConfigError, LabellessError
from labelless.methods.base import Classifier
from labelless.utils.io import atomic_save, atomic_write_json

log = logging.getLogger(__name__)

FORMATS = ("open_clip", "hf", "onnx", "torchscript")


@dataclass
class ImageHead:
    """``logits = scale * f(image) @ weight.T + bias`` (see the module docstring).

    feature: ``embeds`` (projected, L2-normalised) or ``cls`` (pre-projection [CLS]).
    weight: ``(C, d)`` or ``(C, K, d)``.
    bias: ``(C,)`` or None.
    scale: the logit scale.
    normalize: L2-normalise ``f`` first (embedding heads); False for a linear head on [CLS].
    aggregate: reduction over the K prototypes of a class (``max`` or ``mean``).
    """

    feature: Literal["embeds", "cls"]
    weight: torch.Tensor
    bias: torch.Tensor | None = None
    scale: float = 1.0
    normalize: bool = True
    aggregate: Literal["max", "mean"] = "max"


@dataclass
class ExportResult:
    """What :func:`export_classifier` wrote.

    format, out_dir: as asked. files: every file written.
    mergeable: False when the classifier's logits are not one image -> logits map (``notes``
        says why and what was exported instead).
    check: graph formats: ``{"n_images", "max_abs_logit_diff", "top1_identical", "against"}``.
    """

    format: str
    out_dir: Path
    files: list[Path]
    mergeable: bool
    notes: list[str] = field(default_factory=list)
    check: dict[str, Any] | None = None


def image_head(clf: Classifier) -> tuple[ImageHead | None, str]:
    """The classifier's logits as an :class:`ImageHead` on one image feature, or ``(None,
    reason)`` when they are not one (WCA's crops, the region probe's regions)."""
    from labelless.scoring.clip import class_prototypes

    kind, cfg = clf.kind, clf.config
    if kind == "zeroshot":
        scorer = cfg.get("scorer", "clip")
        if scorer == "wca":
            return None, ("WCA scores random crops of each image against every description "
                          "(weighted, then aggregated): not one image -> logits map")
        text = clf.text
        if scorer == "clip" and text.label_embeds is not None:
            weight = F.normalize(text.label_embeds.float(), dim=-1)
        else:
            weight = class_prototypes(text.embeds.float(), text.mask)
        return ImageHead("embeds", weight, None, float(cfg.get("logit_scale", 100.0))), ""
    if kind in ("prototype", "latteclip"):
        return ImageHead(
            "embeds", F.normalize(clf.prototypes.float(), dim=-1), None,
            float(cfg.get("logit_scale", 100.0)), True, cfg.get("aggregate", "max"),
        ), ""
    if kind == "coft":
        feature = "cls" if cfg.get("head_feature", "cls") == "cls" else "embeds"
        return ImageHead(feature, clf.weight.float(), clf.bias.float(), 1.0, False), ""
    if kind == "region-probe":
        return None, ("the region probe scores many regions (crops or SAM masks) of each image "
                      "against the class texts, keeps the top-k and applies a linear layer: not "
                      "one image -> logits map")
    return None, f"no export rule for classifier kind '{kind}'"


def head_logits(head: ImageHead, x: torch.Tensor) -> torch.Tensor:
    """``(B, w)`` image features -> ``(B, C)`` logits of ``head``."""
    if head.normalize:
        x = F.normalize(x, dim=-1)
    w = head.weight.to(x)
    if w.ndim == 3:
        cos = torch.einsum("bd,ckd->bck", x, w)  # (B, C, K)
        s = cos.amax(dim=-1) if head.aggregate == "max" else cos.mean(dim=-1)
    else:
        s = x @ w.t()  # (B, C)
    s = head.scale * s
    return s if head.bias is None else s + head.bias.to(x)


class ExportModule(nn.Module):
    """Preprocessed images ``(B, 3, S, S)`` -> logits ``(B, C)`` (or embeddings ``(B, d)``
    when ``head`` is None): what the onnx and torchscript formats hold."""

    def __init__(self, backbone: Backbone, head: ImageHead | None):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            return self.backbone.encode_image(images).embeds
        out = self.backbone.encode_image(images, tokens=self.head.feature == "cls")
        x = out.cls if self.head.feature == "cls" else out.embeds
        return head_logits(self.head, x)


# ------------------------------------------------------------------------------------ writing


def _head_meta(clf: Classifier, backbone: Backbone, head: ImageHead | None, reason: str,
               source: Path) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "classnames": clf.classnames,
        "kind": clf.kind,
        "mergeable": head is not None,
        "preprocess": {
            "size": backbone.image_size, "mean": list(backbone.mean), "std": list(backbone.std),
            "interpolation": str(getattr(backbone.interpolation, "value", backbone.interpolation)),
        },
        "source": {"classifier": str(source), "backbone": backbone.spec,
                   "fingerprint": backbone.fingerprint},
    }
    if head is not None:
        meta.update(feature=head.feature, normalize=head.normalize, logit_scale=head.scale,
                    aggregate=head.aggregate if head.weight.ndim == 3 else None,
                    bias=head.bias is not None,
                    formula="logits = logit_scale * f(image) @ weight.T + bias")
    else:
        meta["not_mergeable_because"] = reason
    return meta


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file

    tens = {k: v.detach().float().cpu().contiguous() for k, v in tensors.items() if v is not None}
    return atomic_save(path, lambda p: save_file(tens, str(p)))


def _head_tensors(clf: Classifier, head: ImageHead | None) -> dict[str, torch.Tensor]:
    if head is not None:
        return {"weight": head.weight, "bias": head.bias}
    return {k: v.float() if v.is_floating_point() else v.float() for k, v in clf.tensors().items()
            if v is not None}


def _open_clip_config(backbone: Backbone) -> dict[str, Any]:
    import open_clip

    if backbone.backend != "openclip":
        raise ConfigError(
            f"--format open_clip needs an openclip: backbone; this classifier uses '{backbone.spec}'"
            " (use --format hf, onnx or torchscript)"
        )
    rest = backbone.spec.split(":", 1)[1]
    if rest.startswith("local-dir:"):
        cfg = json.loads((Path(rest.split(":", 1)[1]) / "open_clip_config.json").read_text())
        model_cfg = cfg["model_cfg"]
    else:
        model_cfg = open_clip.get_model_config(backbone.arch)
    if not model_cfg:
        raise ConfigError(f"no open_clip model config found for '{backbone.spec}'")
    return {"model_cfg": model_cfg, "preprocess_cfg": dict(backbone.preprocess_cfg)}


def _write_open_clip(out: Path, backbone: Backbone) -> list[Path]:
    cfg = _open_clip_config(backbone)
    state = {k: v for k, v in backbone.model.state_dict().items()}
    files = [atomic_write_json(out / "open_clip_config.json", cfg)]
    from safetensors.torch import save_file

    tens = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    files.append(atomic_save(out / "open_clip_model.safetensors", lambda p: save_file(tens, str(p))))
    return files


def _write_hf(out: Path, backbone: Backbone) -> list[Path]:
    if backbone.backend != "hf":
        raise ConfigError(
            f"--format hf needs an hf: backbone (a transformers CLIP model); this classifier uses "
            f"'{backbone.spec}' (use --format open_clip, onnx or torchscript)"
        )
    import transformers

    src = backbone.spec.split(":", 1)[1]
    before = set(out.iterdir()) if out.exists() else set()
    backbone.model.save_pretrained(out)
    backbone.tokenizer.save_pretrained(out)
    transformers.AutoImageProcessor.from_pretrained(src).save_pretrained(out)
    return sorted(set(out.iterdir()) - before)


@contextlib.contextmanager
def _plain_attention():
    """Disable ``nn.MultiheadAttention``'s inference fast path while exporting: its fused
    ``_native_multi_head_attention`` op has no ONNX translation; the plain path computes the same."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def _example_input(backbone: Backbone, n: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, backbone.image_size, backbone.image_size, generator=g)


def _write_graph(fmt: str, out: Path, module: ExportModule, backbone: Backbone) -> Path:
    x = _example_input(backbone).to(backbone.device)
    if fmt == "torchscript":
        with torch.no_grad():
            traced = torch.jit.trace(module, (x,), check_trace=False)
        return atomic_save(out / "model.pt", lambda p: torch.jit.save(traced, str(p)))
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise LabellessError("--format onnx needs onnx and onnxruntime: pip install 'labelless[export]'") from None
    name = "logits" if module.head is not None else "embeds"

    def write(p: Path) -> None:
        with torch.no_grad(), _plain_attention():
            torch.onnx.export(
                module, (x,), str(p), input_names=["images"], output_names=[name],
                dynamic_axes={"images": {0: "batch"}, name: {0: "batch"}}, opset_version=17,
                dynamo=False,
            )

    return atomic_save(out / "model.onnx", write)


def run_graph(fmt: str, path: Path, images: torch.Tensor) -> torch.Tensor:
    """Run an exported graph on preprocessed images with its own runtime (onnxruntime or
    ``torch.jit``), as a deployment would."""
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise LabellessError("checking an onnx export needs onnxruntime: pip install 'labelless[export]'") from None
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return torch.from_numpy(sess.run(None, {name: images.float().cpu().numpy()})[0])
    model = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return model(images.float().cpu())


def _check(fmt: str, path: Path, module: ExportModule, clf: Classifier, backbone: Backbone,
           check_images: str | Path | None, rt) -> dict[str, Any]:
    """Compare the exported graph with labelless: with ``check_images``, the classifier's own
    predictions on those images; otherwise the PyTorch module on random inputs."""
    if check_images is not None and module.head is not None:
        from labelless.data import build_dataset

        ds = build_dataset(f"folder:root={check_images}", classes=clf.classnames).validate(progress=False)
        if len(ds) == 0:
            raise LabellessError(f"no readable image under '{check_images}' to check the export with")
        with torch.no_grad():
            ref = clf.predict(backbone, ds, rt).float().cpu()
        x = torch.stack([backbone.preprocess(ds.with_transform(None)[i]["image"]) for i in range(len(ds))])
        against = "labelless predictions"
    else:
        x = _example_input(backbone, 3)
        with torch.no_grad():
            ref = module(x.to(backbone.device)).float().cpu()
        against = "PyTorch module on random inputs"
    got = run_graph(fmt, path, x).float()
    diff = float((got - ref).abs().max())
    out = {"n_images": int(x.shape[0]), "max_abs_logit_diff": diff, "against": against}
    if module.head is not None:
        out["top1_identical"] = bool((got.argmax(-1) == ref.argmax(-1)).all())
    return out


def export_classifier(
    classifier_dir: str | Path,
    format: str,
    out: str | Path,
    *,
    check_images: str | Path | None = None,
    device: str = "cpu",
) -> ExportResult:
    """Export the artifact at ``classifier_dir`` as ``format`` into the folder ``out``.

    check_images: onnx/torchscript: a folder of images on which the exported graph is compared
        with labelless's own predictions (default: random inputs against the PyTorch module).
    """
    from labelless.methods.base import Runtime, load_classifier

    if format not in FORMATS:
        raise ConfigError(f"unknown export format '{format}'. Formats: {', '.join(FORMATS)}")
    source = Path(classifier_dir)
    clf, backbone = load_classifier(source, device=device)
    backbone.eval()
    head, reason = image_head(clf)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    notes = [] if head is not None else [
        f"{clf.kind}: cannot be merged into one image -> logits map ({reason}); exported the "
        + ("adapted backbone weights and the classifier's tensors (head.safetensors)"
           if format in ("open_clip", "hf") else "image encoder (images -> embeddings)")
    ]
    files: list[Path] = []
    check = None
    if format == "open_clip":
        files += _write_open_clip(out, backbone)
    elif format == "hf":
        files += _write_hf(out, backbone)
    if format in ("open_clip", "hf"):
        files.append(_save_tensors(out / "head.safetensors", _head_tensors(clf, head)))
    else:
        module = ExportModule(backbone, head).eval()
        path = _write_graph(format, out, module, backbone)
        files.append(path)
        rt = Runtime(device=device, cache_dir=None, progress=False)
        check = _check(format, path, module, clf, backbone, check_images, rt)
    meta = _head_meta(clf, backbone, head, reason, source)
    meta["format"] = format
    if check is not None:
        meta["check"] = check
    files.append(atomic_write_json(out / "head.json", meta))
    for n in notes:
        log.warning(n)
    return ExportResult(format, out, files, head is not None, notes, check)


__all__ = ["FORMATS", "ExportModule", "ExportResult", "ImageHead", "export_classifier",
           "head_logits", "image_head", "run_graph"]
