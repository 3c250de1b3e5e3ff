"""convert/eagle_to_gguf.py: published head layouts in, docs/FORMAT.md out, bad input refused."""
from __future__ import annotations

import ctypes
import json
import math
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from eagle_checkpoints import save, target_dims, write_eagle3, write_eagle12
from eagle_ref import EagleRef
from tiny_gguf import TinySpec, vocab, write_tiny_llama

ROOT = Path(__file__).resolve().parent.parent
CONVERTER = ROOT / "convert" / "eagle_to_gguf.py"

from pyeagle.convert import ConversionError, convert, vocab_hash  # noqa: E402

T = gguf.GGMLQuantizationType


# ---------------------------------------------------------------- helpers
def read_gguf(path: Path) -> tuple[dict, dict]:
    """(fields as Python values, tensors as {name: (type, NumPy shape, data as float64/int64)})."""
    r = gguf.GGUFReader(path)
    fields = {}
    for k, f in r.fields.items():
        if k.startswith("GGUF."):
            continue
        if f.types[0] == gguf.GGUFValueType.ARRAY and f.types[-1] == gguf.GGUFValueType.STRING:
            fields[k] = [bytes(f.parts[i]) for i in f.data]
        else:
            fields[k] = f.contents()
    tensors = {}
    for t in r.tensors:
        data = t.data if t.tensor_type == T.I64 else gguf.quants.dequantize(t.data, t.tensor_type)
        tensors[t.name] = (t.tensor_type, tuple(int(d) for d in reversed(t.shape)), np.asarray(data))
    return fields, tensors


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp NORM-mode rows (pairs 2i, 2i+1) back to HF rotate-half rows (i, i + d/2)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) % 2**64
    return h


def expected_gguf(name: str, eagle3: bool) -> str:
    """GGUF name of a checkpoint tensor, written out independently of the converter's tables."""
    n = name[len("model."):] if name.startswith("model.") else name
    if eagle3 and n.startswith("midlayer."):
        n = "layers.0." + n[len("midlayer."):]
    mapping = {
        "embed_tokens.weight": "token_embd.weight", "fc.weight": "fc.weight", "fc.bias": "fc.bias",
        "layers.0.self_attn.q_proj.weight": "blk.0.attn_q.weight", "layers.0.self_attn.k_proj.weight": "blk.0.attn_k.weight",
        "layers.0.self_attn.v_proj.weight": "blk.0.attn_v.weight", "layers.0.self_attn.o_proj.weight": "blk.0.attn_output.weight",
        "layers.0.self_attn.q_proj.bias": "blk.0.attn_q.bias", "layers.0.self_attn.k_proj.bias": "blk.0.attn_k.bias",
        "layers.0.self_attn.v_proj.bias": "blk.0.attn_v.bias",
        "layers.0.post_attention_layernorm.weight": "blk.0.ffn_norm.weight",
        "layers.0.input_layernorm.weight": "blk.0.attn_norm.weight", "layers.0.hidden_norm.weight": "blk.0.attn_norm_2.weight",
        "layers.0.mlp.gate_proj.weight": "blk.0.ffn_gate.weight", "layers.0.mlp.up_proj.weight": "blk.0.ffn_up.weight",
        "layers.0.mlp.down_proj.weight": "blk.0.ffn_down.weight", "norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight", "d2t": "d2t",
    }
    return mapping[n]


def check_tensors(ckpt: dict[str, np.ndarray], tensors: dict, n_head: int, n_head_kv: int, eagle3: bool,
                  exact: bool = True) -> None:
    """Every checkpoint tensor (but t2d) is in the GGUF with its values; q/k un-permute to the original."""
    seen = set()
    for name, want in ckpt.items():
        if name.endswith("t2d"):
            continue
        gname = expected_gguf(name, eagle3)
        seen.add(gname)
        qtype, shape, got = tensors[gname]
        assert shape == want.shape, gname
        if gname == "d2t":
            assert qtype == T.I64
            np.testing.assert_array_equal(got, want + np.arange(want.size))  # absolute target ids
            continue
        if ".attn_q." in gname:
            got = unpermute(got, n_head)
        elif ".attn_k." in gname:
            got = unpermute(got, n_head_kv)
        if exact:
            np.testing.assert_array_equal(got, want, err_msg=gname)
        else:
            np.testing.assert_allclose(got, want, atol=0.01 * float(np.abs(want).max()), err_msg=gname)
    assert set(tensors) == seen, f"extra tensors: {set(tensors) - seen}"


