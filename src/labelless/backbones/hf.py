"""Hugging Face transformers backend for CLIP-family dual encoders.

Spec (after the ``hf:`` source prefix): a hub id (``openai/clip-vit-base-patch32``) or a local
directory written by ``save_pretrained`` (model + tokenizer + image processor). transformers is
an optional extra, imported lazily.

Preprocessing is rebuilt with torchvision from the checkpoint's ``CLIPImageProcessor`` settings
(shortest-side resize, centre crop, mean/std), so crops and augmentations compose with it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from labelless.backbones.base import Backbone, ImageOutput
from labelless.backbones.hub import hub_access, quiet_hub_logging
from labelless.backbones.openclip import file_digest
from labelless.errors import BackboneError
from labelless.registry import BACKBONES
from labelless.utils.lazy import lazy_module

T = lazy_module("torchvision.transforms")  # imported on first use: see labelless.utils.lazy

quiet_hub_logging()  # the hub's retry lines print once (see backbones.hub)


def _size(value, key: str, default: int) -> int:
    # transformers >= 5 stores sizes as SizeDict (dict-like with .get), older ones as dict/int
    if isinstance(value, dict) or hasattr(value, "get"):
        return int(value.get(key) or value.get("height") or default)
    return int(value or default)


class HFClipBackbone(Backbone):
    """A transformers ``CLIPModel`` (or another model with the same two towers)."""

    backend = "hf"

    def __init__(self, rest: str, device: str | torch.device = "cpu"):
        super().__init__()
        try:
            import transformers
        except ImportError:
            raise BackboneError(
                "the hf: backbones need transformers: pip install 'labelless[hf]'"
            ) from None
        self.spec = f"hf:{rest}"
        local = Path(rest).is_dir()
        if not local and (rest.startswith(("/", ".", "~")) or Path(rest).suffix):
            raise BackboneError(f"Hugging Face model directory '{rest}' does not exist")
        import contextlib

        hub = contextlib.nullcontext() if local else hub_access(
            self.spec, "hf:/path/to/a/save_pretrained/folder")
        try:
            with hub:
                model = transformers.AutoModel.from_pretrained(rest)
                tokenizer = transformers.AutoTokenizer.from_pretrained(rest)
                processor = transformers.AutoImageProcessor.from_pretrained(rest)
        except BackboneError:
            raise
        except Exception as e:
            hint = "" if local else (
                " Downloading needs network access to the Hugging Face hub; offline, pass a local "
                "directory written by save_pretrained."
            )
            raise BackboneError(f"could not load Hugging Face model '{rest}': {e}.{hint}") from e
        if not all(hasattr(model, a) for a in ("vision_model", "text_model", "visual_projection")):
            raise BackboneError(f"'{rest}' is a {type(model).__name__}, not a CLIP-style dual encoder")
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.arch = type(model).__name__
        self.weights = rest
        if local:
            files = sorted(p for p in Path(rest).iterdir() if p.suffix in (".safetensors", ".bin"))
            weights_id = "sha256:" + ",".join(file_digest(p) for p in files)
        else:
            weights_id = rest
        crop = _size(getattr(processor, "crop_size", None), "height", 224)
        resize = _size(getattr(processor, "size", None), "shortest_edge", crop)
        self.image_size = crop
        self.mean = tuple(float(m) for m in processor.image_mean)
        self.std = tuple(float(s) for s in processor.image_std)
        resample = {0: T.InterpolationMode.NEAREST, 2: T.InterpolationMode.BILINEAR, 3: T.InterpolationMode.BICUBIC}
        self.interpolation = resample.get(int(getattr(processor, "resample", 3)), T.InterpolationMode.BICUBIC)
        self.preprocess = T.Compose([
            T.Resize(resize, interpolation=self.interpolation),
            T.CenterCrop(crop),
            T.ToTensor(),
            T.Normalize(self.mean, self.std),
        ])
        self.preprocess_cfg = {
            "size": crop, "resize": resize, "mean": self.mean, "std": self.std,
            "interpolation": self.interpolation.value,
        }
        self.fingerprint = f"hf|{self.arch}|{weights_id}|{json.dumps(self.preprocess_cfg, sort_keys=True)}"
        self.embed_dim = int(model.config.projection_dim)
        self.context_length = int(model.config.text_config.max_position_embeddings)

    def _encode_image(self, images: torch.Tensor, tokens: bool) -> ImageOutput:
        vm = self.model.vision_model
        out = vm(pixel_values=images)
        cls = out.pooler_output  # post_layernorm([CLS])  (B, w)
        embeds = self.model.visual_projection(cls)
        if not tokens:
            return ImageOutput(embeds=embeds)
        patches = vm.post_layernorm(out.last_hidden_state[:, 1:])  # (B, P, w), like open_clip
        return ImageOutput(embeds=embeds, cls=cls, patches=patches)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        enc = self.tokenizer(
            list(texts), padding="max_length", truncation=True,
            max_length=self.context_length, return_tensors="pt",
        )
        return torch.stack([enc["input_ids"], enc["attention_mask"]], dim=1)  # (T, 2, L)

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.model.text_model(input_ids=tokens[:, 0], attention_mask=tokens[:, 1])
        return self.model.text_projection(out.pooler_output)

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp().item())

    def _group_of(self, name: str) -> set[str]:
        groups: set[str] = set()
        is_ln = "layer_norm" in name or "layrnorm" in name or "layernorm" in name
        if name.startswith("vision_model.") or name.startswith("visual_projection"):
            groups.add("visual")
            if is_ln:
                groups.add("visual_ln")
            if ".self_attn." in name:
                groups.add("visual_attn")
            if name.startswith("visual_projection"):
                groups.add("projections")
        elif name.startswith(("text_model.", "text_projection")):
            groups.add("text")
            if is_ln:
                groups.add("text_ln")
            if ".self_attn." in name:
                groups.add("text_attn")
            if name.startswith("text_projection"):
                groups.add("projections")
        return groups


@BACKBONES.register("hf")
def build_hf(rest: str, device="cpu") -> HFClipBackbone:
    """Hugging Face transformers CLIP models: a hub id or a save_pretrained directory."""
    return HFClipBackbone(rest, device=device)
