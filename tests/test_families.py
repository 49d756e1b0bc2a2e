"""Native third-party families (model.backends.families): logits equal transformers' Qwen2 / LLaMA with the same
weights under full attention, folders in Dream's and LLaDA's own layouts load with no opt-in, logit conventions,
and clear errors for unknown, corrupt or mismatched folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from model.backends import HFBackend
from model.backends.families import BidirectionalLM, family_config, load_network
from model.backends.hf import CACHE_BLOCK
from model.checkpoint import CheckpointError
from model.engine import Engine
from model.layout import Segments
from model.sampler import sample
from model.testing import sample_texts
from model.tokenizer import train_tokenizer
from model.types import SampleOptions

transformers = pytest.importorskip("transformers")  # a dependency of the third-party path, installed with it

TOL = 1e-4  # float32 on CPU: the same operations in the same order, differences are rounding only
VOCAB = 400
SMALL = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tok_files(tmp_path_factory) -> dict[str, Path]:
    """A small byte-level BPE with bos/eos/pad/mask, saved both ways third-party folders ship tokenizers:
    tokenizer.json (LLaDA, Qwen2) and vocab.json + merges.txt + tokenizer_config.json (Dream)."""
    hone = train_tokenizer(sample_texts(), vocab_size=VOCAB, show_progress=False)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=hone.tok, bos_token="<|bos|>", eos_token="<|eos|>",
                                                pad_token="<|pad|>", mask_token="<|mask|>")
    json_dir = tmp_path_factory.mktemp("tok_json")
    fast.save_pretrained(str(json_dir))
    bpe_dir = tmp_path_factory.mktemp("tok_bpe")
    hone.tok.model.save(str(bpe_dir))  # vocab.json, merges.txt
    specials = {"<|bos|>": hone.bos_id, "<|eos|>": hone.eos_id, "<|pad|>": hone.pad_id, "<|mask|>": hone.mask_id}
    (bpe_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "DreamTokenizer", "auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]},
        "added_tokens_decoder": {str(i): {"content": s, "special": True, "lstrip": False, "rstrip": False,
                                          "normalized": False, "single_word": False} for s, i in specials.items()},
        "bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|pad|>", "mask_token": "<|mask|>",
    }))
    return {"json": json_dir, "bpe": bpe_dir, "mask_id": hone.mask_id}


def _copy_tokenizer(src: Path, dst: Path) -> None:
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Every parameter off its default (biases, norm weights): a mapping mistake cannot hide behind zeros or ones."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)


def _reference(kind: str, folder: Path, seed: int = 0, **config):
    """A transformers Qwen2ForCausalLM / LlamaForCausalLM with random weights, saved into `folder`."""
    torch.manual_seed(seed)
    if kind == "qwen2":
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**{**SMALL, **config}))
    else:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**SMALL, **config}))
    _randomize(model, seed)
    model.eval().save_pretrained(str(folder))
    return model


def _full(model, ids: torch.Tensor) -> torch.Tensor:
    """transformers' logits with full (non-causal) attention: an all-True 4D mask."""
    t = ids.shape[1]
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones(1, 1, t, t, dtype=torch.bool)).logits


def _causal(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def _ids(n: int = 11, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (1, n), generator=torch.Generator().manual_seed(seed))


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@pytest.mark.parametrize("config", [
    {},  # Qwen2 defaults: untied head, GQA 4/2, qkv biases
    {"tie_word_embeddings": True, "num_key_value_heads": 4, "rope_theta": 1e6, "rms_norm_eps": 1e-5},
    {"num_key_value_heads": 1, "rope_scaling": {"rope_type": "linear", "factor": 4.0}},
], ids=["untied-gqa", "tied-mha-theta", "mqa-linear-rope"])
def test_qwen2_logits_equal_transformers_with_full_attention(tmp_path, config):
    ref = _reference("qwen2", tmp_path, **config)
    net = load_network(tmp_path, CPU, torch.float32)
    ids = _ids()
    with torch.no_grad():
        got = net(ids)
    assert _max_diff(got, _full(ref, ids)) < TOL
    assert _max_diff(got, _causal(ref, ids)) > 1e-2  # the native network is bidirectional, not causal


@pytest.mark.parametrize("config", [
    {},
    {"attention_bias": True, "rope_theta": 500000.0, "tie_word_embeddings": True},
    {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8}},
], ids=["plain", "bias-theta-tied", "llama3-rope"])
def test_llama_logits_equal_transformers_with_full_attention(tmp_path, config):
    ref = _reference("llama", tmp_path, **config)
    net = load_network(tmp_path, CPU, torch.float32)
    ids = _ids(n=24)  # longer than original_max_position_embeddings: the llama3 blend matters
    with torch.no_grad():
        got = net(ids)
    assert _max_diff(got, _full(ref, ids)) < TOL