@pytest.fixture(scope="module")
def dims(tiny_f32) -> dict:
    return target_dims(tiny_f32)


# ---------------------------------------------------------------- fingerprint
def test_vocab_hash_is_fnv1a_over_nul_terminated_tokens(tiny_f32):
    assert fnv1a64(b"a") == 0xAF63DC4C8601EC8C  # published FNV-1a 64 test vector
    assert vocab_hash([]) == "cbf29ce484222325"
    assert vocab_hash([b"a"]) == f"{fnv1a64(b'a' + bytes(1)):016x}"
    tokens = [t.encode() for t in vocab()[0]]
    assert vocab_hash(tokens) == f"{fnv1a64(b''.join(t + bytes(1) for t in tokens)):016x}"
    assert vocab_hash(tokens) != vocab_hash(tokens[:-1]) != vocab_hash([tokens[1], tokens[0]] + tokens[2:])


# ---------------------------------------------------------------- EAGLE-1/2
@pytest.mark.parametrize("fmt,dtype,fc_bias,qkv_bias,embed,prefix", [
    ("safetensors", "fp32", True, False, True, ""),
    ("safetensors", "fp16", False, False, False, ""),
    ("safetensors", "bf16", True, True, True, "model."),
    ("bin", "fp32", True, False, True, ""),
    ("bin", "fp16", False, True, False, "model."),
    ("bin", "bf16", True, False, False, ""),
])
def test_eagle12_layouts(tmp_path, tiny_f32, dims, fmt, dtype, fc_bias, qkv_bias, embed, prefix):
    if fmt == "bin":
        pytest.importorskip("torch")
    cfg, ckpt = write_eagle12(tmp_path / "head", **dims, fmt=fmt, dtype=dtype, fc_bias=fc_bias,
                              qkv_bias=qkv_bias, embed=embed, prefix=prefix, seed=3)
    out = convert(tmp_path / "head", tiny_f32, tmp_path / "head.gguf")
    assert out == tmp_path / "head.gguf" and not (tmp_path / "head.gguf.part").exists()
    fields, tensors = read_gguf(out)

    assert fields["general.architecture"] == "eagle"
    want = {"eagle.embedding_length": 64, "eagle.feed_forward_length": 128, "eagle.attention.head_count": 4,
            "eagle.attention.head_count_kv": 2, "eagle.context_length": 2048, "eagle.vocab_size": dims["vocab"],
            "eagle.block_count": 1, "eagle.rope.dimension_count": 16,
            "pyeagle.format_version": 1, "pyeagle.target.vocab_size": dims["vocab"], "pyeagle.target.n_embd": 64}
    assert {k: fields[k] for k in want} == want
    assert math.isclose(fields["eagle.attention.layer_norm_rms_epsilon"], 1e-5, rel_tol=1e-6)
    assert fields["eagle.rope.freq_base"] == 10000.0
    assert fields["pyeagle.target.vocab_hash"] == vocab_hash([t.encode() for t in vocab()[0]])
    assert "EAGLE-1/2" in fields["pyeagle.source"]
    assert not any(k.startswith("tokenizer.") for k in fields)
    assert all(t[0] == T.F32 for t in tensors.values())
    assert ("fc.bias" in tensors) == fc_bias and ("blk.0.attn_q.bias" in tensors) == qkv_bias
    assert ("token_embd.weight" in tensors) == embed and "output.weight" not in tensors
    check_tensors(ckpt, tensors, 4, 2, eagle3=False)


def test_eagle12_reduced_vocab_and_outtypes(tmp_path, tiny_f32, dims):
    """A pyeagle-trained head with its own reduced LM head; f16/q8_0 touch 2-D matrices only, and
    q8_0 falls back to f16 where rows are not a multiple of 32 (ffn_down: ff = 72)."""
    _, ckpt = write_eagle12(tmp_path / "head", **dims, ff=72, draft_vocab=100, qkv_bias=True)
    for outtype, big in (("f16", T.F16), ("q8_0", T.Q8_0)):
        fields, tensors = read_gguf(convert(tmp_path / "head", tiny_f32, tmp_path / f"{outtype}.gguf", outtype))
        assert fields["eagle.vocab_size"] == 100 and fields["general.file_type"] == {"f16": 1, "q8_0": 7}[outtype]
        for name, (qtype, shape, _) in tensors.items():
            if name == "d2t":
                assert qtype == T.I64
            elif len(shape) == 1:
                assert qtype == T.F32, name
            else:
                assert qtype == (T.F16 if name == "blk.0.ffn_down.weight" else big), name
        check_tensors(ckpt, tensors, 4, 2, eagle3=False, exact=False)


