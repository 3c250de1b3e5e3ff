"""The target runtime: tokenizer, prefill, one-pass tree verification, commit, limits."""
from __future__ import annotations

import numpy as np
import pytest

from pyeagle import ContextFullError, ModelFileError, Target

PROMPT = "the tree of code is fast and the model can write"


def random_tree(rng: np.random.Generator, n: int, n_vocab: int, max_width: int) -> tuple[list[int], list[int]]:
    """A random tree of n nodes in depth order: node 0 is the root, parent[i] < i."""
    parents = [-1]
    depth = [0]
    frontier = [0]
    while len(parents) < n:
        nxt = []
        for p in frontier:
            for _ in range(int(rng.integers(1, max_width + 1))):
                if len(parents) == n:
                    break
                parents.append(p)
                depth.append(depth[p] + 1)
                nxt.append(len(parents) - 1)
        frontier = nxt or [len(parents) - 1]
    tokens = [int(t) for t in rng.integers(5, n_vocab, size=n)]
    return tokens, parents


def root_path(parents: list[int], i: int) -> list[int]:
    path = []
    while i >= 0:
        path.append(i)
        i = parents[i]
    return path[::-1]


def test_vocab_roundtrip(tiny_f32):
    t = Target(str(tiny_f32), n_ctx=256, n_threads=1)
    ids = t.tokenize("the model can write code", add_special=True)
    assert ids[0] == t.bos
    assert t.detokenize(ids[1:]).decode() == "the model can write code"
    # UTF-8 through byte-fallback tokens; a multi-byte character splits across tokens
    text = "héllo ✓ 🦅"
    ids = t.tokenize(text, add_special=False)
    assert b"".join(t.token_to_piece(i) for i in ids).decode() == " " + text or \
        b"".join(t.token_to_piece(i) for i in ids).decode().strip() == text
    pieces = [t.token_to_piece(i) for i in ids]
    assert any(len(p) == 1 and p[0] >= 0x80 for p in pieces), "expected split UTF-8 pieces"
    # special tokens parse only when asked
    assert t.tokenize("<|im_end|>", add_special=False, parse_special=True) == [4]
    assert 4 not in t.tokenize("<|im_end|>", add_special=False, parse_special=False)
    assert t.is_eog(2) and t.is_eog(4) and not t.is_eog(10)
    assert "im_start" in t.chat_template
    assert (t.arch, t.n_layer, t.n_embd) == ("llama", 2, 64)


# (model, flash_attn, kv_f32, atol on logits and features). Measured max |difference| between a
# node in a tree and the same path decoded one token at a time (tests/test_target.py itself):
# f32 weights + no flash attention + f32 KV: 6e-6 (llamafile's sgemm for batches > 1 sums in
# another order); with flash attention on, masked tree cells change its tiling: ~2e-2; q8_0
# quantizes activations per batch shape: ~5e-2.
EXACTNESS = [
    ("tiny_f32", 0, True, 1e-4),
    ("tiny_f32", -1, False, 5e-2),
    ("tiny_f16", -1, False, 5e-2),
    ("tiny_q8", -1, False, 2e-1),
]


