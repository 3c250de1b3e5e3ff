"""Fixed-text tree tau (pyeagle/train/treetau.py) and the tree calibration by depth
(pyeagle.tree.depth_power): the Python tree is the engine's tree, round for round, with and without
a calibration; a calibration changes which drafts are verified, never the output."""
from __future__ import annotations

import gguf
import numpy as np
import pytest

from pyeagle import Engine, Target
from pyeagle._core import DraftHead, ModelFileError
from pyeagle.convert import ConversionError, convert, write_depth_powers
from pyeagle.train.treetau import answer_runs, fit_powers, tree_tau
from test_engine import EXACT, PROMPTS

FIXED = dict(n_top_k=3, n_depth=4, n_tree=10)


@pytest.fixture(scope="module")
def copy_head(tmp_path_factory, tiny_f32):
    """A random copy-input EAGLE-1/2 head, and the same head calibrated by depth."""
    from eagle_checkpoints import target_dims, write_eagle12
    d = tmp_path_factory.mktemp("treetau")
    write_eagle12(d / "h", **target_dims(tiny_f32), copy_key=4)
    plain = convert(d / "h", tiny_f32, d / "h.gguf")
    return plain, write_depth_powers(plain, d / "h_pw.gguf", [1.0, 2.5, 0.4])


def record(tiny_f32, ids: list[int], answer: list[int]) -> dict:
    """prompt + answer as `train data` records it: features from one batched pass."""
    t = Target(str(tiny_f32), **EXACT)
    t.features = True
    toks = ids + answer
    t.prefill(toks[:-1])
    feats = np.concatenate([t.hidden(), np.zeros((1, t.n_embd), np.float32)]).astype(np.float16)
    return {"tokens": np.asarray(toks, np.int32), "features": feats, "offsets": np.asarray([0, len(toks)]),
            "n_prompt": np.asarray([len(ids)]), "answer": np.asarray([0] * len(ids) + [1] * len(answer), np.uint8)}


def paths(tokens: list[int], parents: list[int]) -> set[tuple[int, ...]]:
    """A tree as the set of its root-to-node token paths (the order of equal-scored siblings aside)."""
    def path(i):
        return () if i < 0 else path(parents[i]) + (tokens[i],)
    return {path(i) for i in range(len(tokens))}


@pytest.mark.parametrize("which", [0, 1], ids=["uncalibrated", "calibrated"])
def test_fixed_text_trees_are_the_engines(tiny_f32, copy_head, which):
    head_file = copy_head[which]
    eng = Engine(str(tiny_f32), draft=str(head_file), **EXACT)
    plain = {p: eng.generate(p, max_tokens=40, draft=False).tokens for p in PROMPTS}
    t = Target(str(tiny_f32), **EXACT)
    head = DraftHead(str(head_file), t, 1024, 64)
    compared = exact = 0
    for p in PROMPTS:
        eng.reset()
        eng._core.set_trace(True)
        out = eng.generate(p, max_tokens=40, n_lookup=0, adaptive=False, **FIXED)
        assert out.tokens == plain[p]  # whatever the calibration, the output is plain decoding's
        n_prompt = len(eng.tokenize(p))
        engine_trees = [(n_past - n_prompt, paths(toks, par)) for n_past, kind, toks, par in eng._core.trace()]
        trace: list = []
        r = tree_tau(head, [record(tiny_f32, eng.tokenize(p), out.tokens)], FIXED["n_tree"], FIXED["n_depth"], FIXED["n_top_k"],
                     max_answer=40, trace=trace)
        mine = [(pos - n_prompt, paths(toks, par)) for pos, toks, par, _ in trace]
        assert [pos for pos, _ in mine] == [pos for pos, _ in engine_trees], f"prompt {p!r}"
        for (pos, a), (_, b), margin in zip(mine, engine_trees, [m for *_, m in trace]):
            # a random head's scores come close: the features of one batched pass (here) and of the
            # engine's verify passes differ in the last bits, which may swap the last node of a tie
            assert a == b or (margin < 1e-3 and len(a - b) == 1), f"prompt {p!r}, round at {pos}"
            exact += a == b
        assert (r.tokens, r.rounds) == ([out.stats.n_tokens - 1], [out.stats.n_passes])
        compared += len(mine)
    assert compared >= 40 and exact >= 0.9 * compared


