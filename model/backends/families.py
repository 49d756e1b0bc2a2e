"""Native networks for the third-party diffusion LM families, read straight from a user's downloaded folder.

No remote code and no transformers model class: config.json is parsed into a FamilyConfig, the safetensors (one
file, shards listed by model.safetensors.index.json, or model-*-of-*.safetensors) are mapped onto Hone's own
bidirectional transformer (BidirectionalLM), the tokenizer is read from its files. Families:
- qwen2: Qwen2-shaped (Dream, Dream-Coder, DiffuCoder, Open-dCoder): q/k/v biases, GQA, transformers' weight names;
- llada: LLaMA-shaped under LLaDA's own weight names (model.transformer.blocks.N.q_proj, ff_proj = gate, ...);
- llama: LLaMA-shaped under transformers' weight names.
All three are pre-norm RMSNorm, rotary positions (rotate-half layout), SwiGLU MLP and full (non-causal) attention.
Which sequence position predicts a slot (shifted or not) is the backend's business (style.py), not the network's.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import nn

from ..checkpoint import CONFIG_FILE, CheckpointError, weight_files

FAMILIES = ("qwen2", "llama", "llada")
ROPE_TYPES = ("default", "linear", "llama3")  # rope scalings the native network computes
INDEX_FILE = "model.safetensors.index.json"
QWEN2_MODEL_TYPES = ("qwen2", "dream")  # Dream, Dream-Coder and DiffuCoder ship model_type "Dream"
QWEN2_ARCHITECTURES = ("Qwen2ForCausalLM", "Qwen2Model", "DreamModel")
STYLE_OF_FAMILY = {"qwen2": "dream", "llada": "llada", "llama": None}  # llama: the caller names the convention
log = logging.getLogger(__name__)

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: k, v each (B, Hkv, T, Dh)


@dataclass(frozen=True)
class FamilyConfig:
    """The network a third-party config.json describes, in Hone's terms."""

    family: str  # "qwen2", "llama" (transformers' weight names) or "llada" (LLaDA's weight names)
    vocab_size: int  # rows of the embedding and of the head (LLaDA: its padded embedding_size)
    hidden: int  # model width D
    layers: int  # transformer blocks
    heads: int  # query heads H
    kv_heads: int  # key/value heads (grouped-query attention: H is a multiple of it)
    head_dim: int  # Dh
    intermediate: int  # SwiGLU inner width
    rms_eps: float  # RMSNorm epsilon (Qwen2/Dream 1e-6, LLaDA 1e-5)
    rope_theta: float  # rotary base
    rope_scaling: tuple[tuple[str, float], ...] | None  # (key, value) pairs of a non-default rope_type, else None
    qkv_bias: bool  # q/k/v projections carry biases (Qwen2 does)
    o_bias: bool  # the attention output projection carries a bias (LLaMA attention_bias)
    tie_embeddings: bool  # the head is the embedding matrix
    max_positions: int | None  # longest sequence the model was trained for, when its config says
    embed_scale: float = 1.0  # LLaDA input_emb_norm: embeddings multiplied by sqrt(D)
    logit_scale: float = 1.0  # LLaDA scale_logits: logits multiplied by 1/sqrt(D)


def family_of(cfg: dict) -> str | None:
    """The native family a config.json names, or None for an architecture Hone does not implement."""
    model_type = str(cfg.get("model_type", "")).lower()
    archs = set(cfg.get("architectures") or [])
    if model_type == "llada" or "LLaDAModelLM" in archs:
        return "llada"
    if model_type in QWEN2_MODEL_TYPES or archs & set(QWEN2_ARCHITECTURES):
        return "qwen2"
    if model_type == "llama" or "LlamaForCausalLM" in archs:
        return "llama"
    return None


def _need(cfg: dict, key: str, path: Path):
    if cfg.get(key) is None:
        raise CheckpointError(path, f"no {key!r}: cannot build the network")
    return cfg[key]