def test_sharded_safetensors(tmp_path, tiny_f32, dims):
    """A checkpoint split over shards listed in model.safetensors.index.json."""
    from safetensors.numpy import save_file

    cfg, ckpt = write_eagle12(tmp_path / "one", **dims, embed=False)
    (tmp_path / "sharded").mkdir()
    (tmp_path / "sharded" / "config.json").write_text((tmp_path / "one" / "config.json").read_text())
    names = sorted(ckpt)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, part in shards.items():
        save_file({k: ckpt[k] for k in part}, tmp_path / "sharded" / file)
    index = {"metadata": {}, "weight_map": {k: f for f, part in shards.items() for k in part}}
    (tmp_path / "sharded" / "model.safetensors.index.json").write_text(json.dumps(index))
    fields, tensors = read_gguf(convert(tmp_path / "sharded", tiny_f32, tmp_path / "head.gguf"))
    check_tensors(ckpt, tensors, 4, 2, eagle3=False)
    assert "model-00002-of-00002.safetensors" in fields["pyeagle.source"]


# ---------------------------------------------------------------- EAGLE-3
EAGLE3_LAYOUTS = {
    "midlayer-bf16-d2t": dict(fmt="safetensors", dtype="bf16"),
    "prefixed-fp16-embed": dict(fmt="safetensors", dtype="fp16", prefix="model.", layers_name="layers.0.", embed=True),
    "layers0-fullvocab": dict(fmt="safetensors", dtype="fp32", layers_name="layers.0.", draft_vocab=None),
    "bin-fp32-target_hidden": dict(fmt="bin", dtype="fp32", write_target_hidden=True),
    "bin-bf16-no-t2d": dict(fmt="bin", dtype="bf16", t2d=False, prefix="model."),
}


@pytest.mark.parametrize("layout", list(EAGLE3_LAYOUTS))
def test_eagle3_layouts(tmp_path, tiny_f32, dims, layout):
    kw = EAGLE3_LAYOUTS[layout]
    if kw["fmt"] == "bin":
        pytest.importorskip("torch")
    cfg, ckpt = write_eagle3(tmp_path / "head", **dims, taps=[0, 1, 2], **kw)
    fields, tensors = read_gguf(convert(tmp_path / "head", tiny_f32, tmp_path / "head.gguf"))

    V = dims["vocab"]
    assert fields["general.architecture"] == "eagle3"
    assert fields["eagle3.target_layers"] == [0, 1, 2]
    assert fields["eagle3.target_hidden_size"] == 64 and fields["eagle3.block_count"] == 1
    assert fields["eagle3.vocab_size"] == V  # as llama.cpp writes it: the target's; Vd is d2t's length
    assert fields["eagle3.norm_before_residual"] is False and fields["eagle3.norm_before_fc"] is False
    assert fields["pyeagle.target.vocab_size"] == V
    assert "EAGLE-3" in fields["pyeagle.source"]
    # the target's tokenizer travels with the head (llama.cpp's loader needs a vocabulary)
    target_fields, _ = read_gguf(tiny_f32)
    for k, v in target_fields.items():
        if k.startswith("tokenizer."):
            assert fields[k] == v, k
    Vd = kw.get("draft_vocab", 200) or V
    assert tensors["output.weight"][1] == (Vd, 64) and tensors["fc.weight"][1] == (64, 3 * 64)
    assert ("d2t" in tensors) == (Vd != V)
    check_tensors(ckpt, tensors, 4, 2, eagle3=True)


def test_eagle3_default_taps(tmp_path):
    """Without eagle_aux_hidden_state_layer_ids the taps are 2, N/2, N-3 of the target's N layers."""
    target = write_tiny_llama(tmp_path / "deep.gguf", TinySpec(n_layer=8))
    write_eagle3(tmp_path / "head", **{**target_dims(target), "n_layer": None})
    fields, _ = read_gguf(convert(tmp_path / "head", target, tmp_path / "head.gguf"))
    assert fields["eagle3.target_layers"] == [2, 4, 5]


