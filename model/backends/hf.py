"""Third-party diffusion LMs (LLaDA-style unshifted, Dream-style shifted logits): known families run on Hone's native
network (families.py, no remote code), other architectures through transformers behind the remote-code opt-in."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .. import layout
from ..checkpoint import CheckpointError, read_json
from ..layout import Segments, Specials
from ..types import SampleOptions
from .families import STYLE_OF_FAMILY, BidirectionalLM, family_of, load_network, load_tokenizer
from .style import STYLES, detect_style, shift_sources

LLADA_MASK_ID = 126336  # LLaDA's reserved [MASK] id when its tokenizer does not name a mask token
CACHE_REFRESH = ("block", "step")  # when a native model's dual cache re-encodes the context: after CACHE_BLOCK slots
# were committed since the last refresh (Fast-dLLM's dual cache: approximate, the context saw an older canvas), or
# every step (exactly the recompute path, no saving: the reference the approximation is measured against)
CACHE_BLOCK = 8  # committed slots that make a block: two commit windows of the sampler's default (window 4)
CACHE_REFRESH_ENV = "HONE_CACHE_REFRESH"  # the user's choice of CACHE_REFRESH for every native model this process loads
DEFAULT_CACHE_REFRESH = "step"  # exact until agreement is measured on a real model: on random-weight families
# (hone bench thirdparty --size small, CPU) block refresh was 3.7x faster on lines and 2.6x on 64-token blocks but
# kept only 17-27 % of the recompute path's tokens (docs/thirdparty.md); HONE_CACHE_REFRESH=block opts in


def cache_refresh_setting(value: str | None = None) -> str:
    """The cache refresh to use: `value`, else $HONE_CACHE_REFRESH, else DEFAULT_CACHE_REFRESH; ValueError naming
    the choices (and where a bad value came from)."""
    source = "cache_refresh" if value is not None else CACHE_REFRESH_ENV
    value = value if value is not None else os.environ.get(CACHE_REFRESH_ENV) or DEFAULT_CACHE_REFRESH
    if value not in CACHE_REFRESH:
        raise ValueError(f"unknown cache refresh {value!r} ({source}); choose one of {list(CACHE_REFRESH)}")
    return value


class _HFSession:
    encoded = 0  # no context cache: the whole sequence runs in every step

    def __init__(self, backend: HFBackend, ids: list[int], slot_pos: list[int]):
        self.b = backend
        self.ids = torch.tensor(ids, device=backend.device)
        self.slot_pos = torch.tensor(slot_pos, device=backend.device)
        self.src = torch.tensor(shift_sources(slot_pos, backend.shifted), device=backend.device)

    @torch.no_grad()
    def predict(self, canvas: torch.Tensor) -> torch.Tensor:
        ids = self.ids.clone()
        ids[self.slot_pos] = canvas.to(self.b.device)
        return self.b.logits_at(ids, self.src).float().cpu()


class _DualCacheSession:
    """Native families: the context's keys/values (prefix, suffix, text between holes) come from a full forward and
    are reused while canvas steps run only the slots and the positions their logits are read at (the token before a
    slot for shifted models). The context attends to the canvas in these models, so its cache is refreshed from a
    full forward of the current canvas whenever `refresh` says (CACHE_REFRESH); the refresh step itself is exact."""

    def __init__(self, backend: HFBackend, ids: list[int], slot_pos: list[int], refresh: str):
        self.b, self.refresh = backend, refresh
        dev = backend.device
        self.ids = torch.tensor(ids, device=dev)
        self.slot_pos = torch.tensor(slot_pos, device=dev)
        src = shift_sources(slot_pos, backend.shifted)
        active = sorted(set(slot_pos) | set(src))  # run every step: slots, and the positions slots are read at
        where = {p: i for i, p in enumerate(active)}
        self.active = torch.tensor(active, device=dev)
        self.slot_in_active = torch.tensor([where[p] for p in slot_pos], device=dev)
        self.src_in_active = torch.tensor([where[p] for p in src], device=dev)
        self.src = torch.tensor(src, device=dev)
        keep = torch.ones(len(ids), dtype=torch.bool, device=dev)
        keep[self.active] = False
        self.context_pos = keep.nonzero().squeeze(1)  # (Tc,) positions whose keys/values are cached
        self.cache = None  # per layer (k, v) (1, Hkv, Tc, Dh) of the context, from the last refresh
        self.refreshed_canvas: torch.Tensor | None = None  # the canvas the cache was computed with
        self.refreshes = 0
        self.encoded = 0  # full forwards run before the first step (none: the first step refreshes)

    def _stale(self, canvas: torch.Tensor) -> bool:
        if self.cache is None or self.refresh == "step":
            return True
        mask = self.b.mask_id
        committed = (self.refreshed_canvas == mask) & (canvas != mask)
        return int(committed.sum()) >= CACHE_BLOCK

    @torch.no_grad()
    def predict(self, canvas: torch.Tensor) -> torch.Tensor:
        """canvas ids (n,) -> logits (n, V): a full forward that refreshes the cache, or the active positions alone."""
        canvas = canvas.to(self.b.device)
        net = self.b.model
        if self._stale(canvas):
            ids = self.ids.clone()
            ids[self.slot_pos] = canvas
            h, kvs = net.hidden(ids[None], keep_kv=True)  # (1, T, D)
            self.cache = [(k[:, :, self.context_pos], v[:, :, self.context_pos]) for k, v in kvs]
            self.refreshed_canvas = canvas.clone()
            self.refreshes += 1
            return net.logits(h[0, self.src]).float().cpu()
        ids = self.ids[self.active].clone()
        ids[self.slot_in_active] = canvas
        h, _ = net.hidden(ids[None], self.active, past=self.cache)  # (1, A, D)
        return net.logits(h[0, self.src_in_active]).float().cpu()


class HFBackend:
    """A third-party diffusion LM from a local folder.

    A folder whose config.json names a known family (families.FAMILIES: Dream / DiffuCoder / Qwen2, LLaDA, LLaMA)
    loads into the native network and needs no opt-in, even where it ships its own code (auto_map); any other
    architecture loads through transformers, which runs a folder's own code only with trust_remote_code. Cached
    sessions of native models reuse the context's keys/values (_DualCacheSession); otherwise every step runs all."""

    max_holes = None  # any number of holes in one canvas
    streams = False  # no causal context stream: rule ar is Hone's spm models' own
    batches = False  # calls run one after another
    network = None  # not Hone's network: held-out scoring and step reports skip it

    def __init__(self, folder: str | Path, device: torch.device, trust_remote_code: bool = False, style: str = "auto",
                 cache_refresh: str | None = None):
        """`cache_refresh`: one of CACHE_REFRESH; None reads the user's choice (cache_refresh_setting)."""
        if style not in STYLES:
            raise ValueError(f"unknown model style {style!r}; choose one of {list(STYLES)}")
        self.cache_refresh = cache_refresh_setting(cache_refresh)
        folder = Path(folder)
        cfg = read_json(folder / "config.json")
        family = family_of(cfg)
        self.native = family is not None  # Hone's own network: no remote code, nothing of transformers' models
        self.style = style if style != "auto" else (STYLE_OF_FAMILY.get(family) or detect_style(cfg))
        self.shifted = self.style == "dream"
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        if self.native:
            self.model = load_network(folder, device, dtype)
            self.tok = load_tokenizer(folder)
            max_len = self.model.cfg.max_positions
        else:
            self._load_transformers(folder, cfg, device, dtype, trust_remote_code)
            max_len = getattr(self.model.config, "max_position_embeddings", None)  # not every config says
        self.device = device
        self._set_specials(cfg.get("mask_token_id"), folder)
        self.max_len: int | None = max_len

    @classmethod
    def of_network(cls, net: BidirectionalLM, tok, device: torch.device, style: str,
                   cache_refresh: str | None = None) -> HFBackend:
        """A native network already in memory (hone bench thirdparty's random-weight models) with a tokenizer-like
        object (encode, decode, mask/bos/eos/pad_token_id); `style` as the family's (STYLE_OF_FAMILY)."""
        if style not in STYLES or style == "auto":
            raise ValueError(f"unknown model style {style!r}; choose one of {[s for s in STYLES if s != 'auto']}")
        self = cls.__new__(cls)
        self.cache_refresh = cache_refresh_setting(cache_refresh)
        self.native, self.model, self.tok, self.device = True, net, tok, device
        self.style, self.shifted = style, style == "dream"
        self._set_specials(None, "the network's tokenizer")
        self.max_len = net.cfg.max_positions
        return self

    def _set_specials(self, config_mask_id: int | None, folder: Path | str) -> None:
        """mask, bos and null ids from the tokenizer (config.json's mask_token_id, LLaDA's fixed id as fallbacks)."""
        mask_id = self.tok.mask_token_id if self.tok.mask_token_id is not None else config_mask_id
        if mask_id is None and self.style == "llada":
            mask_id = LLADA_MASK_ID
        if mask_id is None:
            raise CheckpointError(folder, "no mask token: the tokenizer has no mask_token and config.json no mask_token_id")
        self.mask_id = int(mask_id)
        self.bos_id = self.tok.bos_token_id
        self.eos_id = None  # third-party models were not trained with our end-of-document marker
        self.newline_ids: frozenset[int] = frozenset()  # (cross-file context is then cut at its token budget)
        nulls = {i for i in (self.tok.eos_token_id, self.tok.pad_token_id) if i is not None}
        self.null_ids = frozenset(nulls)
        if self.shifted and self.bos_id is None:
            self.bos_id = self.tok.eos_token_id if self.tok.eos_token_id is not None else self.tok.pad_token_id
        self.specials = Specials(self.bos_id, self.eos_id)

    def _load_transformers(self, folder: Path, cfg: dict, device: torch.device, dtype: torch.dtype,
                           trust_remote_code: bool) -> None:
        """An architecture Hone does not implement, through transformers; its own code only with the opt-in."""
        needs_remote = "auto_map" in cfg
        if needs_remote and not trust_remote_code:
            raise CheckpointError(
                folder / "config.json",
                f"model_type {cfg.get('model_type')!r} is not a family Hone runs natively and the model ships its own "
                "Python code (auto_map); loading it needs the user-level opt-in trustRemoteCode / --trust-remote-code",
            )
        import transformers  # heavy: only when a third-party model is asked for

        try:
            self.tok = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=trust_remote_code)
            loader = transformers.AutoModel if self.style == "llada" and needs_remote else transformers.AutoModelForCausalLM
            self.model = loader.from_pretrained(str(folder), local_files_only=True, trust_remote_code=trust_remote_code, dtype=dtype)
        except (OSError, ValueError, KeyError) as e:
            raise CheckpointError(folder, f"transformers could not load this model: {e}") from e
        self.model.to(device).eval()

    def logits_at(self, ids: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """ids (T,) -> logits (len(rows), V) at positions `rows`, full attention; a native model runs its head on
        those rows alone (the whole sequence's head is most of a small model's step, and GBs of logits at 7B)."""
        if self.native:
            h, _ = self.model.hidden(ids[None])  # (1, T, D)
            return self.model.logits(h[0, rows])
        out = self.model(input_ids=ids[None])
        return (out.logits if hasattr(out, "logits") else out[0])[0, rows]

    def default_options(self) -> SampleOptions:
        """The generic defaults: a third-party model's config does not record the budgets it was trained with."""
        return SampleOptions()

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode([i for i in ids if i not in self.null_ids and i != self.mask_id], skip_special_tokens=False)

    def session(self, seg: Segments, cached: bool) -> _HFSession | _DualCacheSession:
        """The infill layout without our context markers, which these models never saw: context is text before the
        prefix."""
        if seg.context:
            seg = Segments([seg.context + seg.pieces[0], *seg.pieces[1:]], seg.holes, seg.doc_end)
        ids, slot_pos = layout.sequence("infill", seg, self.specials)
        if cached and self.native:
            return _DualCacheSession(self, ids, slot_pos, self.cache_refresh)
        return _HFSession(self, ids, slot_pos)
