"""open_clip backend: every ``open_clip.list_pretrained()`` name+tag, ``hf-hub:`` ids,
``local-dir:`` folders, local checkpoint files and explicit random initialisation.

Spec grammar (after the ``openclip:`` source prefix)::

    ARCH:TAG              ViT-B-32:laion2b_s34b_b79k   (downloads or reuses open_clip's cache)
    ARCH:/path/ckpt.pt    an open_clip state-dict checkpoint file (.pt, .bin, .safetensors)
    ARCH:random[:SEED]    random initialisation, seeded (tests, benchmarks, pre-training)
    hf-hub:ORG/REPO       open_clip's Hugging Face hub format
    local-dir:/path       a folder with open_clip_config.json + weights
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import torch

from labelless.backbones.base import Backbone, ImageOutput
from labelless.backbones.hub import hub_access, offline_advice, quiet_hub_logging
from labelless.errors import BackboneError, did_you_mean
from labelless.registry import BACKBONES
from labelless.utils.io import sha256_file

quiet_hub_logging()  # the hub's retry lines print once (see backbones.hub)
_CONFIG_DIR = Path(__file__).parent / "model_configs"


def _open_clip():
    """open_clip, imported on first use (it pulls in transformers and torchvision.models: a
    second or more, which ``labelless list`` and ``--help`` should not pay), with our model
    configs (``labelless-tiny``) added once."""
    import open_clip

    if not getattr(open_clip, "_labelless_configs", False):
        open_clip.add_model_config(_CONFIG_DIR)
        open_clip._labelless_configs = True
    return open_clip


def add_model_configs() -> None:
    """Make labelless's architectures (``labelless-tiny``) known to plain ``open_clip`` calls
    (``open_clip.create_model("labelless-tiny")``). The openclip backend does this on first
    use; code that calls open_clip directly before that calls this."""
    _open_clip()

_CKPT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def file_digest(path: str | Path, _memo: dict = {}) -> str:  # noqa: B006 - deliberate memo
    """sha256 of a file's content (16 hex digits), memoised by (path, size, mtime): weights
    files are large and hashed for every cache key."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _memo:
        _memo[key] = sha256_file(path)[:16]
    return _memo[key]


def parse_openclip_spec(rest: str) -> dict:
    """Split the part after ``openclip:`` into a source description (see module doc)."""
    open_clip = _open_clip()
    if rest.startswith(("hf-hub:", "local-dir:")):
        return {"model_name": rest, "pretrained": None, "kind": rest.split(":", 1)[0]}
    arch, sep, weights = rest.partition(":")
    if arch not in open_clip.list_models():
        raise BackboneError(
            f"unknown open_clip architecture '{arch}'.{did_you_mean(arch, open_clip.list_models())} "
            "`labelless list backbones` shows them all"
        )
    if not sep or not weights:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise BackboneError(
            f"backbone spec 'openclip:{rest}' names no weights. Use openclip:{arch}:TAG "
            f"(tags: {', '.join(tags) or 'none'}), openclip:{arch}:/path/to/checkpoint.pt, or "
            f"openclip:{arch}:random for an untrained model"
        )
    if weights == "random" or weights.startswith("random:"):
        seed = weights.partition(":")[2] or "0"
        if not seed.isdigit():
            raise BackboneError(f"random seed in 'openclip:{rest}' must be an integer")
        return {"model_name": arch, "pretrained": None, "kind": "random", "seed": int(seed)}
    looks_like_path = "/" in weights or weights.endswith(_CKPT_SUFFIXES) or Path(weights).exists()
    if looks_like_path:
        if not Path(weights).is_file():
            raise BackboneError(f"checkpoint file '{weights}' does not exist")
        return {"model_name": arch, "pretrained": weights, "kind": "file"}
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if weights not in tags:
        raise BackboneError(
            f"unknown weights tag '{weights}' for {arch}.{did_you_mean(weights, tags)} "
            f"Valid tags: {', '.join(tags) or 'none (use a checkpoint file or random)'}"
        )
    return {"model_name": arch, "pretrained": weights, "kind": "tag"}


@contextlib.contextmanager
def _seeded(seed: int):
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


class _DropNoWeights(logging.Filter):
    """Drops open_clip's "No pretrained weights loaded" warning (for an asked-for random init)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init(active: bool):
    """open_clip logs on the root logger; filter that one message instead of changing the root
    logger's level (which would hide everything else the user logs meanwhile)."""
    root = logging.getLogger()
    flt = _DropNoWeights()
    if active:
        root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


