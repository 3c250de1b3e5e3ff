"""Random EAGLE-1/2 and EAGLE-3 head checkpoints in the layouts their authors publish.

Each writer creates `config.json` plus `model.safetensors` (written with the `safetensors`
package) or `pytorch_model.bin` (written with `torch.save`), and returns the checkpoint as the
file holds it: `(config, tensors)` with tensors keyed by their stored names, floats as float32
after rounding to the stored dtype (so comparisons against a conversion can be exact).
Weights are random with std 1/sqrt(fan_in); RMSNorm weights are 1 + N(0, 0.1).
"""
from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np

DTYPES = ("fp32", "fp16", "bf16")


def target_dims(target_gguf: str | Path) -> dict:
    """hidden, vocab and n_layer of a target GGUF, as keyword arguments for the writers."""
    r = gguf.GGUFReader(target_gguf)
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    return {"hidden": int(r.fields[f"{arch}.embedding_length"].parts[-1][0]),
            "vocab": len(r.fields["tokenizer.ggml.tokens"].data),
            "n_layer": int(r.fields[f"{arch}.block_count"].parts[-1][0])}


def _bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns, round to nearest even."""
    u = x.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def _stored(x: np.ndarray, dtype: str) -> np.ndarray:
    """What a float32 array reads back as after storing it in dtype."""
    if dtype == "fp16":
        return x.astype(np.float16).astype(np.float32)
    if dtype == "bf16":
        return (_bf16_bits(x).astype(np.uint32) << 16).view(np.float32)
    return x.astype(np.float32)


def save(directory: Path, config: dict, tensors: dict[str, np.ndarray], fmt: str, dtype: str) -> dict[str, np.ndarray]:
    """Writes config.json and the weights; returns the tensors as stored (floats as float32)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {**config, "torch_dtype": {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[dtype]}
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    stored = {k: _stored(v, dtype) if v.dtype.kind == "f" else v for k, v in tensors.items()}
    if fmt == "safetensors":
        import safetensors

        raw = {}
        for k, v in tensors.items():
            if v.dtype.kind != "f":
                raw[k] = ("int64" if v.dtype == np.int64 else v.dtype.name, np.ascontiguousarray(v))
            elif dtype == "bf16":
                raw[k] = ("bfloat16", np.ascontiguousarray(_bf16_bits(v)))
            else:
                raw[k] = ({"fp32": "float32", "fp16": "float16"}[dtype],
                          np.ascontiguousarray(v.astype(np.float32 if dtype == "fp32" else np.float16)))
        specs = {k: safetensors.TensorSpec(dtype=dt, shape=a.shape, data_ptr=a.ctypes.data, data_len=a.nbytes)
                 for k, (dt, a) in raw.items()}
        safetensors.serialize_file(specs, directory / "model.safetensors", metadata={"format": "pt"})
    elif fmt == "bin":
        import torch

        tdtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
        state = {k: torch.from_numpy(np.ascontiguousarray(v)).to(tdtype) if v.dtype.kind == "f"
                 else torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}
        torch.save(state, directory / "pytorch_model.bin")
        stored = {k: t.float().numpy() if t.is_floating_point() else t.numpy() for k, t in state.items()}
    else:
        raise ValueError(f"unknown checkpoint format {fmt}")
    return stored


def _llama_config(hidden: int, vocab: int, n_head: int, n_head_kv: int, ff: int, rope_theta: float) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": hidden, "intermediate_size": ff, "num_attention_heads": n_head,
        "num_key_value_heads": n_head_kv, "num_hidden_layers": 1, "rms_norm_eps": 1e-5,
        "rope_theta": rope_theta, "rope_scaling": None, "max_position_embeddings": 2048,
        "vocab_size": vocab, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": None,
        "initializer_range": 0.02, "pretraining_tp": 1, "tie_word_embeddings": False,
        "use_cache": True, "transformers_version": "4.28.1",
    }


