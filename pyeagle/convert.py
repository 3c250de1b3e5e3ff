#!/usr/bin/env python3
"""Converts an EAGLE-1/2 or EAGLE-3 draft head, as its authors publish it, to GGUF (docs/FORMAT.md).

    python -m pyeagle.convert CHECKPOINT_DIR --target TARGET.gguf --outfile HEAD.gguf [--outtype f16]
    (or python convert/eagle_to_gguf.py ...)

The checkpoint directory holds `config.json` and `model.safetensors` or `pytorch_model.bin` (or a
sharded `*.index.json` of either). Nothing in it is imported or executed: safetensors are parsed
here, `.bin` files go through `torch.load(weights_only=True)`. The head is checked against the
target GGUF (hidden size, vocabulary, layer count) and stamped with the target's fingerprint.

EAGLE-3 heads become llama.cpp's `eagle3` architecture (tokenizer copied from the target, as
llama.cpp's own converter does), so llama.cpp loads them unchanged; EAGLE-1/2 heads become
pyeagle's `eagle` architecture. Importable: `convert()`, `vocab_hash()`, `read_checkpoint()`.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import gguf
import numpy as np

try:
    from tqdm import tqdm
except ImportError:  # the progress bar is optional
    tqdm = None

logger = logging.getLogger("pyeagle.convert")

FORMAT_VERSION = 1
OUTTYPES = ("f32", "f16", "q8_0", "q5_0", "q4_0")
# config.json key (pyeagle's own) for the tree's calibration by depth, and its GGUF key
# (docs/FORMAT.md, "Tree calibration")
DEPTH_POWER_KEY = "pyeagle_depth_power"
DEPTH_POWER_GGUF_KEY = "pyeagle.tree.depth_power"


def depth_powers_ok(powers) -> bool:
    """At most 64 numbers in [0.1, 10] (the runtime refuses others)."""
    return isinstance(powers, (list, tuple)) and len(powers) <= 64 and all(
        isinstance(a, (int, float)) and not isinstance(a, bool) and 0.1 <= a <= 10 for a in powers)


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message names the file and the reason."""


# --------------------------------------------------------------------------------------------
# Tensor tables. Checkpoint names are taken after prefix normalisation (see canonical_names).
# Shapes are NumPy shapes (rows, cols) in symbolic dims:
#   h  head hidden size          q  n_head * head_dim       kv  n_head_kv * head_dim
#   ff intermediate size         V  target vocabulary       Vd  draft vocabulary
#   x  fc input width (2h for EAGLE-1/2: concat(embedding, feature); 3*h_t for EAGLE-3 taps)
#   a  attention input width (h for EAGLE-1/2; 2h for EAGLE-3: concat(norm(emb), norm(hidden)))
#   c  copy input width (pyeagle's copy-input EAGLE-1/2 head: copy_key_length * h; docs/FORMAT.md)
# --------------------------------------------------------------------------------------------
EAGLE12_TENSORS: dict[str, tuple[str, tuple[str, ...]]] = {
    "embed_tokens.weight":                      ("token_embd.weight",        ("V", "h")),
    "fc.weight":                                ("fc.weight",                ("h", "x")),
    "fc.bias":                                  ("fc.bias",                  ("h",)),
    "copy_fc.weight":                           ("copy_fc.weight",           ("h", "c")),
    "layers.0.self_attn.q_proj.weight":         ("blk.0.attn_q.weight",      ("q", "a")),
    "layers.0.self_attn.k_proj.weight":         ("blk.0.attn_k.weight",      ("kv", "a")),
    "layers.0.self_attn.v_proj.weight":         ("blk.0.attn_v.weight",      ("kv", "a")),
    "layers.0.self_attn.q_proj.bias":           ("blk.0.attn_q.bias",        ("q",)),
    "layers.0.self_attn.k_proj.bias":           ("blk.0.attn_k.bias",        ("kv",)),
    "layers.0.self_attn.v_proj.bias":           ("blk.0.attn_v.bias",        ("kv",)),
    "layers.0.self_attn.o_proj.weight":         ("blk.0.attn_output.weight", ("h", "q")),
    "layers.0.post_attention_layernorm.weight": ("blk.0.ffn_norm.weight",    ("h",)),
    "layers.0.mlp.gate_proj.weight":            ("blk.0.ffn_gate.weight",    ("ff", "h")),
    "layers.0.mlp.up_proj.weight":              ("blk.0.ffn_up.weight",      ("ff", "h")),
    "layers.0.mlp.down_proj.weight":            ("blk.0.ffn_down.weight",    ("h", "ff")),
    "lm_head.weight":                           ("output.weight",            ("Vd", "h")),
    "d2t":                                      ("d2t",                      ("Vd",)),
}


def gguf_tensor_name(name: str) -> str:
    """GGUF name of an EAGLE-1/2 checkpoint tensor; `layers.i.*` of a head with several layers
    (EAGLE-1's cnets.py) become `blk.i.*`, their input_layernorm `blk.i.attn_norm.weight`."""
    if name.startswith("layers."):
        _, i, rest = name.split(".", 2)
        if rest == "input_layernorm.weight":
            return f"blk.{i}.attn_norm.weight"
        return f"blk.{i}." + EAGLE12_TENSORS["layers.0." + rest][0].split(".", 2)[2]
    return EAGLE12_TENSORS[name][0]