def _refuse(path: Path, what: str):
    raise CheckpointError(path, f"{what}: the native network does not implement it (unknown variants load through "
                                "transformers with the trustRemoteCode / --trust-remote-code opt-in)")


def _rope(cfg: dict, path: Path) -> tuple[float, tuple[tuple[str, float], ...] | None]:
    """rope theta and scaling from either layout: top-level rope_theta / rope_scaling (the published configs) or
    transformers 5's rope_parameters."""
    params = dict(cfg.get("rope_parameters") or {})
    theta = cfg.get("rope_theta", params.get("rope_theta", 10000.0))
    scaling = cfg.get("rope_scaling") or params
    kind = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
    if kind not in ROPE_TYPES:
        _refuse(path, f"rope_type {kind!r} (the native network knows {list(ROPE_TYPES)})")
    if kind == "default":
        return float(theta), None
    keep = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    return float(theta), (("rope_type", kind),) + tuple((k, float(scaling[k])) for k in keep if k in scaling)


def family_config(cfg: dict, path: Path) -> FamilyConfig:
    """config.json (as a dict, read from `path`) -> FamilyConfig; CheckpointError naming the file for a missing
    field or a setting the native network does not implement."""
    family = family_of(cfg)
    if family is None:
        raise CheckpointError(path, f"model_type {cfg.get('model_type')!r} is not one of the native families {list(FAMILIES)}")
    if family == "llada":
        return _llada_config(cfg, path)
    if cfg.get("hidden_act", "silu") != "silu":
        _refuse(path, f"hidden_act {cfg.get('hidden_act')!r}")
    if cfg.get("use_sliding_window"):
        _refuse(path, "use_sliding_window")
    if cfg.get("mlp_bias"):
        _refuse(path, "mlp_bias")
    hidden, heads = int(_need(cfg, "hidden_size", path)), int(_need(cfg, "num_attention_heads", path))
    theta, scaling = _rope(cfg, path)
    attention_bias = bool(cfg.get("attention_bias", False))
    return FamilyConfig(
        family=family, vocab_size=int(_need(cfg, "vocab_size", path)), hidden=hidden,
        layers=int(_need(cfg, "num_hidden_layers", path)), heads=heads,
        kv_heads=int(cfg.get("num_key_value_heads") or heads), head_dim=int(cfg.get("head_dim") or hidden // heads),
        intermediate=int(_need(cfg, "intermediate_size", path)),
        rms_eps=float(cfg.get("rms_norm_eps", 1e-6)), rope_theta=theta, rope_scaling=scaling,
        qkv_bias=family == "qwen2" or attention_bias, o_bias=family == "llama" and attention_bias,
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)), max_positions=cfg.get("max_position_embeddings"),
    )


def _llada_config(cfg: dict, path: Path) -> FamilyConfig:
    """LLaDA's OLMo-style config (d_model, n_heads, block_type ...); only its LLaMA block is implemented."""
    wanted = {"block_type": "llama", "layer_norm_type": "rms", "activation_type": "silu", "rope": True}
    for key, value in wanted.items():
        if cfg.get(key, value) != value:
            _refuse(path, f"{key} {cfg.get(key)!r} (expected {value!r})")
    for key in ("alibi", "yarn", "attention_layer_norm", "include_bias", "bias_for_layer_norm"):
        if cfg.get(key):
            _refuse(path, key)
    if cfg.get("block_group_size", 1) != 1:
        _refuse(path, f"block_group_size {cfg.get('block_group_size')}")
    if not cfg.get("layer_norm_with_affine", True):
        _refuse(path, "layer norms without weights (layer_norm_with_affine false)")
    d, heads = int(_need(cfg, "d_model", path)), int(_need(cfg, "n_heads", path))
    kv = cfg.get("n_kv_heads") or (1 if cfg.get("multi_query_attention") else heads)
    mlp = cfg.get("mlp_hidden_size") or int(cfg.get("mlp_ratio", 4) * d)
    return FamilyConfig(
        family="llada", vocab_size=int(cfg.get("embedding_size") or _need(cfg, "vocab_size", path)), hidden=d,
        layers=int(_need(cfg, "n_layers", path)), heads=heads, kv_heads=int(kv), head_dim=d // heads,
        intermediate=int(mlp), rms_eps=float(cfg.get("rms_norm_eps", 1e-5)),
        rope_theta=float(cfg.get("rope_theta", 10000.0)), rope_scaling=None,
        qkv_bias=bool(cfg.get("include_qkv_bias", False)), o_bias=False,
        tie_embeddings=bool(cfg.get("weight_tying", False)), max_positions=cfg.get("max_sequence_length"),
        embed_scale=math.sqrt(d) if cfg.get("input_emb_norm") else 1.0,
        logit_scale=1 / math.sqrt(d) if cfg.get("scale_logits") else 1.0,
    )


