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


def run_both(head: DraftHead, ref: EagleRef, tgt: Target, eagle3: bool, rng: np.random.Generator):
    """A committed prefix of 7 pairs, then two tree steps: 3 children of the prefix, then 2
    children of the first and one of the third. Returns [(ggml, reference)] pairs to compare."""
    n_pre, h = 7, head.n_embd
    toks = [int(t) for t in rng.integers(5, tgt.n_vocab, n_pre + 6)]
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


@pytest.mark.parametrize("kind", ["eagle12", "eagle12_nobias_noembed", "eagle12_reduced", "eagle3"])
@pytest.mark.parametrize("outtype,tol", [("f32", 2e-3), ("f16", 6e-2)])
def test_forward_matches_numpy_reference(tiny_target, tmp_path, kind, outtype, tol):
    dims = target_dims(tiny_target)
    ck = tmp_path / "ckpt"
    if kind == "eagle3":
        write_eagle3(ck, **dims, taps=[0, 2, 3])
    elif kind == "eagle12_reduced":
        write_eagle12(ck, **dims, draft_vocab=100)
    elif kind == "eagle12_nobias_noembed":
        write_eagle12(ck, **dims, fc_bias=False, embed=False)
    else:
        write_eagle12(ck, **dims, qkv_bias=True)
    out = convert(ck, tiny_target, tmp_path / "head.gguf", outtype=outtype)
    tgt = Target(str(tiny_target), n_ctx=256, n_threads=1)
    head = DraftHead(str(out), tgt, n_ctx=64, n_batch=16)
    assert head.eagle3 == (kind == "eagle3")
    ref = EagleRef(ck, tiny_target)
    for got, want in run_both(head, ref, tgt, kind == "eagle3", np.random.default_rng(0)):
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got, want, rtol=0, atol=tol * scale)
    # rollback drops the tree cells; the prefix stays
    head.rollback()
    assert head.n_kv == head.n_committed == 7


def test_head_refuses_wrong_target(tiny_target, tmp_path):
    dims = target_dims(tiny_target)
    write_eagle12(tmp_path / "ck", **dims)
    out = convert(tmp_path / "ck", tiny_target, tmp_path / "head.gguf")
    other = write_tiny_llama(tmp_path / "other.gguf", TinySpec(n_embd=32, n_head=2, n_head_kv=1, n_ff=64))
    with pytest.raises(ValueError, match="hidden"):
        DraftHead(str(out), Target(str(other), n_ctx=64), n_ctx=64, n_batch=8)


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