def _llada_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' LLaMA names -> LLaDA's (modeling_llada.py: LLaDALlamaBlock, ff_proj is the gated half)."""
    renames = {"model.embed_tokens.": "model.transformer.wte.", "model.norm.": "model.transformer.ln_f.",
               "lm_head.": "model.transformer.ff_out.", "model.layers.": "model.transformer.blocks.",
               "self_attn.q_proj": "q_proj", "self_attn.k_proj": "k_proj", "self_attn.v_proj": "v_proj",
               "self_attn.o_proj": "attn_out", "mlp.gate_proj": "ff_proj", "mlp.up_proj": "up_proj",
               "mlp.down_proj": "ff_out", "input_layernorm": "attn_norm", "post_attention_layernorm": "ff_norm"}
    out = {}
    for k, v in sd.items():
        for a, b in renames.items():
            k = k.replace(a, b)
        out[k] = v.contiguous()
    return out


def _llada_config(**over) -> dict:
    """A LLaDA config.json as the published ones read (OLMo-style keys, its own code in auto_map), at tiny size."""
    cfg = {"architectures": ["LLaDAModelLM"], "model_type": "llada",
           "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig", "AutoModel": "modeling_llada.LLaDAModelLM",
                        "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM"},
           "activation_type": "silu", "alibi": False, "attention_layer_norm": False, "block_group_size": 1,
           "block_type": "llama", "d_model": 32, "embedding_size": VOCAB, "include_bias": False,
           "include_qkv_bias": False, "input_emb_norm": False, "layer_norm_type": "rms", "layer_norm_with_affine": True,
           "mask_token_id": 126336, "max_sequence_length": 256, "mlp_hidden_size": 48, "n_heads": 4, "n_kv_heads": 2,
           "n_layers": 2, "rms_norm_eps": 1e-5, "rope": True, "rope_theta": 500000.0, "scale_logits": False,
           "vocab_size": VOCAB, "weight_tying": False}
    return {**cfg, **over}


def _llada_folder(folder: Path, tok: Path | None = None, shards: bool = True):
    """A LLaMA reference's weights written under LLaDA's names and config (two shards and an index json)."""
    ref = _reference("llama", folder, seed=3, rms_norm_eps=1e-5, rope_theta=500000.0)
    for f in folder.iterdir():
        f.unlink()
    sd = _llada_names(ref.state_dict())
    (folder / "config.json").write_text(json.dumps(_llada_config()))
    if shards:
        keys = sorted(sd)
        halves = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
                  "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
        for name, part in halves.items():
            save_file({k: sd[k] for k in part}, str(folder / name), metadata={"format": "pt"})
        weight_map = {k: name for name, part in halves.items() for k in part}
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    else:
        save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    if tok is not None:
        _copy_tokenizer(tok, folder)
    return ref


def test_llada_weight_names_load_and_equal_llama(tmp_path):
    ref = _llada_folder(tmp_path)
    net = load_network(tmp_path, CPU, torch.float32)
    assert net.cfg.family == "llada" and net.head is not None
    ids = _ids(n=13)
    with torch.no_grad():
        assert _max_diff(net(ids), _full(ref, ids)) < TOL


def test_llada_logit_and_embedding_scales(tmp_path):
    """LLaDA's input_emb_norm and scale_logits options: embeddings × sqrt(D), logits × 1/sqrt(D)."""
    _llada_folder(tmp_path, shards=False)
    plain = load_network(tmp_path, CPU, torch.float32)
    (tmp_path / "config.json").write_text(json.dumps(_llada_config(scale_logits=True)))
    scaled = load_network(tmp_path, CPU, torch.float32)
    ids = _ids()
    with torch.no_grad():
        assert _max_diff(scaled(ids), plain(ids) / 32**0.5) < 1e-5
    (tmp_path / "config.json").write_text(json.dumps(_llada_config(input_emb_norm=True)))
    assert load_network(tmp_path, CPU, torch.float32).cfg.embed_scale == pytest.approx(32**0.5)