@pytest.mark.parametrize("outtype,kw", [("f32", {}), ("f16", {"draft_vocab": None, "embed": True}), ("q8_0", {})])
def test_eagle3_loads_in_llama_cpp(tmp_path, tiny_f32, dims, outtype, kw):
    llama_cpp = pytest.importorskip("llama_cpp")
    write_eagle3(tmp_path / "head", **dims, **kw)
    out = convert(tmp_path / "head", tiny_f32, tmp_path / "head.gguf", outtype)
    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(str(out).encode(), llama_cpp.llama_model_default_params())
    assert model, "llama.cpp refused the converted EAGLE-3 head (see its log above)"
    try:
        buf = ctypes.create_string_buffer(64)
        assert llama_cpp.llama_model_meta_val_str(model, b"general.architecture", buf, len(buf)) > 0
        assert buf.value == b"eagle3"
        assert llama_cpp.llama_model_n_embd(model) == 64
        assert llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model)) == dims["vocab"]
    finally:
        llama_cpp.llama_model_free(model)


LLAMA3_16 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
             "original_max_position_embeddings": 16}
YARN_16 = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "beta_fast": 16.0}


@pytest.mark.parametrize("own_embd,head_dim,extra", [
    (True, None, {"rope_scaling": LLAMA3_16}),
    (False, 32, {"rope_scaling": LLAMA3_16}),
    (False, 32, {"rope_scaling": YARN_16, "norm_before_residual": True}),
    (True, None, {"rope_scaling": {"type": "linear", "factor": 2.0}, "norm_before_residual": True}),
])
def test_eagle3_in_llama_cpp_matches_reference(tmp_path, tiny_f32, dims, own_embd, head_dim, extra):
    """llama.cpp's own eagle3 decoder graph on the converted head == EagleRef on the checkpoint
    (fed-back hidden rows, llama3 / yarn / linear RoPE scaling, norm_before_residual, d2t scatter,
    head_dim != h / n_head). Without its own token_embd the head borrows the target's through
    ctx_other, as llama.cpp's speculative decoding does."""
    L = pytest.importorskip("llama_cpp")
    write_eagle3(tmp_path / "head", **dims, embed=own_embd, head_dim=head_dim, rope_theta=500.0, config_extra=extra)
    head = convert(tmp_path / "head", tiny_f32, tmp_path / "head.gguf")
    ref = EagleRef(tmp_path / "head", tiny_f32)
    n, V = 8, dims["vocab"]
    rng = np.random.default_rng(1)
    tokens = rng.integers(5, V, n)
    g = (rng.standard_normal((n, 64)) * 3).astype(np.float32)

    L.llama_backend_init()
    mparams = L.llama_model_default_params()
    model = L.llama_model_load_from_file(str(head).encode(), mparams)
    target = None if own_embd else L.llama_model_load_from_file(str(tiny_f32).encode(), mparams)
    ctx_target = None if own_embd else L.llama_init_from_model(target, L.llama_context_default_params())
    cparams = L.llama_context_default_params()
    cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = 64
    cparams.n_threads = cparams.n_threads_batch = 1
    cparams.type_k = cparams.type_v = 0          # f32 KV and no flash attention (it rounds to f16)
    cparams.flash_attn_type = 0
    if ctx_target:
        cparams.ctx_other = ctx_target
    ctx = L.llama_init_from_model(model, cparams)
    batch = L.llama_batch_ext_init(ctx)
    try:
        assert model and ctx
        for i in range(n):  # each row: token + the hidden state fed back in
            idx = L.llama_batch_ext_add_token(batch, 0, int(tokens[i]))
            assert L.llama_batch_ext_set_pos(batch, idx, (ctypes.c_int * 4)(i, 0, 0, 0))
            row = L.llama_embd(g[i].ctypes.data_as(ctypes.POINTER(ctypes.c_float)), 1, 64)
            assert L.llama_batch_ext_set_embd_token(batch, idx, row)
            assert L.llama_batch_ext_set_output_logits(batch, idx, True)
        assert L.llama_process(ctx, L.LLAMA_PROCESS_TYPE_DECODE, batch) == 0
        got = np.stack([np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(V,)).copy() for i in range(n)])
    finally:
        L.llama_batch_ext_free(batch)
        for free, obj in ((L.llama_free, ctx), (L.llama_free, ctx_target), (L.llama_model_free, model),
                          (L.llama_model_free, target)):
            if obj:
                free(obj)
    _, logits = ref.forward(tokens, g, np.arange(n), np.tril(np.ones((n, n), bool)), inputs_are_taps=np.zeros(n, bool))
    want = np.full((n, V), -np.inf, np.float32)
    want[:, ref.d2t] = logits  # llama.cpp scatters draft rows to target ids, -inf elsewhere
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
    np.testing.assert_allclose(got[np.isfinite(got)], want[np.isfinite(want)], rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- the GGUF computes what the checkpoint computes
def rope_norm(x: np.ndarray, pos: np.ndarray, base: float, freq_scale: float, factors: np.ndarray | None) -> np.ndarray:
    """ggml RoPE, NORM mode: rotates adjacent pairs (2i, 2i+1) by pos * base^(-2i/d) / factor_i."""
    d = x.shape[-1]
    theta = base ** (-np.arange(0, d, 2) / d)
    if factors is not None:
        theta = theta / factors
    ang = (pos * freq_scale)[:, None, None] * theta[None, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * np.cos(ang) - x1 * np.sin(ang)
    out[..., 1::2] = x0 * np.sin(ang) + x1 * np.cos(ang)
    return out


def gguf_forward(head: Path, target: Path, tokens, inputs, pos, mask, taps=None):
    """The head run the way llama.cpp's graphs run it (eagle3.cpp; FORMAT.md for eagle), from the GGUF."""
    fields, t = read_gguf(head)
    _, tt = read_gguf(target)
    arch = fields["general.architecture"]
    W = {k: v[2].astype(np.float64) for k, v in t.items()}
    n_head, n_kv = fields[f"{arch}.attention.head_count"], fields[f"{arch}.attention.head_count_kv"]
    eps, base = fields[f"{arch}.attention.layer_norm_rms_epsilon"], fields[f"{arch}.rope.freq_base"]
    freq_scale = 1.0 / fields.get(f"{arch}.rope.scaling.factor", 1.0)
    factors = W.get("rope_freqs.weight")

    def norm(x, w):
        return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * w

    def lin(x, name):
        y = x @ W[name + ".weight"].T
        return y + W[name + ".bias"] if name + ".bias" in W else y

    def attn(x):
        n = x.shape[0]
        q = lin(x, "blk.0.attn_q").reshape(n, n_head, -1)
        k = lin(x, "blk.0.attn_k").reshape(n, n_kv, -1)
        v = lin(x, "blk.0.attn_v").reshape(n, n_kv, -1)
        q, k = rope_norm(q, pos, base, freq_scale, factors), rope_norm(k, pos, base, freq_scale, factors)
        k, v = np.repeat(k, n_head // n_kv, 1), np.repeat(v, n_head // n_kv, 1)
        s = np.einsum("ihd,jhd->hij", q, k) / np.sqrt(q.shape[-1])
        s = np.where(mask[None], s, -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        return lin(np.einsum("hij,jhd->ihd", p, v).reshape(n, -1), "blk.0.attn_output")

    def ffn(x):
        g = lin(x, "blk.0.ffn_gate")
        return lin(g / (1 + np.exp(-g)) * lin(x, "blk.0.ffn_up"), "blk.0.ffn_down")

    embd = W.get("token_embd.weight", tt["token_embd.weight"][2].astype(np.float64))[np.asarray(tokens)]
    if arch == "eagle":
        z = lin(np.concatenate([embd, inputs], -1), "fc")
        a = z + attn(z)
        y = a + ffn(norm(a, W["blk.0.ffn_norm.weight"]))
        w_out = W.get("output.weight", tt["output.weight"][2].astype(np.float64))
        return y, y @ w_out.T
    taps = np.ones(len(tokens), bool) if taps is None else taps
    g = np.stack([W["fc.weight"] @ r if tp else r for r, tp in zip(inputs, taps)])
    g_n = norm(g, W["blk.0.attn_norm_2.weight"])
    a = (g_n if fields[f"{arch}.norm_before_residual"] else g) + \
        attn(np.concatenate([norm(embd, W["blk.0.attn_norm.weight"]), g_n], -1))
    y = a + ffn(norm(a, W["blk.0.ffn_norm.weight"]))
    return y, norm(y, W["output_norm.weight"]) @ W["output.weight"].T


def tree_rows(rng, n_prefix: int, vocab_size: int):
    """A committed prefix (causal) followed by 3 tree nodes: two siblings and a child of the first."""
    n = n_prefix + 3
    tokens = rng.integers(5, vocab_size, n)
    pos = np.concatenate([np.arange(n_prefix), [n_prefix, n_prefix, n_prefix + 1]])
    mask = np.tril(np.ones((n, n), bool))
    mask[n_prefix + 1, n_prefix] = False          # sibling does not see sibling
    mask[n_prefix + 2, n_prefix + 1] = False      # child sees its parent, not its uncle
    return tokens, pos, mask


@pytest.mark.parametrize("case", ["eagle12-qkv-bias-linear-rope", "eagle12-q8-target-head-dim", "eagle3-llama3-rope",
                                  "eagle3-norm-before-residual"])
def test_gguf_forward_matches_checkpoint_reference(tmp_path, tiny_f32, tiny_q8, dims, case):
    """Permuted q/k with NORM-mode RoPE on the GGUF == rotate-half RoPE on the checkpoint (EagleRef)."""
    rng = np.random.default_rng(7)
    target = tiny_q8 if "q8" in case else tiny_f32
    if case.startswith("eagle12"):
        extra = {"rope_scaling": {"type": "linear", "factor": 2.0}} if "linear" in case else {}
        write_eagle12(tmp_path / "head", **dims, qkv_bias="qkv" in case, embed=False, rope_theta=500.0,
                      head_dim=32 if "head-dim" in case else None, config_extra=extra)
    else:
        extra = ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                   "original_max_position_embeddings": 16}} if "llama3" in case
                 else {"norm_before_residual": True})
        write_eagle3(tmp_path / "head", **dims, rope_theta=500.0, config_extra=extra)
    head = convert(tmp_path / "head", target, tmp_path / "head.gguf")
    ref = EagleRef(tmp_path / "head", target)

    tokens, pos, mask = tree_rows(rng, 6, dims["vocab"])
    if case.startswith("eagle12"):
        inputs, taps = rng.standard_normal((len(tokens), 64)), None
        assert ref.d2t is None
    else:  # prefix rows carry target taps; tree rows feed back the head's own hidden state
        taps = np.arange(len(tokens)) < 6
        inputs = [rng.standard_normal(192) if tp else rng.standard_normal(64) * 3 for tp in taps]
        np.testing.assert_array_equal(ref.d2t, read_gguf(head)[1]["d2t"][2])
    y_ref, logits_ref = ref.forward(tokens, inputs, pos, mask, inputs_are_taps=taps)
    y, logits = gguf_forward(head, target, tokens, inputs, pos, mask, taps)
    assert y_ref.dtype == logits_ref.dtype == np.float32
    assert logits_ref.shape == (len(tokens), dims["vocab"] if case.startswith("eagle12") else 200)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits, logits_ref, rtol=1e-5, atol=1e-4)
    # the mask matters: a sibling's output must not depend on the other sibling
    if case.startswith("eagle12"):
        changed = inputs.copy()
        changed[6] += 1.0
        y2, _ = ref.forward(tokens, changed, pos, mask)
        np.testing.assert_array_equal(y2[7], y_ref[7])
        assert not np.allclose(y2[8], y_ref[8])  # the child of row 6 does see it


