"""The draft head's ggml forward against the independent NumPy reference (tests/eagle_ref.py),
including a tree-masked batch; and hostile head files."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest


from eagle_checkpoints import target_dims, write_eagle12, write_eagle3  # noqa: E402
from eagle_ref import EagleRef  # noqa: E402
from pyeagle.convert import convert  # noqa: E402

from pyeagle import DraftHead, ModelFileError, Target  # noqa: E402
from tiny_gguf import TinySpec, write_tiny_llama  # noqa: E402


def run_both(head: DraftHead, ref: EagleRef, tgt: Target, eagle3: bool, rng: np.random.Generator,
             toks: list[int] | None = None):
    """A committed prefix of 7 pairs, then two tree steps: 3 children of the prefix, then 2
    children of the first and one of the third. Returns [(ggml, reference)] pairs to compare.
    toks: the 13 tokens (default: random ones)."""
    n_pre, h = 7, head.n_embd
    toks = toks or [int(t) for t in rng.integers(5, tgt.n_vocab, n_pre + 6)]
    feats = rng.standard_normal((n_pre, head.n_feature)).astype(np.float32)
    head.prefix(toks[:n_pre], feats, 0)
    y_pre, lg_pre = head.y(), head.logits()
    # tree step 1: children of the prefix at position n_pre (inputs: the last prefix output)
    in1 = np.repeat(y_pre[-1:], 3, axis=0)
    c1 = head.tree(toks[n_pre:n_pre + 3], in1, [n_pre] * 3, [-1] * 3)
    y1, lg1 = head.y(), head.logits()
    in2 = np.stack([y1[0], y1[0], y1[2]])
    c2 = head.tree(toks[n_pre + 3:n_pre + 6], in2, [n_pre + 1] * 3, [c1, c1, c1 + 2])
    y2, lg2 = head.y(), head.logits()
    assert c2 == c1 + 3

    # reference: all 13 rows at once with the equivalent mask
    n = n_pre + 6
    mask = np.zeros((n, n), dtype=bool)
    for i in range(n_pre):
        mask[i, : i + 1] = True
    parent = {n_pre + 3: n_pre, n_pre + 4: n_pre, n_pre + 5: n_pre + 2}
    for i in range(n_pre, n):
        mask[i, :n_pre] = True
        j = i
        while j is not None:
            mask[i, j] = True
            j = parent.get(j)
    inputs = [f for f in feats] + list(in1) + list(in2)
    pos = list(range(n_pre)) + [n_pre] * 3 + [n_pre + 1] * 3
    kw = {}
    if eagle3:
        kw["inputs_are_taps"] = np.array([True] * n_pre + [False] * 6)
    y_ref, lg_ref = ref.forward(toks, inputs, pos, mask, **kw)
    return [(y_pre, y_ref[:n_pre]), (lg_pre[-1], lg_ref[n_pre - 1]), (y1, y_ref[n_pre:n_pre + 3]),
            (lg1, lg_ref[n_pre:n_pre + 3]), (y2, y_ref[n_pre + 3:]), (lg2, lg_ref[n_pre + 3:])]


@pytest.fixture(scope="module")
def tiny_target(tmp_path_factory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("dh") / "target.gguf", TinySpec(n_layer=4))


LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 16}
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}

# Every converter variant the runtime must run (docs/FORMAT.md, "What runs"): RoPE none / linear /
# llama3 / yarn (HF spells the kind `rope_type` or `type`), head_dim != hidden / heads,
# norm_before_residual, taps up to the final layer's output, fc / qkv biases, own or borrowed
# embedding, tied (the target's) or own lm_head, d2t / t2d.
VARIANTS = {
    "eagle12": dict(kind="eagle12", qkv_bias=True),
    "eagle12_nobias_noembed": dict(kind="eagle12", fc_bias=False, embed=False),
    "eagle12_reduced": dict(kind="eagle12", draft_vocab=100),
    "eagle12_linear_headdim": dict(kind="eagle12", embed=False, head_dim=32, rope_theta=500.0,
                                   config_extra={"rope_scaling": {"type": "linear", "factor": 2.0}}),
    "eagle12_llama3": dict(kind="eagle12", embed=False, rope_theta=500.0, config_extra={"rope_scaling": LLAMA3}),
    "eagle12_yarn": dict(kind="eagle12", embed=False, rope_theta=500.0, config_extra={"rope_scaling": YARN}),
    "eagle12_three_layers": dict(kind="eagle12", qkv_bias=True, draft_vocab=100, layers=3),
    "eagle12_copy": dict(kind="eagle12", draft_vocab=100, copy_key=3),
    "eagle3": dict(kind="eagle3", taps=[0, 2, 3]),
    "eagle3_final_tap_llama3": dict(kind="eagle3", taps=[1, 2, 4], embed=True, rope_theta=500.0,
                                    config_extra={"rope_scaling": LLAMA3}),
    "eagle3_norm_before_residual_yarn_headdim": dict(
        kind="eagle3", taps=[0, 2, 3], head_dim=32, rope_theta=500.0,
        config_extra={"norm_before_residual": True, "rope_scaling": {**YARN, "beta_fast": 16, "beta_slow": 2}}),
    "eagle3_full_vocab_no_t2d": dict(kind="eagle3", taps=[0, 2, 3], draft_vocab=None),
}


def write_variant(ck: Path, target: Path, variant: str) -> None:
    kw = dict(VARIANTS[variant])
    write = write_eagle3 if kw.pop("kind") == "eagle3" else write_eagle12
    write(ck, **target_dims(target), **kw)


@pytest.mark.parametrize("variant", list(VARIANTS))
# q4_0's 4-bit weights on these 64-wide random matrices err by up to ~0.3 of the largest output: its
# row is a check that the layout is right (a wrong one errs by more than the outputs themselves)
@pytest.mark.parametrize("outtype,tol", [("f32", 2e-3), ("f16", 6e-2), ("q4_0", 0.5)])
def test_forward_matches_numpy_reference(tiny_target, tmp_path, variant, outtype, tol):
    ck = tmp_path / "ckpt"
    write_variant(ck, tiny_target, variant)
    out = convert(ck, tiny_target, tmp_path / "head.gguf", outtype=outtype)
    tgt = Target(str(tiny_target), n_ctx=256, n_threads=1)
    head = DraftHead(str(out), tgt, n_ctx=64, n_batch=16)
    eagle3 = VARIANTS[variant]["kind"] == "eagle3"
    assert head.eagle3 == eagle3
    if "headdim" in variant:
        assert head.head_dim == 32 != head.n_embd // 4
    assert head.n_layer == VARIANTS[variant].get("layers", 1)
    ref = EagleRef(ck, tiny_target)
    assert head.norm_before_residual == ref.norm_before_residual
    assert head.copy_key == VARIANTS[variant].get("copy_key", 0)
    for got, want in run_both(head, ref, tgt, eagle3, np.random.default_rng(0), COPY_TOKENS if head.copy_key else None):
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got, want, rtol=0, atol=tol * scale)
    # rollback drops the tree cells; the prefix stays
    head.rollback()
    assert head.n_kv == head.n_committed == 7


# prefix 5 6 7 5 6 7 8; tree children 5 6 8 (of the prefix), then 6 7 | 9: copies of every key length
# 1..3, found in the prefix, across its end and along a tree path
COPY_TOKENS = [5, 6, 7, 5, 6, 7, 8, 5, 6, 8, 6, 7, 9]


def test_copy_input_follows_truncation_and_new_tokens(tiny_target, tmp_path):
    """A copy-input head after truncate() and a prefix of other tokens computes what a fresh head
    computes on the new sequence: the copy index forgets the dropped cells."""
    ck = tmp_path / "ckpt"
    write_variant(ck, tiny_target, "eagle12_copy")
    out = convert(ck, tiny_target, tmp_path / "head.gguf", outtype="f32")
    tgt = Target(str(tiny_target), n_ctx=256, n_threads=1)
    rng = np.random.default_rng(5)
    feats = rng.standard_normal((12, 64)).astype(np.float32)
    a, b = DraftHead(str(out), tgt, n_ctx=64, n_batch=4), DraftHead(str(out), tgt, n_ctx=64, n_batch=4)
    a.prefix([5, 6, 7, 5, 6, 7, 8, 5, 6, 7], feats[:10], 0)  # in chunks of n_batch 4
    a.truncate(3)
    new = [5, 6, 7, 9, 6, 7, 9, 5, 6]
    a.prefix(new[3:], feats[3:9], 3)
    b.prefix(new, np.concatenate([feats[:3], feats[3:9]]), 0)
    np.testing.assert_allclose(a.y()[-1], b.y()[-1], rtol=0, atol=1e-4)
    np.testing.assert_allclose(a.logits()[-1], b.logits()[-1], rtol=0, atol=1e-4)


@pytest.mark.parametrize("tied", [True, False])
def test_borrowed_lm_head_is_the_targets_output_matrix(tmp_path, tied):
    """A head without an lm_head drafts over the target's output matrix, tied (token_embd) or not."""
    target = write_tiny_llama(tmp_path / "t.gguf", TinySpec(n_layer=2, tied=tied, seed=3))
    write_eagle12(tmp_path / "ck", **target_dims(target), embed=False)
    out = convert(tmp_path / "ck", target, tmp_path / "head.gguf")
    tgt = Target(str(target), n_ctx=128, n_threads=1)
    head = DraftHead(str(out), tgt, n_ctx=64, n_batch=16)
    assert head.n_draft_vocab == tgt.n_vocab
    ref = EagleRef(tmp_path / "ck", target)
    for got, want in run_both(head, ref, tgt, False, np.random.default_rng(1)):
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-3 * max(1.0, float(np.abs(want).max())))