def rope_inv_freq(c: FamilyConfig) -> torch.Tensor:
    """Rotary inverse frequencies (Dh/2,) in float32, with linear or llama3 scaling applied."""
    inv = 1.0 / (c.rope_theta ** (torch.arange(0, c.head_dim, 2, dtype=torch.float32, device="cpu") / c.head_dim))
    if c.rope_scaling is None:
        return inv
    s = dict(c.rope_scaling)
    if s["rope_type"] == "linear":
        return inv / s["factor"]
    # llama3: long wavelengths divided by factor, short kept, a smooth blend between
    factor, low, high, old = s["factor"], s["low_freq_factor"], s["high_freq_factor"], s["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > old / low, inv / factor, inv)
    smooth = (old / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old / high) & (wavelen <= old / low)
    return torch.where(medium, blended, scaled)


class RMSNorm(nn.Module):
    """x normalised in float32, back in its dtype, then scaled (transformers' LlamaRMSNorm and LLaDA's order)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, Dh); cos/sin (T, Dh) float32 -> x rotated in float32 (rotate-half layout), x's dtype."""
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    return (xf * cos + torch.cat((-x2, x1), dim=-1) * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, c: FamilyConfig):
        super().__init__()
        self.h, self.hkv, self.dh = c.heads, c.kv_heads, c.head_dim
        self.q = nn.Linear(c.hidden, c.heads * c.head_dim, bias=c.qkv_bias)
        self.k = nn.Linear(c.hidden, c.kv_heads * c.head_dim, bias=c.qkv_bias)
        self.v = nn.Linear(c.hidden, c.kv_heads * c.head_dim, bias=c.qkv_bias)
        self.o = nn.Linear(c.heads * c.head_dim, c.hidden, bias=c.o_bias)

    def forward(self, x, cos, sin, past=None):
        """x (B, T, D) -> (B, T, D) and this call's (k, v) (B, Hkv, T, Dh). Full attention: every token sees every
        other one, and the cached `past` (k, v) as well."""
        b, t, _ = x.shape
        q = apply_rotary(self.q(x).view(b, t, self.h, self.dh).transpose(1, 2), cos, sin)  # (B, H, T, Dh)
        k = apply_rotary(self.k(x).view(b, t, self.hkv, self.dh).transpose(1, 2), cos, sin)  # (B, Hkv, T, Dh)
        v = self.v(x).view(b, t, self.hkv, self.dh).transpose(1, 2)
        kk, vv = k, v
        if past is not None:
            kk, vv = torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)
        y = F.scaled_dot_product_attention(q, kk, vv, enable_gqa=self.hkv != self.h)  # (B, H, T, Dh)
        return self.o(y.transpose(1, 2).reshape(b, t, self.h * self.dh)), (k, v)