# ---------------------------------------------------------------- refusals
def converting(tmp_path, head_dir, target, match):
    out = tmp_path / "refused.gguf"
    with pytest.raises(ConversionError, match=match) as e:
        convert(head_dir, target, out)
    assert not out.exists() and not (tmp_path / "refused.gguf.part").exists()
    return str(e.value)


def test_refuses_missing_unexpected_and_misshapen_tensors(tmp_path, tiny_f32, dims):
    cfg, ckpt = write_eagle12(tmp_path / "ok", **dims)
    cfg.pop("torch_dtype", None)

    bad = dict(ckpt)
    del bad["layers.0.mlp.up_proj.weight"], bad["fc.bias"]
    save(tmp_path / "missing", cfg, bad, "safetensors", "fp32")
    msg = converting(tmp_path, tmp_path / "missing", tiny_f32, "missing tensors")
    assert "layers.0.mlp.up_proj.weight" in msg and "fc.bias" in msg and "model.safetensors" in msg

    bad = {**ckpt, "layers.0.input_layernorm.weight": np.ones(64, np.float32), "extra.thing": np.ones(3, np.float32)}
    save(tmp_path / "unexpected", cfg, bad, "safetensors", "fp32")
    msg = converting(tmp_path, tmp_path / "unexpected", tiny_f32, "unexpected tensors")
    assert "layers.0.input_layernorm.weight" in msg and "extra.thing" in msg

    save(tmp_path / "bias", {**cfg, "bias": False}, ckpt, "safetensors", "fp32")
    converting(tmp_path, tmp_path / "bias", tiny_f32, r"fc\.bias.*|bias\": false")

    bad = {**ckpt, "fc.weight": np.ones((64, 129), np.float32)}
    save(tmp_path / "shape", cfg, bad, "safetensors", "fp32")
    msg = converting(tmp_path, tmp_path / "shape", tiny_f32, "fc.weight")
    assert "expected shape (h, x) = (64, 128)" in msg and "got (64, 129)" in msg

    _, ckpt3 = write_eagle3(tmp_path / "ok3", **dims)
    cfg3 = write_eagle3(tmp_path / "tmp3", **dims)[0]
    bad = dict(ckpt3)
    bad["d2t"] = bad["d2t"].copy()
    bad["d2t"][-1] = dims["vocab"]  # maps past the target vocabulary
    save(tmp_path / "d2t", cfg3, bad, "safetensors", "fp32")
    converting(tmp_path, tmp_path / "d2t", tiny_f32, "outside the target vocabulary")
    bad["d2t"] = np.zeros_like(bad["d2t"])  # draft i -> target i, then a duplicate
    bad["d2t"][1] = -1
    save(tmp_path / "dup", cfg3, bad, "safetensors", "fp32")
    converting(tmp_path, tmp_path / "dup", tiny_f32, "same target id")

    # a head of two layers (EAGLE-1's cnets.py) needs the second layer's tensors, its input norm included
    save(tmp_path / "two", {**cfg, "num_hidden_layers": 2}, ckpt, "safetensors", "fp32")
    msg = converting(tmp_path, tmp_path / "two", tiny_f32, "missing tensors")
    assert "layers.1.input_layernorm.weight" in msg and "layers.1.self_attn.q_proj.weight" in msg
    save(tmp_path / "two3", {**cfg3, "num_hidden_layers": 2}, ckpt3, "safetensors", "fp32")
    converting(tmp_path, tmp_path / "two3", tiny_f32, "an EAGLE-3 head has 1")