def test_depth_powers_change_the_trees(tiny_f32, copy_head):
    plain_file, calibrated = copy_head
    t = Target(str(tiny_f32), **EXACT)
    gen = Engine(str(tiny_f32), draft=None, **EXACT)
    chunk = record(tiny_f32, gen.tokenize(PROMPTS[0]), gen.generate(PROMPTS[0], max_tokens=40, draft=False).tokens)
    trees = {}
    for name, f, pw in (("plain", plain_file, ()), ("file", calibrated, ()), ("given", plain_file, [1.0, 2.5, 0.4])):
        trace: list = []
        tree_tau(DraftHead(str(f), t, 1024, 64), [chunk], 10, 4, 3, pw, max_answer=40, trace=trace)
        trees[name] = trace
    assert trees["file"] == trees["given"] != trees["plain"]


def test_write_depth_powers_keeps_everything_else(tiny_f32, copy_head, tmp_path):
    plain_file, calibrated = copy_head
    a, b = gguf.GGUFReader(plain_file), gguf.GGUFReader(calibrated)
    assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
    for x, y in zip(a.tensors, b.tensors):
        assert x.tensor_type == y.tensor_type and np.array_equal(np.asarray(x.data), np.asarray(y.data))
    keys = lambda r: {k for k in r.fields if not k.startswith("GGUF.")}  # noqa: E731
    assert keys(b) == keys(a) | {"pyeagle.tree.depth_power"}
    assert list(b.fields["pyeagle.tree.depth_power"].contents()) == pytest.approx([1.0, 2.5, 0.4])
    t = Target(str(tiny_f32), **EXACT)
    assert DraftHead(str(calibrated), t, 256, 64).depth_powers == pytest.approx([1.0, 2.5, 0.4])
    assert DraftHead(str(plain_file), t, 256, 64).depth_powers == []
    # rewritten in place, and back to none
    again = write_depth_powers(calibrated, tmp_path / "x.gguf", [])
    assert "pyeagle.tree.depth_power" not in gguf.GGUFReader(again).fields
    with pytest.raises(ConversionError):
        write_depth_powers(plain_file, tmp_path / "bad.gguf", [1.0, 0.0])
    assert not (tmp_path / "bad.gguf").exists()


def test_the_runtime_refuses_a_bad_calibration(tiny_f32, copy_head, tmp_path):
    bad = write_depth_powers(copy_head[0], tmp_path / "bad.gguf", [1.0, 2.0])
    f = gguf.GGUFReader(bad, "r+").fields["pyeagle.tree.depth_power"]
    f.parts[f.data[1]][0] = -2.0  # edited in place: write_depth_powers itself refuses such values
    with pytest.raises(ModelFileError, match="depth_power"):
        DraftHead(str(bad), Target(str(tiny_f32), **EXACT), 256, 64)


def test_fit_powers_tries_no_calibration_and_keeps_the_best(tiny_f32, copy_head):
    t = Target(str(tiny_f32), **EXACT)
    gen = Engine(str(tiny_f32), draft=None, **EXACT)
    chunks = [record(tiny_f32, gen.tokenize(p), gen.generate(p, max_tokens=24, draft=False).tokens) for p in PROMPTS[:2]]
    best, tried = fit_powers(DraftHead(str(copy_head[0]), t, 1024, 64), chunks, 6, 3, 3, max_answer=24,
                             log=lambda s: None)
    assert len(best) == 3 and best[0] == 1.0
    assert any(all(a == 1.0 for a in p) for p, _ in tried)
    assert max(tau for _, tau in tried) == pytest.approx(next(tau for p, tau in tried if p == best))


def test_answer_runs():
    assert answer_runs(np.asarray([0, 1, 1, 0, 0, 1, 0, 1], np.uint8)) == [(1, 3), (5, 6), (7, 8)]
    assert answer_runs(np.zeros(3, np.uint8)) == []