class _Rand:
    def __init__(self, seed: int):
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def mat(self, rows: int, cols: int, scale: float = 1.0) -> np.ndarray:
        return (self.rng.standard_normal((rows, cols)) * scale / np.sqrt(cols)).astype(np.float32)

    def embedding(self, vocab: int, hidden: int) -> np.ndarray:
        """std 1, like the target's; from its own stream (a head's first draw with the tiny targets'
        seed would otherwise equal their token_embd, which the converter drops as the target's)."""
        self.mat(vocab, hidden)  # keeps the draws of the other tensors as they were
        return np.random.default_rng([self.seed, 1]).standard_normal((vocab, hidden)).astype(np.float32)

    def vec(self, n: int, scale: float) -> np.ndarray:
        return (self.rng.standard_normal(n) * scale).astype(np.float32)

    def norm(self, n: int) -> np.ndarray:
        return (1.0 + 0.1 * self.rng.standard_normal(n)).astype(np.float32)


def write_eagle12(directory: str | Path, *, hidden: int, vocab: int, n_layer: int | None = None, n_head: int = 4,
                  n_head_kv: int = 2, ff: int = 128, fmt: str = "safetensors", dtype: str = "fp32",
                  fc_bias: bool = True, qkv_bias: bool = False, embed: bool = True, prefix: str = "",
                  draft_vocab: int | None = None, head_dim: int | None = None, rope_theta: float = 10000.0,
                  config_extra: dict | None = None, seed: int = 0,
                  layers: int = 1, copy_key: int = 0) -> tuple[dict, dict[str, np.ndarray]]:
    """An EAGLE-1/2 head (SafeAILab layout). draft_vocab adds a reduced LM head + d2t offsets,
    the layout pyeagle's own trainer uses. layers > 1: a head of several decoder layers (EAGLE-1's
    cnets.py; each later layer has an input_layernorm). copy_key > 0: pyeagle's copy input
    (copy_fc, copy_key_length). n_layer (the target's) is accepted and
    ignored, so that **target_dims(...) can be passed."""
    del n_layer
    r = _Rand(seed)
    d = head_dim or hidden // n_head
    cfg = _llama_config(hidden, vocab, n_head, n_head_kv, ff, rope_theta)
    if head_dim:
        cfg["head_dim"] = head_dim
    if not fc_bias:
        cfg["bias"] = False
    if qkv_bias:
        cfg["qkv_bias"] = True
    cfg["num_hidden_layers"] = layers
    if copy_key:
        cfg["copy_key_length"] = copy_key
    cfg.update(config_extra or {})

    t: dict[str, np.ndarray] = {}
    if embed:
        t["embed_tokens.weight"] = r.embedding(vocab, hidden)
    t["fc.weight"] = r.mat(hidden, 2 * hidden)
    if fc_bias:
        t["fc.bias"] = r.vec(hidden, 0.1)
    if copy_key:
        t["copy_fc.weight"] = r.mat(hidden, copy_key * hidden)
    for i in range(layers):
        L = f"layers.{i}."
        if i:
            t[L + "input_layernorm.weight"] = r.norm(hidden)
        a = L + "self_attn."
        t[a + "q_proj.weight"] = r.mat(n_head * d, hidden, 1.5)
        t[a + "k_proj.weight"] = r.mat(n_head_kv * d, hidden, 1.5)
        t[a + "v_proj.weight"] = r.mat(n_head_kv * d, hidden)
        if qkv_bias:
            t[a + "q_proj.bias"] = r.vec(n_head * d, 0.1)
            t[a + "k_proj.bias"] = r.vec(n_head_kv * d, 0.1)
            t[a + "v_proj.bias"] = r.vec(n_head_kv * d, 0.1)
        t[a + "o_proj.weight"] = r.mat(hidden, n_head * d)
        t[L + "post_attention_layernorm.weight"] = r.norm(hidden)
        t[L + "mlp.gate_proj.weight"] = r.mat(ff, hidden)
        t[L + "mlp.up_proj.weight"] = r.mat(ff, hidden)
        t[L + "mlp.down_proj.weight"] = r.mat(hidden, ff)
    if draft_vocab is not None:
        t["lm_head.weight"] = r.mat(draft_vocab, hidden, 3.0)
        t["d2t"] = _d2t_offsets(r.rng, draft_vocab, vocab)
    t = {prefix + k: v for k, v in t.items()}
    return cfg, save(Path(directory), cfg, t, fmt, dtype)