EAGLE3_TENSORS: dict[str, tuple[str, tuple[str, ...]]] = {
    "embed_tokens.weight":                      ("token_embd.weight",        ("V", "h")),
    "fc.weight":                                ("fc.weight",                ("h", "x")),
    "midlayer.input_layernorm.weight":          ("blk.0.attn_norm.weight",   ("h",)),
    "midlayer.hidden_norm.weight":              ("blk.0.attn_norm_2.weight", ("h",)),
    "midlayer.self_attn.q_proj.weight":         ("blk.0.attn_q.weight",      ("q", "a")),
    "midlayer.self_attn.k_proj.weight":         ("blk.0.attn_k.weight",      ("kv", "a")),
    "midlayer.self_attn.v_proj.weight":         ("blk.0.attn_v.weight",      ("kv", "a")),
    "midlayer.self_attn.o_proj.weight":         ("blk.0.attn_output.weight", ("h", "q")),
    "midlayer.post_attention_layernorm.weight": ("blk.0.ffn_norm.weight",    ("h",)),
    "midlayer.mlp.gate_proj.weight":            ("blk.0.ffn_gate.weight",    ("ff", "h")),
    "midlayer.mlp.up_proj.weight":              ("blk.0.ffn_up.weight",      ("ff", "h")),
    "midlayer.mlp.down_proj.weight":            ("blk.0.ffn_down.weight",    ("h", "ff")),
    "norm.weight":                              ("output_norm.weight",       ("h",)),
    "lm_head.weight":                           ("output.weight",            ("Vd", "h")),
    "d2t":                                      ("d2t",                      ("Vd",)),
}

# Present in some checkpoints, carry nothing the forward needs: t2d is EAGLE-3's training-only
# target->draft mask; rotary_emb.inv_freq is derived from rope_theta (old transformers saved it).
IGNORED_TENSORS = ("t2d",)
IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)

# q/k rows are permuted so that llama.cpp's RoPE NORM mode (adjacent pairs) equals HF's rotate-half.
PERMUTED_Q = ("q_proj.weight", "q_proj.bias")
PERMUTED_K = ("k_proj.weight", "k_proj.bias")


# --------------------------------------------------------------------------------------------
# Checkpoint reading
# --------------------------------------------------------------------------------------------
@dataclass
class CkptTensor:
    """One checkpoint tensor, read on demand: floats come back as float32, integers as int64."""
    shape: tuple[int, ...]
    dtype: str                            # safetensors dtype name: F32 F16 BF16 I64 BOOL ...
    file: Path
    load: Callable[[], np.ndarray]


@dataclass
class Checkpoint:
    dir: Path
    config: dict
    tensors: dict[str, CkptTensor]        # names as stored in the file(s)
    files: list[Path]


_ST_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?",
}
_FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")


