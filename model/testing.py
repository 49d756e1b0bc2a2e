"""A tiny randomly initialised model folder for tests that need a real network but not its quality."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .checkpoint import save_model
from .config import preset
from .network import Denoiser
from .reports.common import STDLIB, read_source
from .tokenizer import train_tokenizer


def sample_texts() -> list[str]:
    """Real Python source from the standard library (always present, no download)."""
    return [read_source(STDLIB / name) for name in ("argparse.py", "json/decoder.py", "textwrap.py")]


def make_tiny_model(folder: str | Path, seed: int = 0, vocab_size: int = 512, sharpness: float = 20.0, **overrides) -> Path:
    """sharpness scales the (tied) embedding so logits are peaked: a default-initialised network is
    near-uniform, and its confidence ties would make greedy decoding depend on float rounding."""
    torch.manual_seed(seed)
    tok = train_tokenizer(sample_texts(), vocab_size=vocab_size, show_progress=False)
    cfg = preset("tiny", vocab_size=tok.vocab_size, pad_id=tok.pad_id, bos_id=tok.bos_id,
                 eos_id=tok.eos_id, mask_id=tok.mask_id, null_id=tok.null_id, **overrides)
    net = Denoiser(cfg)
    with torch.no_grad():
        net.embed.weight.mul_(sharpness)
    folder = save_model(folder, net, tok)
    (Path(folder) / "MODEL_CARD.md").write_text("# tiny test model\n\nRandomly initialised; for tests only.\n")
    return Path(folder)


def make_tiny_hf_model(folder: str | Path, style: str) -> Path:
    """A tiny randomly initialised transformers model saved with a tokenizer that has a mask token.

    style 'llada' writes model_type llama (unshifted use), 'dream' a Qwen2 model (shifted use)."""
    import transformers
    from tokenizers import Tokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hone_tok = train_tokenizer(sample_texts(), vocab_size=400, show_progress=False)
    raw: Tokenizer = hone_tok.tok
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<|bos|>", eos_token="<|eos|>",
                                                pad_token="<|pad|>", mask_token="<|mask|>")
    common = dict(vocab_size=hone_tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                  bos_token_id=hone_tok.bos_id, eos_token_id=hone_tok.eos_id, pad_token_id=hone_tok.pad_id)
    torch.manual_seed(0)
    if style == "dream":
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common))
    else:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**common))
    model.save_pretrained(str(folder))
    fast.save_pretrained(str(folder))
    cfg_path = folder / "config.json"
    cfg = json.loads(cfg_path.read_text())
    if style == "llada":
        cfg["mask_token_id"] = hone_tok.mask_id
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return folder