def test_refuses_head_of_another_target(tmp_path, tiny_f32, dims):
    write_eagle12(tmp_path / "wide", **{**dims, "hidden": 96}, n_head=4)
    converting(tmp_path, tmp_path / "wide", tiny_f32, "hidden_size 96 != target n_embd 64")
    write_eagle12(tmp_path / "vocab", **{**dims, "vocab": dims["vocab"] + 7})
    converting(tmp_path, tmp_path / "vocab", tiny_f32, f"vocab_size {dims['vocab'] + 7} != target vocabulary")
    write_eagle3(tmp_path / "e3wide", **dims, target_hidden=96, embed=True)
    converting(tmp_path, tmp_path / "e3wide", tiny_f32, "target_hidden_size 96 != target n_embd 64")
    write_eagle3(tmp_path / "taps", **{**dims, "n_layer": None})  # default taps 2, 1, -1 for 2 layers
    converting(tmp_path, tmp_path / "taps", tiny_f32, "eagle_aux_hidden_state_layer_ids")
    write_eagle3(tmp_path / "taps9", **dims, taps=[0, 1, 9])
    converting(tmp_path, tmp_path / "taps9", tiny_f32, r"\[0, 1, 9\]")


def test_refuses_missing_files(tmp_path, tiny_f32, dims):
    write_eagle12(tmp_path / "head", **dims)
    converting(tmp_path, tmp_path / "nowhere", tiny_f32, "not a directory")
    (tmp_path / "head" / "model.safetensors").rename(tmp_path / "weights.bak")
    converting(tmp_path, tmp_path / "head", tiny_f32, "no weights file")
    (tmp_path / "weights.bak").rename(tmp_path / "head" / "model.safetensors")
    (tmp_path / "head" / "config.json").unlink()
    converting(tmp_path, tmp_path / "head", tiny_f32, r"config\.json: missing")
    write_eagle12(tmp_path / "head2", **dims)
    converting(tmp_path, tmp_path / "head2", tmp_path / "no-target.gguf", "target GGUF not found")
    (tmp_path / "head2" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    converting(tmp_path, tmp_path / "head2", tiny_f32, "safetensors")


class _RunsCode:
    """A pickled object whose unpickling would run code: exec() creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def test_refuses_bin_that_would_run_code(tmp_path, tiny_f32, dims):
    torch = pytest.importorskip("torch")
    cfg, ckpt = write_eagle12(tmp_path / "head", **dims, fmt="bin")
    marker = tmp_path / "pwned"
    state = {k: torch.from_numpy(v) for k, v in ckpt.items()}
    state["fc.weight"] = _RunsCode(marker)
    torch.save(state, tmp_path / "head" / "pytorch_model.bin")
    # control: an unrestricted unpickler does run it, so the file is really malicious
    torch.load(tmp_path / "head" / "pytorch_model.bin", weights_only=False)
    assert marker.exists()
    marker.unlink()
    msg = converting(tmp_path, tmp_path / "head", tiny_f32, "weights_only=True")
    assert "pytorch_model.bin" in msg
    assert not marker.exists()


# ---------------------------------------------------------------- CLI
def test_cli(tmp_path, tiny_f32, dims):
    write_eagle3(tmp_path / "head", **dims)
    run = [sys.executable, str(CONVERTER)]
    bad = subprocess.run(run + [str(tmp_path / "nothing"), "--target", str(tiny_f32), "--outfile", str(tmp_path / "x.gguf")],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and "not a directory" in bad.stderr
    assert not (tmp_path / "x.gguf").exists()
    ok = subprocess.run(run + [str(tmp_path / "head"), "--target", str(tiny_f32), "--outfile", str(tmp_path / "h.gguf"),
                               "--outtype", "f16"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert read_gguf(tmp_path / "h.gguf")[1]["fc.weight"][0] == T.F16


# ---------------------------------------------------------------- an embedding that is the target's
@pytest.mark.parametrize("kind", ["eagle12", "eagle3"])
@pytest.mark.parametrize("keep", [False, True])
def test_embedding_equal_to_the_targets_is_not_written(tmp_path, tiny_q8, kind, keep):
    """Trainers freeze a copy of the target's embedding into the head (V x h: ~1 GB at 8B in f16).
    The converter drops a copy equal to the target's token_embd (here: the Q8_0 target's, stored in
    bf16) unless --keep-embedding; the runtime then uses the target's. An own embedding stays."""
    from pyeagle import DraftHead, Target
    dims = target_dims(tiny_q8)
    write = write_eagle3 if kind == "eagle3" else write_eagle12
    cfg, tensors = write(tmp_path / "ck", **dims, embed=True, dtype="bf16")
    r = gguf.GGUFReader(str(tiny_q8))
    te = next(t for t in r.tensors if t.name == "token_embd.weight")
    tensors["embed_tokens.weight"] = gguf.quants.dequantize(te.data, te.tensor_type).reshape(dims["vocab"], -1)
    save(tmp_path / "ck", cfg, tensors, "safetensors", "bf16")
    _, out = read_gguf(convert(tmp_path / "ck", tiny_q8, tmp_path / "head.gguf", keep_embedding=keep))
    assert ("token_embd.weight" in out) == keep
    tgt = Target(str(tiny_q8), n_ctx=128, n_threads=1)
    head = DraftHead(str(tmp_path / "head.gguf"), tgt, n_ctx=64, n_batch=16)
    from test_draft_head import run_both
    for got, want in run_both(head, EagleRef(tmp_path / "ck", tiny_q8), tgt, kind == "eagle3", np.random.default_rng(2)):
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-2 * max(1.0, float(np.abs(want).max())))
    # a trained (different) embedding is the head's own: always written
    write(tmp_path / "own", **dims, embed=True, seed=5)
    _, out = read_gguf(convert(tmp_path / "own", tiny_q8, tmp_path / "own.gguf"))
    assert "token_embd.weight" in out


@pytest.mark.parametrize("scaling", [{"rope_type": "yarn"}, {"rope_type": "yarn", "factor": 0.5},
                                     {"rope_type": "dynamic", "factor": 2.0},
                                     {"rope_type": "yarn", "factor": 4.0, "mscale": 0.7}])
def test_rope_scaling_the_runtime_cannot_run_is_refused(tmp_path, tiny_f32, dims, scaling):
    write_eagle12(tmp_path / "head", **dims, config_extra={"rope_scaling": scaling})
    with pytest.raises(ConversionError, match="rope_scaling"):
        convert(tmp_path / "head", tiny_f32, tmp_path / "head.gguf")
    assert not (tmp_path / "head.gguf").exists()