def test_reference_rope_variants_differ(tiny_target, tmp_path):
    """The RoPE variants above are not vacuous: at these positions each changes the head's output."""
    n = 12
    rng = np.random.default_rng(0)
    toks, feats = rng.integers(5, 100, n), list(rng.standard_normal((n, 64)))
    outs = []
    for i, scaling in enumerate([None, {"type": "linear", "factor": 2.0}, LLAMA3, YARN]):
        write_eagle12(tmp_path / str(i), **target_dims(tiny_target), embed=False, rope_theta=500.0,
                      config_extra={"rope_scaling": scaling})
        ref = EagleRef(tmp_path / str(i), tiny_target)
        outs.append(ref.forward(toks, feats, np.arange(n) * 3, np.tril(np.ones((n, n), bool)))[0])
    for y in outs[1:]:
        assert np.abs(y - outs[0]).max() > 1e-3


WRONG_TARGETS = {
    "hidden": (TinySpec(n_embd=32, n_head=2, n_head_kv=1, n_ff=64), "hidden size"),
    "vocab_size": (TinySpec(n_layer=4, extra_tokens=3), "vocabulary of"),
    "vocab_hash": (TinySpec(n_layer=4, renamed=True), "another vocabulary"),
    "taps": (TinySpec(n_layer=2), "taps layer 4|tap layer 4"),
}