@pytest.mark.parametrize("model,flash_attn,kv_f32,atol", EXACTNESS)
def test_verify_tree_equals_each_path_alone(model, flash_attn, kv_f32, atol, request):
    """Every node's logits and feature equal those from decoding its root path on its own."""
    path = str(request.getfixturevalue(model))
    kw = dict(n_ctx=512, n_threads=1, n_batch=128, flash_attn=flash_attn, kv_f32=kv_f32)
    tree_t = Target(path, n_seq_max=64, **kw)
    ref = Target(path, **kw)
    tree_t.features = ref.features = True
    prefix = tree_t.tokenize(PROMPT)
    tree_t.prefill(prefix)
    rng = np.random.default_rng(1)
    for n, width in [(1, 1), (2, 1), (5, 1), (8, 2), (17, 3), (40, 4), (64, 8)]:
        tokens, parents = random_tree(rng, n, tree_t.n_vocab, width)
        tree_t.verify(tokens, parents)
        logits, hidden = tree_t.logits(), tree_t.hidden()
        assert logits.shape == (n, tree_t.n_vocab) and hidden.shape == (n, tree_t.n_embd)
        for i in range(n):
            ref.truncate(0)
            ref.prefill(prefix)
            for node in root_path(parents, i):  # one token at a time, like plain decoding
                ref.decode(tokens[node])
            np.testing.assert_allclose(logits[i], ref.last_logits(), rtol=0, atol=atol,
                                       err_msg=f"logits of node {i} in a tree of {n}")
            np.testing.assert_allclose(hidden[i], ref.hidden()[-1], rtol=0, atol=atol,
                                       err_msg=f"feature of node {i} in a tree of {n}")
        tree_t.commit([0])          # keep only the root, so the prefix grows by one
        prefix = prefix + [tokens[0]]
        assert tree_t.tokens == prefix


def test_commit_equals_plain_decoding(tiny_f32):
    kw = dict(n_ctx=512, n_threads=1, flash_attn=0, kv_f32=True)
    t = Target(str(tiny_f32), n_batch=64, n_seq_max=32, **kw)
    ref = Target(str(tiny_f32), **kw)
    prefix = t.tokenize(PROMPT)
    t.prefill(prefix)
    rng = np.random.default_rng(2)
    committed = list(prefix)
    for round_ in range(12):
        tokens, parents = random_tree(rng, int(rng.integers(1, 40)), t.n_vocab, 3)
        t.verify(tokens, parents)
        node = int(rng.integers(0, len(tokens)))
        path = root_path(parents, node)
        t.commit(path)
        committed += [tokens[j] for j in path]
        assert t.tokens == committed and t.n_past == len(committed)
        nxt = int(rng.integers(5, t.n_vocab))
        t.decode(nxt)
        committed.append(nxt)
        ref.truncate(0)
        for tok in committed:
            ref.decode(tok)
        np.testing.assert_allclose(t.last_logits(), ref.last_logits(), rtol=0, atol=1e-4, err_msg=f"round {round_}")


def test_discard_tree_and_prefix_reuse(tiny_f32):
    t = Target(str(tiny_f32), n_ctx=256, n_threads=1)
    ids = t.tokenize(PROMPT)
    t.prefill(ids)
    before = t.last_logits().copy()
    t.verify([10, 11, 12], [-1, 0, 0])
    t.discard_tree()
    assert t.n_past == len(ids)
    t.truncate(len(ids) - 1)
    t.decode(ids[-1])  # one token now, in the prefill batch before: kernel noise only
    np.testing.assert_allclose(t.last_logits(), before, rtol=0, atol=1e-3)


def test_features_off_gives_same_logits(tiny_f32):
    a = Target(str(tiny_f32), n_ctx=256, n_threads=1)
    b = Target(str(tiny_f32), n_ctx=256, n_threads=1)
    b.features = True
    ids = a.tokenize(PROMPT)
    a.prefill(ids)
    b.prefill(ids)
    # features on makes every token an output: the LM head runs as a GEMM instead of a GEMV
    np.testing.assert_allclose(a.last_logits(), b.last_logits(), rtol=0, atol=1e-4)
    assert a.hidden().shape == (0, a.n_embd) and b.hidden().shape == (len(ids), b.n_embd)


