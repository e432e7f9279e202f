"""Build a tiny Hugging Face CLIP ``save_pretrained`` folder offline (no hub access).

The tokenizer files are derived from open_clip's own BPE file, exactly as open_clip's
``SimpleTokenizer`` builds its vocabulary: the 256 byte characters, the same with ``</w>``, the
merges joined, then the two special tokens. So ``CLIPTokenizer`` and open_clip tokenise alike.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import open_clip
import torch

BPE_PATH = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
# open_clip's SimpleTokenizer keeps this many merges (49152 - 256 - 2).
N_MERGES = 49152 - 256 - 2


def _bytes_to_unicode() -> dict[int, str]:
    from open_clip.tokenizer import bytes_to_unicode

    return bytes_to_unicode()


def write_clip_tokenizer_files(out: Path) -> tuple[Path, Path]:
    """Write ``vocab.json`` and ``merges.txt`` (with the ``#version`` header) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    lines = gzip.open(BPE_PATH).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : N_MERGES + 1]]
    vocab = list(_bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    vocab_path, merges_path = out / "vocab.json", out / "merges.txt"
    vocab_path.write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    merges_path.write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return vocab_path, merges_path


def make_tiny_hf_clip(out: str | Path, seed: int = 0, context_length: int = 32):
    """Save a tiny random ``CLIPModel`` + ``CLIPTokenizer`` + ``CLIPImageProcessor`` to ``out``.

    Returns ``(model, tokenizer, processor)`` (the in-memory objects that were saved).
    """
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPTextConfig,
        CLIPTokenizer,
        CLIPVisionConfig,
    )

    out = Path(out)
    tok_dir = out / "_tok"
    vocab_path, merges_path = write_clip_tokenizer_files(tok_dir)
    tokenizer = CLIPTokenizer(vocab=str(vocab_path), merges=str(merges_path),
                              model_max_length=context_length)
    text = CLIPTextConfig(
        vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=context_length,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    )
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=8,
    )
    cfg = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16)
    torch.manual_seed(seed)
    model = CLIPModel(cfg).eval()
    processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
        do_center_crop=True, do_resize=True,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    processor.save_pretrained(out)
    for p in tok_dir.iterdir():
        p.unlink()
    tok_dir.rmdir()
    return model, tokenizer, processor