@pytest.mark.parametrize("kind,wrong", [(k, w) for k in ("eagle12", "eagle3") for w in WRONG_TARGETS
                                        if (k, w) != ("eagle12", "taps")])  # EAGLE-1/2 heads have no taps
def test_head_refuses_wrong_target(tiny_target, tmp_path, wrong, kind):
    """A head made for another target raises ModelFileError naming both files and the mismatch,
    from DraftHead and from Engine (which reads an EAGLE-3 head's taps before the target loads)."""
    from pyeagle import Engine
    dims = target_dims(tiny_target)
    if kind == "eagle3":
        write_eagle3(tmp_path / "ck", **dims, taps=[0, 2, 4])
    else:
        write_eagle12(tmp_path / "ck", **dims)
    head = convert(tmp_path / "ck", tiny_target, tmp_path / "head.gguf")
    spec, what = WRONG_TARGETS[wrong]
    other = write_tiny_llama(tmp_path / "other.gguf", spec)
    pattern = rf"head\.gguf.*other\.gguf.*({what})"
    with pytest.raises(ModelFileError, match=pattern):
        DraftHead(str(head), Target(str(other), n_ctx=64), n_ctx=64, n_batch=8)
    with pytest.raises(ModelFileError, match=pattern):
        Engine(str(other), draft=str(head), n_ctx=64, n_threads=1)


def test_mutated_head_files_never_crash(tiny_target, tmp_path):
    """Truncated and bit-flipped head files raise (or load, if the flip hit weight data); never abort."""
    dims = target_dims(tiny_target)
    write_eagle12(tmp_path / "ck", **dims)
    good = convert(tmp_path / "ck", tiny_target, tmp_path / "head.gguf").read_bytes()
    tgt = Target(str(tiny_target), n_ctx=128, n_threads=1)
    rng = np.random.default_rng(0)
    bad = tmp_path / "bad.gguf"
    n_raised = 0
    for i in range(120):
        data = bytearray(good)
        if i % 3 == 0:
            data = data[: int(rng.integers(0, len(data)))]
        else:
            header_end = min(len(data), 4096)  # flips in the header/metadata reach the validators
            for _ in range(int(rng.integers(1, 4))):
                pos = int(rng.integers(0, header_end))
                data[pos] ^= 1 << int(rng.integers(0, 8))
        bad.write_bytes(bytes(data))
        try:
            DraftHead(str(bad), tgt, n_ctx=32, n_batch=8)
        except (ValueError, RuntimeError, FileNotFoundError):
            n_raised += 1
    assert n_raised > 40
    with pytest.raises(ModelFileError):
        bad.write_bytes(b"GGUF" + b"\0" * 10)
        DraftHead(str(bad), tgt, n_ctx=32, n_batch=8)