def test_layer_taps_including_the_final_layers_output(tiny_f32):
    """Tap l is the input of layer l; tap n_layer is the last layer's output before the final norm
    (llama.cpp has no layer input for it: pyeagle reads it from the graph), in prefill and verify."""
    import gguf
    t = Target(str(tiny_f32), n_ctx=256, n_threads=1, tap_layers=[0, 1, 2])
    assert t.n_layer == 2
    t.features = True
    ids = t.tokenize(PROMPT)
    r = gguf.GGUFReader(str(tiny_f32))
    w = {x.name: np.asarray(x.data, dtype=np.float64) for x in r.tensors}
    h = t.n_embd

    def check(n_rows, tokens):
        taps, hidden = t.taps(), t.hidden()
        assert taps.shape == (n_rows, 3 * h)
        np.testing.assert_allclose(taps[:, :h], w["token_embd.weight"][tokens], rtol=0, atol=1e-6)
        final = taps[:, 2 * h:].astype(np.float64)
        normed = final / np.sqrt(np.mean(final ** 2, -1, keepdims=True) + 1e-5) * w["output_norm.weight"]
        np.testing.assert_allclose(normed, hidden, rtol=0, atol=1e-4)
        assert not np.allclose(taps[:, h:2 * h], final)  # layer 1's input is not the final output

    t.prefill(ids)
    check(len(ids), ids)
    t.verify([5, 6, 7], [-1, 0, 0])
    check(3, [5, 6, 7])
    t.commit([0, 1])


def test_taps_only_features_need_no_output_rows(tiny_f32):
    """Layer-input taps alone (EAGLE-3 without the final tap) come for every token while only the
    last prefill token is an output: the same taps, the same logits, no hidden rows."""
    ids = Target(str(tiny_f32), n_ctx=64).tokenize(PROMPT)
    all_rows = Target(str(tiny_f32), n_ctx=256, n_threads=1, tap_layers=[0, 1, 2])
    taps_only = Target(str(tiny_f32), n_ctx=256, n_threads=1, tap_layers=[0, 1, 1])
    for t in (all_rows, taps_only):
        t.features = True
        t.prefill(ids)
    h = all_rows.n_embd
    assert taps_only.hidden().shape == (0, h) and all_rows.hidden().shape == (len(ids), h)
    np.testing.assert_allclose(taps_only.taps()[:, :2 * h], all_rows.taps()[:, :2 * h], rtol=0, atol=1e-5)
    np.testing.assert_allclose(taps_only.last_logits(), all_rows.last_logits(), rtol=0, atol=1e-4)


def test_long_prefill_is_chunked(tiny_f32):
    kw = dict(n_ctx=512, n_threads=1, flash_attn=0, kv_f32=True)
    t = Target(str(tiny_f32), n_batch=16, **kw)
    ref = Target(str(tiny_f32), n_batch=256, **kw)
    t.features = ref.features = True
    ids = t.tokenize(" ".join([PROMPT] * 6))
    assert len(ids) > 40
    t.prefill(ids)
    ref.prefill(ids)
    np.testing.assert_allclose(t.hidden(), ref.hidden(), atol=1e-5)
    np.testing.assert_allclose(t.last_logits(), ref.last_logits(), atol=1e-4)
    # the chunks before the last need hidden states only: their graphs stop before the LM head
    assert len(ids) > 128
    assert t.n_head_skipped == len(ids) - ((len(ids) - 1) % 16 + 1) and ref.n_head_skipped == 128
    t.truncate(0)
    t.features = False
    t.prefill(ids)  # without features only the last token is an output: nothing to skip
    assert t.n_head_skipped == 0
    np.testing.assert_allclose(t.last_logits(), ref.last_logits(), atol=1e-4)