def _to_standard(raw: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "BF16":  # bf16 is the top half of an f32
        return (raw.astype(np.uint32) << 16).view(np.float32)
    if dtype in _FLOAT_DTYPES:
        return raw.astype(np.float32)
    return raw.astype(np.int64)


def read_safetensors(path: Path) -> dict[str, CkptTensor]:
    """Parses a safetensors file: u64 LE header length, JSON header, then raw little-endian data."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ConversionError(f"{path}: not a safetensors file (only {size} bytes)")
        n_header = int.from_bytes(prefix, "little")
        if n_header > size - 8 or n_header > 100 << 20:
            raise ConversionError(f"{path}: not a safetensors file (header length {n_header} > file size {size})")
        try:
            header = json.loads(f.read(n_header))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConversionError(f"{path}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise ConversionError(f"{path}: corrupt safetensors header (not a JSON object)")
    n_data = size - 8 - n_header
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n_header) if n_data > 0 else np.zeros(0, np.uint8)

    out: dict[str, CkptTensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape = info["dtype"], tuple(int(d) for d in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ConversionError(f"{path}: corrupt safetensors header entry for {name!r}") from None
        if dtype not in _ST_DTYPES:
            raise ConversionError(f"{path}: tensor {name}: unsupported dtype {dtype}")
        np_dtype = np.dtype(_ST_DTYPES[dtype])
        if not 0 <= begin <= end <= n_data or end - begin != math.prod(shape) * np_dtype.itemsize:
            raise ConversionError(f"{path}: tensor {name}: data offsets {begin}..{end} do not fit shape {shape} {dtype}")

        def load(begin=begin, end=end, np_dtype=np_dtype, shape=shape, dtype=dtype) -> np.ndarray:
            return _to_standard(data[begin:end].view(np_dtype).reshape(shape), dtype)

        out[name] = CkptTensor(shape, dtype, path, load)
    return out


def read_torch_bin(path: Path) -> dict[str, CkptTensor]:
    """Reads a PyTorch pickle through torch's weights-only unpickler (never runs pickled code)."""
    try:
        import torch
    except ImportError:
        raise ConversionError(f"{path}: reading .bin checkpoints needs torch (pip install torch), "
                              "or convert the head to safetensors first") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for refused globals, RuntimeError for corrupt files
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
        reason = next((line.split("error: ", 1)[1].split(". ")[0] for line in lines if "Unpickler error: " in line),
                      lines[0])
        raise ConversionError(f"{path}: refused by torch.load(weights_only=True), which loads plain tensors "
                              f"only: {reason}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{path}: not a state dict of tensors")
    names = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
             torch.uint8: "U8", torch.bool: "BOOL"}
    out: dict[str, CkptTensor] = {}
    for name, t in state.items():
        if t.dtype not in names:
            raise ConversionError(f"{path}: tensor {name}: unsupported dtype {t.dtype}")
        dtype = names[t.dtype]

        def load(t=t, dtype=dtype) -> np.ndarray:
            if dtype == "BF16":
                return t.float().numpy()
            return _to_standard(t.numpy(), dtype)

        out[name] = CkptTensor(tuple(t.shape), dtype, path, load)
    return out


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def read_checkpoint(checkpoint_dir: str | os.PathLike) -> Checkpoint:
    """config.json + the weights (safetensors preferred); tensors are loaded lazily."""
    d = Path(checkpoint_dir)
    if not d.is_dir():
        raise ConversionError(f"{d}: not a directory")
    config_path = d / "config.json"
    if not config_path.is_file():
        raise ConversionError(f"{config_path}: missing (a head checkpoint needs its config.json)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConversionError(f"{config_path}: invalid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ConversionError(f"{config_path}: not a JSON object")

    weights = next((d / n for n in WEIGHT_FILES if (d / n).is_file()), None)
    if weights is None:
        raise ConversionError(f"{d}: no weights file (looked for {', '.join(WEIGHT_FILES)})")
    if weights.name.endswith(".index.json"):
        try:
            weight_map = json.loads(weights.read_text(encoding="utf-8"))["weight_map"]
            files = sorted({d / str(f) for f in weight_map.values()})
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise ConversionError(f"{weights}: invalid shard index ({e})") from None
        for f in files:
            if f.resolve().parent != d.resolve() or not f.is_file():
                raise ConversionError(f"{weights}: shard {f.name} is missing or outside {d}")
    else:
        files = [weights]

    tensors: dict[str, CkptTensor] = {}
    for f in files:
        part = read_safetensors(f) if f.name.endswith(".safetensors") else read_torch_bin(f)
        for name in part.keys() & tensors.keys():
            raise ConversionError(f"{f}: tensor {name} also in {tensors[name].file.name}")
        tensors.update(part)
    return Checkpoint(d, config, tensors, files)


# --------------------------------------------------------------------------------------------
# Target model
# --------------------------------------------------------------------------------------------
def vocab_hash(tokens: Sequence[bytes]) -> str:
    """64-bit FNV-1a over the token strings in id order, each followed by one NUL byte; 16 hex digits."""
    h = 0xCBF29CE484222325
    prime, mask = 0x100000001B3, 0xFFFFFFFFFFFFFFFF
    for tok in tokens:
        for b in tok:
            h = ((h ^ b) * prime) & mask
        h = (h * prime) & mask  # the NUL terminator: h ^ 0 == h
    return f"{h:016x}"


@dataclass
class TargetInfo:
    path: Path
    arch: str
    n_embd: int
    n_layer: int
    tokens: list[bytes]
    tokenizer_kv: list[tuple[str, object, gguf.GGUFValueType, gguf.GGUFValueType | None]] = field(repr=False)

    @property
    def n_vocab(self) -> int:
        return len(self.tokens)


def _field_value(f) -> object:
    """A GGUFReader field as Python values; strings stay bytes so that they copy exactly."""
    main = f.types[0]
    if main == gguf.GGUFValueType.ARRAY:
        if f.types[-1] == gguf.GGUFValueType.STRING:
            return [bytes(f.parts[i]) for i in f.data]
        return f.contents()
    if main == gguf.GGUFValueType.STRING:
        return bytes(f.parts[-1])
    return f.contents()


def read_target(target_gguf: str | os.PathLike) -> TargetInfo:
    path = Path(target_gguf)
    if not path.is_file():
        raise ConversionError(f"{path}: target GGUF not found")
    try:
        reader = gguf.GGUFReader(path)
    except Exception as e:  # GGUFReader raises ValueError/struct errors on non-GGUF input
        raise ConversionError(f"{path}: not a readable GGUF file ({e})") from None

    def get(key: str, required: bool = True):
        f = reader.fields.get(key)
        if f is None:
            if required:
                raise ConversionError(f"{path}: target GGUF lacks {key}")
            return None
        return _field_value(f)

    arch = get("general.architecture").decode()
    tokenizer_kv = [(k, _field_value(f), f.types[0], f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None)
                    for k, f in reader.fields.items() if k.startswith("tokenizer.")]
    return TargetInfo(path=path, arch=arch, n_embd=int(get(f"{arch}.embedding_length")),
                      n_layer=int(get(f"{arch}.block_count")), tokens=list(get("tokenizer.ggml.tokens")),
                      tokenizer_kv=tokenizer_kv)


# --------------------------------------------------------------------------------------------
# Head description
# --------------------------------------------------------------------------------------------
@dataclass
class HeadParams:
    kind: str                  # "eagle" (EAGLE-1/2) | "eagle3"
    n_layer: int               # decoder layers (EAGLE-1's cnets.py takes several; EAGLE-3: 1)
    n_embd: int                # h
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    eps: float
    rope_theta: float
    n_ctx: int
    n_vocab: int               # V, the target's
    n_vocab_draft: int         # Vd
    fc_bias: bool
    qkv_bias: bool
    rope_scaling: dict | None  # {"type": "linear"|"llama3"|"yarn", ...} or None
    target_hidden: int         # h_t
    taps: list[int] = field(default_factory=list)      # EAGLE-3: tapped target layers (inputs of)
    norm_before_residual: bool = False
    copy_key: int = 0          # copy-input head: the longest context a copy matches (0: no copy input)
    depth_power: tuple[float, ...] = ()  # tree calibration by depth (pyeagle.tree.depth_power; () : none)

    def dims(self) -> dict[str, int]:
        h = self.n_embd
        x = 3 * self.target_hidden if self.kind == "eagle3" else 2 * h
        a = 2 * h if self.kind == "eagle3" else h
        return {"h": h, "q": self.n_head * self.head_dim, "kv": self.n_head_kv * self.head_dim, "ff": self.n_ff,
                "V": self.n_vocab, "Vd": self.n_vocab_draft, "x": x, "a": a, "c": self.copy_key * h}


def merged_config(config: dict) -> dict:
    """config.json with speculators' nested transformer_layer_config lifted to the top level."""
    nested = config.get("transformer_layer_config")
    return {**config, **nested} if isinstance(nested, dict) else dict(config)


def canonical_names(names: Sequence[str], kind: str, source: Path) -> dict[str, str]:
    """canonical name -> stored name. Accepts the `model.` prefix and, for EAGLE-3, `layers.0.`
    for `midlayer.` (speculators / SpecForge exports)."""
    out: dict[str, str] = {}
    for stored in names:
        name = stored[len("model."):] if stored.startswith("model.") else stored
        if kind == "eagle3" and name.startswith("layers.0."):
            name = "midlayer." + name[len("layers.0."):]
        if name in out:
            raise ConversionError(f"{source}: tensors {out[name]} and {stored} are the same tensor {name}")
        out[name] = stored
    return out


def detect_kind(config: dict, names: Sequence[str], shapes: dict[str, tuple[int, ...]]) -> str:
    """EAGLE-3 if it has a midlayer or its attention reads 2h wide (concat of two normed inputs);
    EAGLE-1/2 if attention reads h wide. Otherwise fall back to EAGLE-3 markers (d2t,
    draft_vocab_size, fc width 3*h_t). A reduced-vocabulary EAGLE-1/2 head (lm_head + d2t) is thus
    still EAGLE-1/2."""
    stripped = {n[len("model."):] if n.startswith("model.") else n: shapes[n] for n in names}
    if any(n.startswith("midlayer.") for n in stripped):
        return "eagle3"
    h = config.get("hidden_size")
    q = stripped.get("layers.0.self_attn.q_proj.weight")
    if isinstance(h, int) and q is not None and len(q) == 2:
        if q[1] == 2 * h:
            return "eagle3"
        if q[1] == h:
            return "eagle"
    fc = stripped.get("fc.weight")
    h_t = config.get("target_hidden_size") or h
    if "d2t" in stripped or "draft_vocab_size" in config or (fc is not None and isinstance(h_t, int) and fc[-1] == 3 * h_t):
        return "eagle3"
    return "eagle"


def _number(cfg: dict, key: str, default: float | int, lo: float, hi: float, source: Path, integer: bool = False):
    """cfg[key] (default when absent or null), checked: a number (an integer if asked) in [lo, hi]."""
    v = cfg.get(key)
    if v is None:
        return default
    kind = int if integer else (int, float)
    if isinstance(v, bool) or not isinstance(v, kind) or (isinstance(v, float) and not math.isfinite(v)) \
            or not lo <= v <= hi:
        raise ConversionError(f"{source}: {key} is {v!r}, expected {'an integer' if integer else 'a number'} "
                              f"in [{lo:g}, {hi:g}]")
    return v


def _rope_scaling(config: dict, source: Path) -> dict | None:
    """The config's rope_scaling (HF spells its kind `rope_type` or `type`) as the runtime runs it;
    anything it cannot run is refused here, with the reason."""
    rs = config.get("rope_scaling")
    if not rs:
        return None
    if not isinstance(rs, dict):
        raise ConversionError(f"{source}: rope_scaling is {rs!r}, expected an object")
    kind = rs.get("rope_type", rs.get("type"))
    if kind in (None, "default"):
        return None
    def num(key: str, default: float, lo: float = 1e-6, hi: float = 1e6) -> float:
        return float(_number(rs, key, default, lo, hi, source))

    if kind == "linear":
        if "factor" not in rs:
            raise ConversionError(f"{source}: linear rope_scaling without a factor")
        return {"type": "linear", "factor": num("factor", 1.0, 1.0, 1024.0)}
    if kind == "llama3":
        out = {"type": "llama3", "factor": num("factor", 8.0, 1.0, 1024.0),
               "low_freq_factor": num("low_freq_factor", 1.0), "high_freq_factor": num("high_freq_factor", 4.0),
               "original_max_position_embeddings": int(_number(rs, "original_max_position_embeddings", 8192, 1,
                                                               2 ** 31 - 1, source, integer=True))}
        if out["high_freq_factor"] <= out["low_freq_factor"]:
            raise ConversionError(f"{source}: llama3 rope_scaling needs high_freq_factor > low_freq_factor")
        return out
    if kind == "yarn":
        if rs.get("mscale") or rs.get("mscale_all_dim") or rs.get("truncate") is False:
            raise ConversionError(f"{source}: yarn rope_scaling with mscale / mscale_all_dim / truncate=false "
                                  "(DeepSeek-style) is not supported")
        factor = rs.get("factor")
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 1.0 <= factor <= 1024.0:
            raise ConversionError(f"{source}: yarn rope_scaling needs a factor in [1, 1024], got {factor!r}")
        factor = float(factor)
        # ggml's yarn multiplies cos/sin by 1 + 0.1 ln(factor) itself (HF's default attention_factor);
        # an explicit attention_factor is passed as the ratio to that
        attn = rs.get("attention_factor")
        n_orig = rs.get("original_max_position_embeddings") or config.get("max_position_embeddings") or 2048
        n_orig = _number({"original_max_position_embeddings": n_orig}, "original_max_position_embeddings", 2048, 1,
                         2 ** 31 - 1, source, integer=True)
        return {"type": "yarn", "factor": factor, "original_max_position_embeddings": int(n_orig),
                "beta_fast": num("beta_fast", 32.0) if rs.get("beta_fast") else 32.0,
                "beta_slow": num("beta_slow", 1.0) if rs.get("beta_slow") else 1.0,
                "attn_factor": 1.0 if attn is None else num("attention_factor", 1.0) / (1.0 + 0.1 * math.log(factor))}
    raise ConversionError(f"{source}: rope_scaling type {kind!r} is not supported (linear, llama3 and yarn are)")


def llama3_rope_factors(head_dim: int, theta: float, rs: dict) -> np.ndarray:
    """llama.cpp's rope_freqs for llama3 scaling: RoPE divides each pair's frequency by its factor."""
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * math.pi / inv_freq
    lo_wl = rs["original_max_position_embeddings"] / rs["low_freq_factor"]
    hi_wl = rs["original_max_position_embeddings"] / rs["high_freq_factor"]
    smooth = (rs["original_max_position_embeddings"] / wavelen - rs["low_freq_factor"]) / \
        (rs["high_freq_factor"] - rs["low_freq_factor"])
    mid = 1.0 / ((1.0 - smooth) / rs["factor"] + smooth)
    return np.where(wavelen < hi_wl, 1.0, np.where(wavelen > lo_wl, rs["factor"], mid)).astype(np.float32)


def head_params(ckpt: Checkpoint, kind: str, names: dict[str, str], target: TargetInfo) -> HeadParams:
    """Reads the config, checks it against the target; raises ConversionError on any mismatch."""
    src = ckpt.dir / "config.json"
    cfg = merged_config(ckpt.config)

    def need(key: str) -> int:
        v = cfg.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ConversionError(f"{src}: {key} missing or not a positive integer")
        return v

    def integer(key: str, default: int, lo: int = 1, hi: int = 2 ** 31 - 1) -> int:
        return int(_number(cfg, key, default, lo, hi, src, integer=True))

    h, n_ff, n_head = need("hidden_size"), need("intermediate_size"), need("num_attention_heads")
    if max(h, n_ff) > 1 << 20 or n_head > 1024:
        raise ConversionError(f"{src}: sizes out of range: hidden_size {h}, intermediate_size {n_ff}, "
                              f"num_attention_heads {n_head}")
    n_head_kv = integer("num_key_value_heads", n_head, 1, n_head) if cfg.get("num_key_value_heads") else n_head
    head_dim = integer("head_dim", h // n_head, 2, 1024) if cfg.get("head_dim") else h // n_head
    if n_head % n_head_kv or head_dim % 2 or head_dim < 2:
        raise ConversionError(f"{src}: num_attention_heads {n_head} / num_key_value_heads {n_head_kv} / "
                              f"head_dim {head_dim} are not a valid grouped-query layout")
    n_layer = integer("num_hidden_layers", 1, 1, 64) if cfg.get("num_hidden_layers") is not None else 1
    if kind == "eagle3" and n_layer != 1:
        raise ConversionError(f"{src}: num_hidden_layers is {n_layer}, an EAGLE-3 head has 1 (midlayer)")
    if cfg.get("hidden_act", "silu") != "silu":
        raise ConversionError(f"{src}: hidden_act {cfg['hidden_act']!r} is not supported (SwiGLU with silu only)")
    if cfg.get("norm_before_fc"):
        raise ConversionError(f"{src}: norm_before_fc heads are not supported")

    V = target.n_vocab
    if cfg.get("vocab_size") not in (None, V):
        raise ConversionError(f"{src}: head vocab_size {cfg['vocab_size']} != target vocabulary {V} "
                              f"({target.path.name}): the head belongs to another target")
    h_t = (integer("target_hidden_size", h) if cfg.get("target_hidden_size") else h) if kind == "eagle3" else h
    if h_t != target.n_embd:
        what = "target_hidden_size" if kind == "eagle3" and cfg.get("target_hidden_size") else "hidden_size"
        raise ConversionError(f"{src}: head {what} {h_t} != target n_embd {target.n_embd} "
                              f"({target.path.name}): the head belongs to another target")
    if "embed_tokens.weight" not in names and h != target.n_embd:
        raise ConversionError(f"{src}: head hidden_size {h} != target n_embd {target.n_embd} and the head has "
                              "no embed_tokens of its own, so the target's embeddings cannot feed it")

    lm_head = ckpt.tensors.get(names.get("lm_head.weight", ""))
    n_vocab_draft = (integer("draft_vocab_size", V, 1, V) if cfg.get("draft_vocab_size")
                     else (lm_head.shape[0] if lm_head is not None else V))

    taps: list[int] = []
    if kind == "eagle3":
        N = target.n_layer
        taps = cfg.get("eagle_aux_hidden_state_layer_ids") or [2, N // 2, N - 3]
        if not isinstance(taps, list) or len(taps) != 3 or \
                not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= N for t in taps):
            raise ConversionError(f"{src}: EAGLE-3 tap layers {taps} do not fit the target's {N} layers "
                                  f"({target.path.name}); need 3 layer ids in 0..{N} "
                                  "(set eagle_aux_hidden_state_layer_ids)")

    copy_key = integer("copy_key_length", 0, 0, 16) if cfg.get("copy_key_length") else 0
    if copy_key and kind != "eagle":
        raise ConversionError(f"{src}: copy_key_length: a copy input is an EAGLE-1/2 head's")

    depth_power = cfg.get(DEPTH_POWER_KEY) or []
    if not depth_powers_ok(depth_power):
        raise ConversionError(f"{src}: {DEPTH_POWER_KEY} must be a list of at most 64 numbers in [0.1, 10]")

    return HeadParams(
        kind=kind, n_layer=n_layer, n_embd=h, n_ff=n_ff, n_head=n_head, n_head_kv=n_head_kv, head_dim=head_dim,
        eps=float(_number(cfg, "rms_norm_eps", 1e-6, 0.0, 0.5, src)),
        rope_theta=float(_number(cfg, "rope_theta", 10000.0, 1e-3, 1e12, src)),
        n_ctx=integer("max_position_embeddings", 2048), n_vocab=V, n_vocab_draft=n_vocab_draft,
        fc_bias=kind == "eagle" and bool(cfg.get("bias", True)),
        qkv_bias=kind == "eagle" and bool(cfg.get("qkv_bias", False)),
        rope_scaling=_rope_scaling(cfg, src), target_hidden=h_t, taps=taps,
        norm_before_residual=bool(cfg.get("norm_before_residual", False)), copy_key=copy_key,
        depth_power=tuple(float(a) for a in depth_power))


def expected_tensors(p: HeadParams, present: set[str]) -> tuple[dict[str, tuple[str, tuple[str, ...]]], set[str]]:
    """(the table rows this head uses, the ones of them it must have)."""
    table = EAGLE3_TENSORS if p.kind == "eagle3" else EAGLE12_TENSORS
    rows = dict(table)
    if p.kind == "eagle":
        # layers after the first (EAGLE-1's cnets.py) also normalise their input
        for i in range(1, p.n_layer):
            for name, (_, sym) in table.items():
                if name.startswith("layers.0."):
                    later = f"layers.{i}." + name[len("layers.0."):]
                    rows[later] = (gguf_tensor_name(later), sym)
            rows[f"layers.{i}.input_layernorm.weight"] = (f"blk.{i}.attn_norm.weight", ("h",))
        if not p.fc_bias:
            del rows["fc.bias"]
        if not p.copy_key:
            del rows["copy_fc.weight"]
        if not p.qkv_bias:
            for i in range(p.n_layer):
                for n in ("q", "k", "v"):
                    del rows[f"layers.{i}.self_attn.{n}_proj.bias"]
    optional = {"embed_tokens.weight", "d2t"}
    if p.kind == "eagle":
        optional.add("lm_head.weight")
    required = set(rows) - optional
    if p.n_vocab_draft != p.n_vocab:
        required.add("d2t")
    if "d2t" in present:
        required.add("lm_head.weight")
    return rows, required


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF rotate-half rows -> llama.cpp NORM-mode rows within each head (llama.cpp's LlamaModel.permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of permute_rows: llama.cpp NORM-mode rows back to HF rotate-half rows."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------
@dataclass
class PlannedTensor:
    name: str                                  # GGUF name
    source: str                                # checkpoint name as stored
    shape: tuple[int, ...]
    qtype: gguf.GGMLQuantizationType
    make: Callable[[], np.ndarray]             # the converted data, ready to write


def _out_type(shape: tuple[int, ...], outtype: str) -> gguf.GGMLQuantizationType:
    T = gguf.GGMLQuantizationType
    if len(shape) != 2 or outtype == "f32":
        return T.F32
    q = {"q8_0": T.Q8_0, "q5_0": T.Q5_0, "q4_0": T.Q4_0}.get(outtype)
    if q is not None and shape[1] % gguf.GGML_QUANT_SIZES[q][0] == 0:
        return q
    return T.F16


def _encode(data: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    T = gguf.GGMLQuantizationType
    if qtype == T.F32:
        return np.ascontiguousarray(data, dtype=np.float32)
    if qtype == T.F16:
        return np.ascontiguousarray(data, dtype=np.float16)
    return gguf.quants.quantize(np.ascontiguousarray(data, dtype=np.float32), qtype)


def _nbytes(shape: tuple[int, ...], qtype: gguf.GGMLQuantizationType) -> int:
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return math.prod(shape) // block * size


def embedding_difference(emb: np.ndarray, target_gguf: Path, chunk: int = 8192) -> tuple[float, float] | None:
    """(relative RMS difference between a head's embedding [V, h] and the target's token_embd
    (dequantized, in row chunks), the largest difference that still means "the same") or None when
    the target's has another shape."""
    te = next((t for t in gguf.GGUFReader(target_gguf).tensors if t.name == "token_embd.weight"), None)
    if te is None or tuple(int(x) for x in reversed(te.shape)) != emb.shape:
        return None
    T = gguf.GGMLQuantizationType
    same = SAME_EMBEDDING_FLOAT if te.tensor_type in (T.F32, T.F16, T.BF16) else SAME_EMBEDDING_QUANTIZED
    err = ref = 0.0
    for i in range(0, emb.shape[0], chunk):
        b = gguf.quants.dequantize(te.data[i:i + chunk], te.tensor_type).reshape(-1, emb.shape[1]).astype(np.float64)
        a = emb[i:i + chunk].astype(np.float64)
        err += float(np.sum((a - b) ** 2))
        ref += float(np.sum(b ** 2))
    return math.sqrt(err / max(ref, 1e-30)), same


# A head's embed_tokens within this relative RMS of the target's token_embd is the target's
# (EAGLE trainers freeze a copy of it): not written. The difference a frozen copy shows is the
# target's own rounding: ~0.4% for 16-bit, up to ~12% for 4-bit quantization.
SAME_EMBEDDING_FLOAT, SAME_EMBEDDING_QUANTIZED = 0.01, 0.15


def plan(ckpt: Checkpoint, target: TargetInfo, outtype: str,
         keep_embedding: bool = False) -> tuple[HeadParams, list[PlannedTensor]]:
    """Validates the checkpoint against the tables and the target; nothing is written yet."""
    files = ", ".join(f.name for f in ckpt.files)
    where = ckpt.dir / files if len(ckpt.files) == 1 else ckpt.dir
    stored = list(ckpt.tensors)
    kind = detect_kind(merged_config(ckpt.config), stored, {n: t.shape for n, t in ckpt.tensors.items()})
    names = canonical_names(stored, kind, where)
    p = head_params(ckpt, kind, names, target)
    rows, required = expected_tensors(p, set(names))

    ignored = {n for n in names if n in IGNORED_TENSORS or n.endswith(IGNORED_SUFFIXES)}
    unexpected = sorted(names[n] for n in names if n not in rows and n not in ignored)
    if unexpected:
        hint = ""
        if p.kind == "eagle" and any(n.endswith("fc.bias") for n in unexpected):
            hint = " (config.json says \"bias\": false)"
        elif p.kind == "eagle" and any(n.endswith("_proj.bias") for n in unexpected):
            hint = " (config.json does not set \"qkv_bias\": true)"
        raise ConversionError(f"{where}: unexpected tensors in this {kind} head{hint}: {', '.join(unexpected)}")
    missing = sorted(n for n in required if n not in names)
    if missing:
        raise ConversionError(f"{where}: missing tensors for this {kind} head: {', '.join(missing)}")

    dims = p.dims()
    planned: list[PlannedTensor] = []
    for canon, (gguf_name, sym) in rows.items():
        if canon not in names:
            continue
        t = ckpt.tensors[names[canon]]
        want = tuple(dims[s] for s in sym)
        if t.shape != want:
            raise ConversionError(f"{where}: tensor {names[canon]}: expected shape ({', '.join(sym)}) = {want}, "
                                  f"got {t.shape}")
        if canon == "d2t":
            if t.dtype in _FLOAT_DTYPES:
                raise ConversionError(f"{where}: tensor {names[canon]}: d2t must be integer, got {t.dtype}")
            d2t = t.load().reshape(-1) + np.arange(want[0], dtype=np.int64)  # offsets -> absolute ids
            if d2t.min() < 0 or d2t.max() >= p.n_vocab:
                raise ConversionError(f"{where}: d2t maps draft ids outside the target vocabulary 0..{p.n_vocab - 1}")
            if np.unique(d2t).size != d2t.size:
                raise ConversionError(f"{where}: d2t maps two draft ids to the same target id")
            planned.append(PlannedTensor("d2t", names[canon], want, gguf.GGMLQuantizationType.I64,
                                         lambda d2t=d2t: d2t))
            continue
        if t.dtype not in _FLOAT_DTYPES:
            raise ConversionError(f"{where}: tensor {names[canon]}: expected a float tensor, got {t.dtype}")
        if canon == "embed_tokens.weight" and not keep_embedding and p.n_embd == target.n_embd:
            found = embedding_difference(t.load(), target.path)
            if found is not None and found[0] <= found[1]:
                log = logger.warning if found[0] > 1e-3 else logger.info
                log("%s equals the target's token_embd up to a relative RMS difference of %.4f (its rounding): not "
                    "written, the runtime uses the target's (--keep-embedding writes it)", names[canon], found[0])
                continue
        n_perm = p.n_head if canon.endswith(PERMUTED_Q) else p.n_head_kv if canon.endswith(PERMUTED_K) else 0
        qtype = _out_type(want, outtype)

        def make(t=t, n_perm=n_perm, qtype=qtype) -> np.ndarray:
            data = t.load()
            return _encode(permute_rows(data, n_perm) if n_perm else data, qtype)

        planned.append(PlannedTensor(gguf_name, names[canon], want, qtype, make))

    if p.rope_scaling and p.rope_scaling["type"] == "llama3":
        factors = llama3_rope_factors(p.head_dim, p.rope_theta, p.rope_scaling)
        planned.append(PlannedTensor("rope_freqs.weight", "config.json rope_scaling", factors.shape,
                                     gguf.GGMLQuantizationType.F32, lambda: factors))
    return p, planned


def add_llama_shape(w: gguf.GGUFWriter, *, n_ctx: int, n_embd: int, n_layer: int, n_ff: int, n_head: int,
                    n_head_kv: int, head_dim: int, rope_theta: float, eps: float) -> None:
    """A Llama-style model's shape keys, as llama.cpp names them (key/value length only when head_dim
    is not n_embd / n_head)."""
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_layer_norm_rms_eps(eps)
    w.add_rope_freq_base(rope_theta)
    w.add_rope_dimension_count(head_dim)
    if head_dim * n_head != n_embd:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)


def _write_metadata(w: gguf.GGUFWriter, p: HeadParams, target: TargetInfo, ckpt: Checkpoint, outtype: str) -> None:
    arch = p.kind
    w.add_name(ckpt.dir.resolve().name)
    w.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                     "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q5_0": gguf.LlamaFileType.MOSTLY_Q5_0,
                     "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[outtype])
    add_llama_shape(w, n_ctx=p.n_ctx, n_embd=p.n_embd, n_layer=p.n_layer, n_ff=p.n_ff, n_head=p.n_head,
                    n_head_kv=p.n_head_kv, head_dim=p.head_dim, rope_theta=p.rope_theta, eps=p.eps)
    rs = p.rope_scaling or {}
    if rs.get("type") == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rs["factor"])
    elif rs.get("type") == "yarn":
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(rs["factor"])
        w.add_rope_scaling_orig_ctx_len(rs["original_max_position_embeddings"])
        w.add_rope_scaling_yarn_beta_fast(rs["beta_fast"])
        w.add_rope_scaling_yarn_beta_slow(rs["beta_slow"])
        if rs["attn_factor"] != 1.0:
            w.add_rope_scaling_attn_factors(rs["attn_factor"])
    if arch == "eagle3":
        # as llama.cpp's converter writes them: vocab_size is the target's (Vd is d2t's length)
        w.add_vocab_size(p.n_vocab)
        w.add_array(f"{arch}.target_layers", [int(t) for t in p.taps])
        w.add_uint32(f"{arch}.target_hidden_size", p.target_hidden)
        w.add_bool(f"{arch}.norm_before_residual", p.norm_before_residual)
        w.add_bool(f"{arch}.norm_before_fc", False)
        for key, value, vtype, sub_type in target.tokenizer_kv:  # llama.cpp's loader needs the vocabulary
            w.add_key_value(key, value, vtype, sub_type)
    else:
        w.add_vocab_size(p.n_vocab_draft)
        if p.copy_key:
            w.add_uint32(f"{arch}.copy_key_length", p.copy_key)

    if p.depth_power:
        w.add_array(DEPTH_POWER_GGUF_KEY, [float(a) for a in p.depth_power])
    w.add_uint32("pyeagle.format_version", FORMAT_VERSION)
    w.add_uint32("pyeagle.target.vocab_size", target.n_vocab)
    w.add_string("pyeagle.target.vocab_hash", vocab_hash(target.tokens))
    w.add_uint32("pyeagle.target.n_embd", target.n_embd)
    kind_name = "EAGLE-3" if arch == "eagle3" else "EAGLE-1/2"
    w.add_string("pyeagle.source", f"{kind_name} checkpoint {ckpt.dir.resolve().name} "
                                   f"({', '.join(f.name for f in ckpt.files)})")


def convert(checkpoint_dir: str | os.PathLike, target_gguf: str | os.PathLike, outfile: str | os.PathLike,
            outtype: str = "f32", keep_embedding: bool = False) -> Path:
    """Converts the head in checkpoint_dir for the target model; returns the written GGUF path.
    The output appears only when the conversion succeeded (written to a .part file, then renamed)."""
    if outtype not in OUTTYPES:
        raise ConversionError(f"outtype {outtype!r}: expected one of {', '.join(OUTTYPES)}")
    ckpt = read_checkpoint(checkpoint_dir)
    target = read_target(target_gguf)
    p, planned = plan(ckpt, target, outtype, keep_embedding)
    logger.info("%s head: h=%d ff=%d heads=%d/%d V=%d Vd=%d%s, %d tensors", p.kind, p.n_embd, p.n_ff, p.n_head,
                p.n_head_kv, p.n_vocab, p.n_vocab_draft, f" taps={p.taps}" if p.taps else "", len(planned))

    out = write_gguf(outfile, p.kind, lambda w: _write_metadata(w, p, target, ckpt, outtype), planned)
    logger.info("wrote %s", out)
    return out


def _atomic_gguf(outfile: str | Path, arch: str, fill: Callable[[gguf.GGUFWriter], None]) -> Path:
    """Runs fill(writer) on a .part file beside outfile and renames it at the end: the file appears
    only complete, and the .part file is removed on any error (Ctrl-C included)."""
    out = Path(outfile)
    part = out.with_name(out.name + ".part")
    w = gguf.GGUFWriter(part, arch)
    try:
        fill(w)
        w.close()
        os.replace(part, out)
    except BaseException:
        w.close()
        part.unlink(missing_ok=True)
        raise
    return out


def _write_all(w: gguf.GGUFWriter, tensors: Iterable, data: Callable) -> None:
    """Header, keys, tensor infos (already added), then data(t) for each tensor."""
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for t in tensors:
        w.write_tensor_data(data(t))


def write_gguf(outfile: str | Path, arch: str, metadata: Callable[[gguf.GGUFWriter], None],
               planned: Sequence[PlannedTensor], desc: str = "converting") -> Path:
    """Writes a GGUF one tensor at a time (each made only when written, so memory holds one); the
    file appears only complete (a .part file, renamed at the end, removed on any error)."""
    def made(t: PlannedTensor) -> np.ndarray:
        data = t.make()
        if data.nbytes != _nbytes(t.shape, t.qtype):
            raise ConversionError(f"{t.source}: converted size {data.nbytes} != planned {_nbytes(t.shape, t.qtype)}")
        return data

    def fill(w: gguf.GGUFWriter) -> None:
        metadata(w)
        for t in planned:  # raw_dtype gives the GGML type; the NumPy dtype is then only nominal
            w.add_tensor_info(t.name, t.shape, np.dtype(np.float32), _nbytes(t.shape, t.qtype), raw_dtype=t.qtype)
        _write_all(w, tqdm(planned, desc=desc, unit="tensor", disable=None) if tqdm else planned, made)
    return _atomic_gguf(outfile, arch, fill)


def write_depth_powers(head_gguf: str | Path, outfile: str | Path, powers: Sequence[float]) -> Path:
    """A copy of a head GGUF whose tree calibration (pyeagle.tree.depth_power, docs/FORMAT.md) is
    `powers`; every other key and every tensor byte as they were. Written to a .part file, renamed
    at the end (outfile may be head_gguf itself)."""
    if not depth_powers_ok(list(powers)):
        raise ConversionError(f"depth powers {list(powers)}: at most 64 numbers in [0.1, 10]")
    key = DEPTH_POWER_GGUF_KEY
    r = gguf.GGUFReader(head_gguf)

    def fill(w: gguf.GGUFWriter) -> None:
        for f in r.fields.values():
            if f.name == "general.architecture" or f.name.startswith("GGUF.") or f.name == key:
                continue
            sub = f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None
            w.add_key_value(f.name, _field_value(f), f.types[0], sub_type=sub)
        if powers:
            w.add_array(key, [float(a) for a in powers])
        for t in r.tensors:
            w.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
        _write_all(w, r.tensors, lambda t: t.data)
    return _atomic_gguf(outfile, _field_value(r.fields["general.architecture"]).decode(), fill)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Convert an EAGLE-1/2 or EAGLE-3 draft head to GGUF for pyeagle / llama.cpp.")
    ap.add_argument("checkpoint_dir", help="directory with config.json and model.safetensors or pytorch_model.bin")
    ap.add_argument("--target", required=True, help="the target model GGUF the head was trained for")
    ap.add_argument("--outfile", help="output GGUF (default: <checkpoint dir name>-<outtype>.gguf)")
    ap.add_argument("--outtype", choices=OUTTYPES, default="f32",
                    help="type of 2-D weight matrices (norms, biases and d2t stay f32/i64); the quantized "
                         "types fall back to f16 for rows not a multiple of 32. q4_0 halves q8_0's memory, "
                         "for small targets whose head is a large share of the total")
    ap.add_argument("--keep-embedding", action="store_true",
                    help="write the head's embed_tokens even when it equals the target's token_embd (by default "
                         "such a copy is dropped: the runtime uses the target's, which saves V x h weights)")
    ap.add_argument("--verbose", action="store_true", help="log details")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    outfile = args.outfile or f"{Path(args.checkpoint_dir).resolve().name}-{args.outtype}.gguf"
    try:
        convert(args.checkpoint_dir, args.target, outfile, args.outtype, args.keep_embedding)
    except (ConversionError, OSError) as e:  # OSError: e.g. an unwritable --outfile
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