def _d2t_offsets(rng: np.random.Generator, draft_vocab: int, vocab: int) -> np.ndarray:
    """EAGLE-3's d2t: target id of draft id i is i + d2t[i]; draft ids cover a sorted subset."""
    used = np.sort(rng.choice(vocab, size=draft_vocab, replace=False)).astype(np.int64)
    return used - np.arange(draft_vocab, dtype=np.int64)


def write_eagle3(directory: str | Path, *, hidden: int, vocab: int, n_layer: int | None = None,
                 target_hidden: int | None = None, n_head: int = 4, n_head_kv: int = 2, ff: int = 128,
                 draft_vocab: int | None = 200, fmt: str = "safetensors", dtype: str = "fp32", embed: bool = False,
                 prefix: str = "", layers_name: str = "midlayer.", taps: list[int] | None = None,
                 t2d: bool = True, write_target_hidden: bool = False, head_dim: int | None = None,
                 rope_theta: float = 10000.0, config_extra: dict | None = None,
                 seed: int = 0) -> tuple[dict, dict[str, np.ndarray]]:
    """An EAGLE-3 head (SafeAILab layout; prefix="model." and layers_name="layers.0." give the
    variants other publishers use). draft_vocab=None: full vocabulary, no d2t/t2d. taps are written
    as eagle_aux_hidden_state_layer_ids; when None and n_layer is given, taps default to
    [0, n_layer // 2, n_layer] clipped so they fit tiny targets (the published default 2, N/2, N-3
    needs N >= 5)."""
    r = _Rand(seed)
    h_t = target_hidden or hidden
    d = head_dim or hidden // n_head
    cfg = _llama_config(hidden, vocab, n_head, n_head_kv, ff, rope_theta)
    if head_dim:
        cfg["head_dim"] = head_dim
    cfg["architectures"] = ["LlamaForCausalLMEagle3"]
    if draft_vocab is not None:
        cfg["draft_vocab_size"] = draft_vocab
    if write_target_hidden or h_t != hidden:
        cfg["target_hidden_size"] = h_t
    if taps is None and n_layer is not None and n_layer < 5:
        taps = [0, n_layer // 2, n_layer]
    if taps is not None:
        cfg["eagle_aux_hidden_state_layer_ids"] = list(taps)
    cfg.update(config_extra or {})

    t: dict[str, np.ndarray] = {}
    if embed:
        t["embed_tokens.weight"] = r.embedding(vocab, hidden)
    t["fc.weight"] = r.mat(hidden, 3 * h_t)
    m = layers_name
    t[m + "hidden_norm.weight"] = r.norm(hidden)
    t[m + "input_layernorm.weight"] = r.norm(hidden)
    t[m + "self_attn.q_proj.weight"] = r.mat(n_head * d, 2 * hidden, 1.5)
    t[m + "self_attn.k_proj.weight"] = r.mat(n_head_kv * d, 2 * hidden, 1.5)
    t[m + "self_attn.v_proj.weight"] = r.mat(n_head_kv * d, 2 * hidden)
    t[m + "self_attn.o_proj.weight"] = r.mat(hidden, n_head * d)
    t[m + "post_attention_layernorm.weight"] = r.norm(hidden)
    t[m + "mlp.gate_proj.weight"] = r.mat(ff, hidden)
    t[m + "mlp.up_proj.weight"] = r.mat(ff, hidden)
    t[m + "mlp.down_proj.weight"] = r.mat(hidden, ff)
    t["norm.weight"] = r.norm(hidden)
    n_out = draft_vocab if draft_vocab is not None else vocab
    t["lm_head.weight"] = r.mat(n_out, hidden, 3.0)
    if draft_vocab is not None:
        t["d2t"] = _d2t_offsets(r.rng, draft_vocab, vocab)
        if t2d:
            mask = np.zeros(vocab, dtype=np.bool_)
            mask[np.arange(draft_vocab) + t["d2t"]] = True
            t["t2d"] = mask
    t = {prefix + k: v for k, v in t.items()}
    return cfg, save(Path(directory), cfg, t, fmt, dtype)