def test_prefill_last_logits_from_own_lm_head(tiny_f32):
    """With features on, every prompt row is an output for its hidden state; after a first prefill
    showed its own LM head over the last row equal to llama.cpp's, no prompt row pays the LM head:
    the same hidden states, the same logits as a plain prefill."""
    kw = dict(n_ctx=256, n_threads=1)
    t, ref = Target(str(tiny_f32), **kw), Target(str(tiny_f32), **kw)
    ids = t.tokenize(PROMPT)
    t.features = True
    t.prefill(ids)  # the first: llama.cpp's logits, compared with its own
    assert t.n_head_skipped == 0 and t.own_last_logits
    first = np.array(t.last_logits())
    t.truncate(0)
    t.prefill(ids)
    assert t.n_head_skipped == len(ids)
    ref.prefill(ids)  # features off: only the last row is an output
    np.testing.assert_allclose(t.last_logits(), ref.last_logits(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(t.last_logits(), first, rtol=0, atol=1e-4)
    ref.features = True
    ref.prefill(ids[-1:])  # a one-row prefill keeps llama.cpp's LM head (it is one row)
    assert ref.n_head_skipped == 0


# --- bad input: an exception naming the file and the reason, the process alive -------------

def test_missing_file(tmp_path):
    p = tmp_path / "nope.gguf"
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        Target(str(p))


def test_not_a_gguf(tmp_path):
    p = tmp_path / "text.gguf"
    p.write_text("hello, I am not a model\n" * 10)
    with pytest.raises(ModelFileError, match=r"text\.gguf.*not a GGUF"):
        Target(str(p))


def test_duplicate_token_strings_are_refused_not_aborted(tmp_path):
    """llama.cpp aborts the process on a vocabulary with two equal strings; pyeagle refuses the file."""
    from tiny_gguf import TinySpec, write_tiny_llama
    bad = write_tiny_llama(tmp_path / "dup.gguf", TinySpec(duplicate=True))
    with pytest.raises(ModelFileError, match=r"dup\.gguf.*same string"):
        Target(str(bad), n_ctx=64)


@pytest.mark.parametrize("keep", [0.001, 0.3, 0.9, 0.999])
def test_truncated_gguf(tiny_q8, tmp_path, keep):
    data = tiny_q8.read_bytes()
    p = tmp_path / "cut.gguf"
    p.write_bytes(data[: max(4, int(len(data) * keep))])
    with pytest.raises(ModelFileError, match=r"cut\.gguf.*(truncated|corrupt)"):
        Target(str(p))


def test_tree_over_limits(tiny_f32):
    t = Target(str(tiny_f32), n_ctx=256, n_threads=1, n_batch=8, n_seq_max=4)
    t.prefill(t.tokenize(PROMPT))
    with pytest.raises(ValueError, match="exceeds n_batch"):
        t.verify(list(range(10, 19)), [-1] + [0] * 8)
    with pytest.raises(ValueError, match="leaves > n_seq_max"):
        t.verify(list(range(10, 16)), [-1, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="parent"):
        t.verify([10, 11, 12], [-1, 2, 0])
    with pytest.raises(ValueError, match="root"):
        t.verify([10, 11], [0, 0])
    with pytest.raises(ValueError, match="vocabulary"):
        t.verify([10, 10**6], [-1, 0])
    with pytest.raises(ValueError, match="differ in length"):
        t.verify([10, 11], [-1])
    # still usable
    t.verify([10, 11, 12], [-1, 0, 0])
    t.commit([0, 2])
    with pytest.raises(ValueError, match="not a child"):
        t.verify([10, 11], [-1, 0])
        t.commit([0, 5])


def test_context_full(tiny_f32):
    t = Target(str(tiny_f32), n_ctx=32, n_threads=1)
    n_ctx = t.n_ctx  # llama.cpp may round n_ctx up
    ids = t.tokenize(" ".join([PROMPT] * (n_ctx // 8)))
    assert len(ids) > n_ctx
    with pytest.raises(ContextFullError, match="context full"):
        t.prefill(ids)
    assert t.n_past == 0
    t.prefill(ids[: n_ctx - 2])
    with pytest.raises(ContextFullError):
        t.verify([10, 11, 12], [-1, 0, 1])
    t.decode(10)
    t.decode(11)
    with pytest.raises(ContextFullError):
        t.decode(12)
    assert t.n_past == n_ctx
    t.truncate(16)
    t.decode(12)
    assert t.n_past == 17