class OpenClipBackbone(Backbone):
    """A model built by ``open_clip.create_model``."""

    backend = "openclip"

    def __init__(self, rest: str, device: str | torch.device = "cpu"):
        super().__init__()
        open_clip = _open_clip()
        src = parse_openclip_spec(rest)
        self.spec = f"openclip:{rest}"
        # weights from the hub: no 50 s of retries without network, each retry line once
        hub = (hub_access(self.spec, f"openclip:{src['model_name']}:/path/to/weights.safetensors or "
                          "openclip:local-dir:/path/to/folder")
               if src["kind"] in ("tag", "hf-hub") else contextlib.nullcontext())
        try:
            # open_clip warns "No pretrained weights loaded" for a random init that was asked for
            with hub, _seeded(src.get("seed", 0)), _quiet_random_init(src["kind"] == "random"):
                model = open_clip.create_model(
                    src["model_name"],
                    pretrained=src["pretrained"],
                    device=device,
                    load_weights=src["kind"] != "random",
                )
        except BackboneError:
            raise
        except Exception as e:  # open_clip raises RuntimeError/ValueError/OSError/HF errors
            hint = ""
            if src["kind"] in ("tag", "hf-hub"):
                hint = " Downloading weights needs network access to the model hub. " + offline_advice(
                    f"openclip:{src['model_name']}:/path/to/weights.safetensors or "
                    "openclip:local-dir:/path/to/folder")
            raise BackboneError(f"could not build backbone '{self.spec}': {e}.{hint}") from e
        model.eval()
        self.model = model
        self.arch = src["model_name"]
        self.weights = src["pretrained"] or src["kind"]
        if src["kind"] == "file":
            weights_id = "sha256:" + file_digest(src["pretrained"])
        elif src["kind"] == "random":
            weights_id = f"random:{src['seed']}:open_clip-{open_clip.__version__}"
        elif src["kind"] == "local-dir":
            # the folder's path says nothing about its content: digest config + weight files
            folder = Path(rest.split(":", 1)[1])
            files = sorted(
                p for p in folder.iterdir()
                if p.suffix in (".safetensors", ".bin", ".pth") or p.name == "open_clip_config.json"
            )
            weights_id = "sha256:" + ",".join(f"{p.name}={file_digest(p)}" for p in files)
        else:
            weights_id = rest
        from open_clip.transform import PreprocessCfg, image_transform_v2

        pp = PreprocessCfg(**model.visual.preprocess_cfg)
        self.preprocess_cfg = dict(model.visual.preprocess_cfg)
        self.preprocess = image_transform_v2(pp, is_train=False)
        self.fingerprint = f"openclip|{self.arch}|{weights_id}|{sorted(self.preprocess_cfg.items())}"
        size = pp.size if isinstance(pp.size, int) else pp.size[0]
        self.image_size = int(size)
        self.mean, self.std = tuple(pp.mean), tuple(pp.std)
        self.interpolation = pp.interpolation
        self.embed_dim = int(model.text_projection.shape[-1]) if hasattr(model, "text_projection") and model.text_projection is not None else int(model.visual.output_dim)
        self._tokenizer = open_clip.get_tokenizer(self.arch if src["kind"] != "hf-hub" else rest)

    # -- images
    def _encode_image(self, images: torch.Tensor, tokens: bool) -> ImageOutput:
        visual = self.model.visual
        if not tokens:
            return ImageOutput(embeds=self.model.encode_image(images))
        from open_clip.transformer import VisionTransformer

        if not isinstance(visual, VisionTransformer) or visual.attn_pool is not None:
            raise BackboneError(
                f"{self.spec}: [CLS]/patch tokens are only available for plain ViT image towers"
            )
        x = visual._embeds(images)  # (B, 1+P, w)
        x = visual.transformer(x)
        if visual.final_ln_after_pool:
            cls = visual.ln_post(x[:, 0])
            patches = x[:, 1:]
        else:
            x = visual.ln_post(x)
            cls, patches = x[:, 0], x[:, 1:]
        if visual.pool_type == "avg":
            pooled = patches.mean(dim=1)
        else:
            pooled = cls
        embeds = pooled @ visual.proj if visual.proj is not None else pooled
        return ImageOutput(embeds=embeds, cls=cls, patches=patches)

    # -- text
    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self._tokenizer(texts)

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)

    @property
    def logit_scale(self) -> float:
        ls = getattr(self.model, "logit_scale", None)
        return float(ls.exp().item()) if ls is not None else 100.0

    # -- parameters
    def _group_of(self, name: str) -> set[str]:
        groups: set[str] = set()
        visual = name.startswith("visual.")
        is_ln = ".ln_" in name or name.startswith(("visual.ln_", "ln_final")) or ".norm" in name
        if visual:
            groups.add("visual")
            if is_ln:
                groups.add("visual_ln")
            if ".attn." in name:
                groups.add("visual_attn")
            if name == "visual.proj":
                groups.add("projections")
        elif name != "logit_scale" and name != "logit_bias":
            groups.add("text")
            if is_ln:
                groups.add("text_ln")
            if ".attn." in name:
                groups.add("text_attn")
            if name == "text_projection":
                groups.add("projections")
        return groups


@BACKBONES.register("openclip")
def build_openclip(rest: str, device="cpu") -> OpenClipBackbone:
    """open_clip models: ARCH:TAG, ARCH:/path/ckpt.pt, ARCH:random[:SEED], hf-hub:ID, local-dir:DIR."""
    return OpenClipBackbone(rest, device=device)


def list_openclip() -> list[str]:
    """Every open_clip ``ARCH:TAG`` pair plus the random-init form of each architecture."""
    open_clip = _open_clip()
    out = [f"openclip:{m}:{t}" for m, t in open_clip.list_pretrained()]
    out += [f"openclip:{m}:random" for m in open_clip.list_models()]
    return out