class Block(nn.Module):
    def __init__(self, c: FamilyConfig):
        super().__init__()
        self.attn_norm = RMSNorm(c.hidden, c.rms_eps)
        self.attn = Attention(c)
        self.mlp_norm = RMSNorm(c.hidden, c.rms_eps)
        self.gate = nn.Linear(c.hidden, c.intermediate, bias=False)
        self.up = nn.Linear(c.hidden, c.intermediate, bias=False)
        self.down = nn.Linear(c.intermediate, c.hidden, bias=False)

    def forward(self, x, cos, sin, past=None):
        a, kv = self.attn(self.attn_norm(x), cos, sin, past)
        x = x + a
        h = self.mlp_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h)), kv


class BidirectionalLM(nn.Module):
    """Token ids -> logits (B, T) -> (B, T, V) of a Qwen2- or LLaMA-shaped network with full attention."""

    def __init__(self, c: FamilyConfig):
        super().__init__()
        self.cfg = c
        self.embed = nn.Embedding(c.vocab_size, c.hidden)
        self.layers = nn.ModuleList(Block(c) for _ in range(c.layers))
        self.norm = RMSNorm(c.hidden, c.rms_eps)
        self.head = None if c.tie_embeddings else nn.Linear(c.hidden, c.vocab_size, bias=False)
        self.inv_freq = rope_inv_freq(c)  # (Dh/2,) float32; a plain attribute: never in the state dict

    def _rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (T,) -> cos, sin (T, Dh) float32."""
        if self.inv_freq.device != positions.device:
            self.inv_freq = self.inv_freq.to(positions.device)
        ang = torch.outer(positions.float(), self.inv_freq)  # (T, Dh/2)
        ang = torch.cat((ang, ang), dim=-1)
        return ang.cos(), ang.sin()

    def hidden(self, ids, positions=None, past: KV | None = None, keep_kv: bool = False):
        """ids (B, T) at `positions` (T,) (default 0..T-1) -> final normed hidden states (B, T, D) and, if keep_kv,
        each layer's (k, v); `past`: cached keys/values every token attends to as well."""
        if positions is None:
            positions = torch.arange(ids.shape[1], device=ids.device)
        cos, sin = self._rope(positions)
        x = self.embed(ids)  # (B, T, D)
        if self.cfg.embed_scale != 1.0:
            x = x * self.cfg.embed_scale
        kvs: KV = []
        for i, layer in enumerate(self.layers):
            x, kv = layer(x, cos, sin, None if past is None else past[i])
            if keep_kv:
                kvs.append(kv)
        return self.norm(x), kvs

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """hidden (..., D) -> logits (..., V)."""
        out = F.linear(h, self.embed.weight) if self.head is None else self.head(h)
        return out * self.cfg.logit_scale if self.cfg.logit_scale != 1.0 else out

    def forward(self, ids, positions=None):
        """ids (B, T) -> logits (B, T, V)."""
        return self.logits(self.hidden(ids, positions)[0])


def stored_names(c: FamilyConfig) -> dict[str, str]:
    """Native parameter name -> the name the family's checkpoints store it under."""
    llada = c.family == "llada"
    top = "model.transformer." if llada else "model."
    names = {"embed.weight": top + ("wte.weight" if llada else "embed_tokens.weight"),
             "norm.weight": top + ("ln_f.weight" if llada else "norm.weight")}
    if not c.tie_embeddings:
        names["head.weight"] = (top + "ff_out.weight") if llada else "lm_head.weight"
    if llada:
        per_layer = {"attn_norm.weight": "attn_norm.weight", "mlp_norm.weight": "ff_norm.weight",
                     "attn.q.weight": "q_proj.weight", "attn.k.weight": "k_proj.weight", "attn.v.weight": "v_proj.weight",
                     "attn.o.weight": "attn_out.weight", "gate.weight": "ff_proj.weight", "up.weight": "up_proj.weight",
                     "down.weight": "ff_out.weight"}
        qkv_bias = {f"attn.{p}.bias": f"{p}_proj.bias" for p in "qkv"}
        prefix = "model.transformer.blocks.{i}."
    else:
        per_layer = {"attn_norm.weight": "input_layernorm.weight", "mlp_norm.weight": "post_attention_layernorm.weight",
                     "gate.weight": "mlp.gate_proj.weight", "up.weight": "mlp.up_proj.weight",
                     "down.weight": "mlp.down_proj.weight"}
        per_layer.update({f"attn.{p}.weight": f"self_attn.{p}_proj.weight" for p in "qkvo"})
        qkv_bias = {f"attn.{p}.bias": f"self_attn.{p}_proj.bias" for p in "qkv"}
        if c.o_bias:
            per_layer["attn.o.bias"] = "self_attn.o_proj.bias"
        prefix = "model.layers.{i}."
    if c.qkv_bias:
        per_layer.update(qkv_bias)
    for i in range(c.layers):
        names.update({f"layers.{i}.{k}": prefix.format(i=i) + v for k, v in per_layer.items()})
    return names