def _dream_folder(folder: Path, tok: Path, mask_id: int):
    """A Qwen2 reference saved as a Dream folder: model_type Dream, its own code in auto_map, a DreamTokenizer
    class named in tokenizer_config.json over vocab.json + merges.txt."""
    ref = _reference("qwen2", folder, seed=5, rope_theta=1e6)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(model_type="Dream", architectures=["DreamModel"], mask_token_id=mask_id,
               auto_map={"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"})
    (folder / "config.json").write_text(json.dumps(cfg))
    _copy_tokenizer(tok, folder)
    return ref


def _predict(backend: HFBackend, n_slots: int = 4):
    """One canvas step of a one-hole request through the backend, and the full sequence it ran."""
    seg = Segments([backend.encode("def add(a, b):\n    return "), backend.encode("\n\nprint(add(1, 2))\n")],
                   [[backend.mask_id] * n_slots])
    sess = backend.session(seg, False)
    canvas = torch.tensor([backend.mask_id, backend.encode("a")[0], backend.mask_id, backend.mask_id][:n_slots])
    got = sess.predict(canvas)
    ids = sess.ids.clone()
    ids[sess.slot_pos] = canvas
    return got, ids, sess.slot_pos


def test_dream_folder_needs_no_opt_in_and_reads_shifted(tmp_path, tok_files):
    ref = _dream_folder(tmp_path, tok_files["bpe"], tok_files["mask_id"])
    be = Engine.load(tmp_path, "cpu", trust_remote_code=False).backend
    assert be.native and be.shifted and be.style == "dream"
    assert be.mask_id == tok_files["mask_id"]
    text = "for i in range(3):\n    print(i)\n"
    assert be.decode(be.encode(text)) == text
    got, ids, slot_pos = _predict(be)
    want = _full(ref, ids[None])[0, slot_pos - 1]  # shifted: slot j read at j - 1
    assert _max_diff(got, want) < TOL
    assert _max_diff(got, _full(ref, ids[None])[0, slot_pos]) > 1e-2


def test_llada_folder_needs_no_opt_in_and_reads_unshifted(tmp_path, tok_files):
    ref = _llada_folder(tmp_path, tok_files["json"])
    be = Engine.load(tmp_path, "cpu", trust_remote_code=False).backend
    assert be.native and not be.shifted and be.style == "llada"
    assert be.mask_id == tok_files["mask_id"]  # the tokenizer's mask token first; 126336 only when it names none
    got, ids, slot_pos = _predict(be)
    assert _max_diff(got, _full(ref, ids[None])[0, slot_pos]) < TOL


def test_unknown_architecture_still_needs_the_opt_in(tmp_path, tok_files):
    _reference("qwen2", tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.update(model_type="mystery-diffusion", architectures=["MysteryLM"], auto_map={"AutoModel": "modeling_m.M"})
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    _copy_tokenizer(tok_files["json"], tmp_path)
    with pytest.raises(CheckpointError, match="trust-remote-code") as e:
        Engine.load(tmp_path, "cpu", style="dream")
    assert e.value.path.endswith("config.json")


def test_unsupported_variant_of_a_known_family_names_config(tmp_path):
    _reference("qwen2", tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0}
    with pytest.raises(CheckpointError, match="yarn") as e:
        family_config(cfg, tmp_path / "config.json")
    assert e.value.path.endswith("config.json")
    with pytest.raises(CheckpointError, match="block_type"):
        family_config(_llada_config(block_type="sequential"), tmp_path / "config.json")


def test_missing_shard_names_the_file(tmp_path):
    _llada_folder(tmp_path)
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="index.json") as e:
        load_network(tmp_path, CPU, torch.float32)
    assert e.value.path.endswith("model-00002-of-00002.safetensors")


def test_corrupt_weights_name_the_file(tmp_path):
    _reference("qwen2", tmp_path)
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a download cut in half
    with pytest.raises(CheckpointError, match="corrupt") as e:
        load_network(tmp_path, CPU, torch.float32)
    assert e.value.path == str(path)


