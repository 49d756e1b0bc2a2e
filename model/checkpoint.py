"""Model folders (HF-style): config.json, model.safetensors (or model-*-of-*.safetensors shards), tokenizer.json."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import ModelConfig
from .network import Denoiser
from .tokenizer import HoneTokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
SHARD_BYTES = 15 * 2**20  # shards stay under the 16 MiB a device run may bring back per file


class CheckpointError(RuntimeError):
    """A model folder is missing, corrupt or inconsistent; the message names the file and the problem."""

    def __init__(self, path: Path | str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = str(path), problem


def _state_dict(model: Denoiser) -> dict[str, torch.Tensor]:
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.cfg.tie_embeddings:
        sd.pop("head.weight", None)  # safetensors stores no aliases; rebuilt by tying
    return sd


def save_model(folder: str | Path, model: Denoiser, tokenizer: HoneTokenizer, dtype=torch.float32, shard: bool | None = None) -> Path:
    """Write config, weights and tokenizer into `folder`. Weights go in shards of ≤ SHARD_BYTES when
    `shard` is True, or when it is None and they are larger (a device run brings back ≤ 16 MiB a file)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_bytes(msgspec.json.format(msgspec.json.encode(model.cfg), indent=2))
    sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in _state_dict(model).items()}
    for old in folder.glob("model*.safetensors"):
        old.unlink()
    if shard is None:
        shard = sum(v.numel() * v.element_size() for v in sd.values()) > SHARD_BYTES
    if not shard:
        save_file(sd, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    else:
        shards: list[dict[str, torch.Tensor]] = [{}]
        size = 0
        for k, v in sd.items():
            nbytes = v.numel() * v.element_size()
            if shards[-1] and size + nbytes > SHARD_BYTES:
                shards.append({})
                size = 0
            shards[-1][k] = v
            size += nbytes
        for i, part in enumerate(shards):
            save_file(part, str(folder / f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"), metadata={"format": "pt"})
    tokenizer.save(folder / TOKENIZER_FILE)
    return folder


def config_path(folder: str | Path) -> Path:
    """A model folder's config.json (ours or a transformers model's); CheckpointError when either is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(folder, "model folder does not exist")
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(path, "missing (not a model folder?)")
    return path


def load_config(folder: str | Path) -> ModelConfig:
    path = config_path(folder)
    try:
        cfg = msgspec.json.decode(path.read_bytes(), type=ModelConfig)
        cfg.validate()
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:
        raise CheckpointError(path, f"invalid config: {e}") from e
    return cfg


def weight_files(folder: Path) -> list[Path]:
    single = folder / WEIGHTS_FILE
    if single.is_file():
        return [single]
    shards = sorted(folder.glob("model-*-of-*.safetensors"))
    if not shards:
        raise CheckpointError(single, "missing (no model.safetensors or model-*-of-*.safetensors shards)")
    expected = int(shards[0].stem.rsplit("-of-", 1)[1])
    if len(shards) != expected:
        raise CheckpointError(folder, f"found {len(shards)} weight shards, expected {expected}")
    return shards


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> tuple[Denoiser, HoneTokenizer]:
    """Rebuild the network and tokenizer from a folder; raise CheckpointError on any problem."""
    folder = Path(folder)
    cfg = load_config(folder)
    tok_path = folder / TOKENIZER_FILE
    if not tok_path.is_file():
        raise CheckpointError(tok_path, "missing")
    try:
        tokenizer = HoneTokenizer.from_file(tok_path)
    except Exception as e:  # tokenizers raises plain Exception subclasses for corrupt JSON
        raise CheckpointError(tok_path, f"cannot be read as a tokenizer: {e}") from e
    if tokenizer.vocab_size != cfg.vocab_size:
        raise CheckpointError(tok_path, f"vocabulary size {tokenizer.vocab_size} does not match config.json ({cfg.vocab_size})")
    for name in ("pad_id", "bos_id", "eos_id", "mask_id", "null_id"):
        if getattr(tokenizer, name) != getattr(cfg, name):
            raise CheckpointError(tok_path, f"{name} is {getattr(tokenizer, name)} but config.json says {getattr(cfg, name)}")
    sd: dict[str, torch.Tensor] = {}
    for f in weight_files(folder):
        try:
            sd.update(load_file(str(f)))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f, f"corrupt weights: {e}") from e
    model = Denoiser(cfg)
    expected = model.state_dict()
    for k, v in sd.items():
        if k in expected and expected[k].shape != v.shape:
            raise CheckpointError(folder, f"tensor {k} has shape {tuple(v.shape)}, config.json implies {tuple(expected[k].shape)}")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not (k == "head.weight" and cfg.tie_embeddings)]
    if missing or unexpected:
        raise CheckpointError(folder, f"weights do not match config.json (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.to(device).eval(), tokenizer


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(path, f"unreadable JSON: {e}") from e