def safetensors_files(folder: Path) -> list[Path]:
    """The folder's weight files: those model.safetensors.index.json lists (each must exist), else model.safetensors
    or its model-*-of-*.safetensors shards."""
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(index, f"unreadable index (no weight_map): {e}") from e
        files = [folder / name for name in dict.fromkeys(weight_map.values())]
        for f in files:
            if not f.is_file():
                raise CheckpointError(f, f"missing (listed in {INDEX_FILE})")
        return files
    return weight_files(folder)


def read_weights(folder: Path, c: FamilyConfig, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The native state dict from the folder's safetensors, each tensor checked against the shape `c` implies;
    CheckpointError naming the file for a corrupt file, a wrong shape or a missing tensor."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in BidirectionalLM(c).state_dict().items()}
    wanted = {stored: native for native, stored in stored_names(c).items()}
    sd: dict[str, torch.Tensor] = {}
    files = safetensors_files(folder)
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as st:
                for key in st.keys():
                    native = wanted.get(key)
                    if native is None:
                        continue
                    t = st.get_tensor(key)
                    if t.shape != shapes[native]:
                        raise CheckpointError(f, f"tensor {key} has shape {tuple(t.shape)}, config.json implies "
                                                 f"{tuple(shapes[native])}")
                    sd[native] = t.to(dtype)
        except CheckpointError:
            raise
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:  # a truncated file fails on get_tensor
            raise CheckpointError(f, f"corrupt weights: {e}") from e
    missing = [stored for stored, native in wanted.items() if native not in sd]
    if missing:
        where = folder / INDEX_FILE if (folder / INDEX_FILE).is_file() else files[0]
        raise CheckpointError(where, f"{len(missing)} tensors missing for {c.family} (config.json): {missing[:3]}")
    return sd


def load_network(folder: str | Path, device: torch.device, dtype: torch.dtype) -> BidirectionalLM:
    """The folder's network in eval mode on `device`, weights in `dtype` (nothing materialised twice)."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(path, f"unreadable JSON: {e}") from e
    c = family_config(cfg, path)
    sd = read_weights(folder, c, dtype)
    with torch.device("meta"):
        net = BidirectionalLM(c)
    net.load_state_dict(sd, strict=True, assign=True)
    return net.to(device).eval()


def load_tokenizer(folder: Path):
    """The folder's tokenizer through transformers' own tokenizer classes (never a class the folder ships):
    tokenizer.json, or a Qwen2 byte-level BPE from vocab.json + merges.txt (Dream ships those with its own
    tokenizer class, the same BPE). Special tokens come from tokenizer_config.json / special_tokens_map.json."""
    import transformers  # heavy: only when a third-party model is asked for

    if (folder / "tokenizer.json").is_file():
        cls, named = transformers.PreTrainedTokenizerFast, folder / "tokenizer.json"
    elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        cls, named = transformers.Qwen2TokenizerFast, folder / "vocab.json"
    else:
        raise CheckpointError(folder / "tokenizer.json", "missing (and no vocab.json + merges.txt)")
    try:
        return cls.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:  # tokenizers raises plain Exception subclasses for corrupt files
        raise CheckpointError(named, f"cannot be read as a tokenizer: {e}") from e