def test_wrong_shape_names_the_file_and_tensor(tmp_path):
    _reference("qwen2", tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["intermediate_size"] = 64  # the config no longer matches the weights
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"mlp\.\w+_proj\.weight has shape") as e:
        load_network(tmp_path, CPU, torch.float32)
    assert e.value.path.endswith("model.safetensors")


def test_missing_tensor_is_named(tmp_path):
    _llada_folder(tmp_path, shards=False)
    from safetensors.torch import load_file

    sd = load_file(str(tmp_path / "model.safetensors"))
    del sd["model.transformer.blocks.1.up_proj.weight"]
    save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"blocks\.1\.up_proj\.weight"):
        load_network(tmp_path, CPU, torch.float32)


def test_native_network_holds_no_transformers_module(tmp_path):
    _reference("llama", tmp_path)
    net = load_network(tmp_path, CPU, torch.float32)
    assert isinstance(net, BidirectionalLM)
    assert not any(type(m).__module__.startswith("transformers") for m in net.modules())


def test_known_family_never_runs_the_code_it_ships(tmp_path, tok_files):
    """A Dream folder's auto_map and modeling file are ignored: the native network loads, their code never runs."""
    _dream_folder(tmp_path, tok_files["bpe"], tok_files["mask_id"])
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_evil.Evil", "AutoTokenizer": ["modeling_evil.Evil", None]}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")
    eng = Engine.load(tmp_path, "cpu")
    assert eng.backend.native and isinstance(eng.backend.model, BidirectionalLM)


@pytest.fixture(params=["dream", "llada"])
def native_backend(request, tmp_path, tok_files) -> HFBackend:
    if request.param == "dream":
        _dream_folder(tmp_path, tok_files["bpe"], tok_files["mask_id"])
    else:
        _llada_folder(tmp_path, tok_files["json"])
    return Engine.load(tmp_path, "cpu").backend


def _two_hole_segments(be: HFBackend, n: int = 6) -> Segments:
    pieces = ["def add(a, b):\n    return ", "\n\ndef sub(a, b):\n    return ", "\n\nprint(add(1, 2))\n"]
    return Segments([be.encode(p) for p in pieces], [[be.mask_id] * n, [be.mask_id] * n])


def test_dual_cache_step_equals_a_full_forward(native_backend):
    """Right after a refresh the cached step (active positions against the context's cached keys/values, read
    shifted or not) gives the full forward's logits."""
    be = native_backend
    be.cache_refresh = "block"
    seg = _two_hole_segments(be)
    cached, full = be.session(seg, True), be.session(seg, False)
    canvas = torch.tensor([be.mask_id] * 12)
    assert torch.equal(cached.predict(canvas), full.predict(canvas))  # the first step refreshes: a full forward
    assert _max_diff(cached.predict(canvas), full.predict(canvas)) < TOL  # the cached path, same canvas
    assert cached.refreshes == 1


def test_block_refresh_keeps_the_context_cache_until_a_block_is_committed(native_backend):
    be = native_backend
    be.cache_refresh = "block"
    sess = be.session(_two_hole_segments(be), True)
    canvas = torch.tensor([be.mask_id] * 12)
    sess.predict(canvas)
    kept = [(k.clone(), v.clone()) for k, v in sess.cache]
    token = be.encode("x")[0]
    for i in range(CACHE_BLOCK - 1):  # commits below a block: the context's keys/values stay as they were
        canvas[i] = token
        sess.predict(canvas)
    assert sess.refreshes == 1
    assert all(torch.equal(k, k0) and torch.equal(v, v0) for (k, v), (k0, v0) in zip(sess.cache, kept))
    canvas[CACHE_BLOCK - 1] = token
    got = sess.predict(canvas)  # a block committed: refreshed from a full forward of the current canvas
    assert sess.refreshes == 2
    assert torch.equal(got, be.session(_two_hole_segments(be), False).predict(canvas))


@pytest.mark.parametrize("rule", ["threshold", "one"])
def test_refresh_every_step_text_equals_recompute(native_backend, rule):
    be = native_backend
    be.cache_refresh = "step"
    pieces = ["def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"]
    opts = SampleOptions(rule=rule, max_tokens=12, threshold=0.3)
    a, b = sample(be, pieces, opts), sample(be, pieces, SampleOptions(rule=rule, max_tokens=12, threshold=0.3, cached=False))
    assert a.texts == b.texts and a.stats.forwards == b.stats.forwards
