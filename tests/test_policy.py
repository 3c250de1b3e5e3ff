"""The round policy (cpp/src/budget.h): whatever it chooses, a plain step, a prompt-lookup chain
alone or a head tree, output is unchanged; a head that sat out rounds catches up to exactly the
state of one that never did; the size rule picks small trees on a steep cost curve and big ones on
a flat (GPU-like) one.

Forced round kinds (a test hook) make the mixes deterministic; the unforced runs let the policy
choose from its own timings, which vary from run to run, and must be exact all the same.
"""
from __future__ import annotations

import numpy as np
import pytest

from pyeagle import DraftHead, Engine, Target, _core
from test_engine import EXACT, PROMPTS, REPEAT, TargetOracle, random_heads  # noqa: F401 (fixture)

PATTERNS = [[], ["lookup"], ["plain", "head"], ["lookup", "head", "plain"], ["head", "lookup"]]


@pytest.fixture(scope="module")
def reference(tiny_f32):
    eng = Engine(str(tiny_f32), draft=None, **EXACT)
    return {p: eng.generate(p, max_tokens=40, draft=False).tokens for p in [*PROMPTS, REPEAT]}


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: "+".join(p) or "policy")
@pytest.mark.parametrize("kind", ["eagle12", "eagle3", "oracle"])
def test_greedy_equals_plain_whatever_the_rounds(tiny_f32, reference, random_heads, kind, pattern):
    if kind == "oracle":
        eng = Engine(str(tiny_f32), draft=None, **EXACT)
        eng._core.set_draft_oracle(TargetOracle(str(tiny_f32), noise=1.0))
    else:
        eng = Engine(str(tiny_f32), draft=str(random_heads[kind]), **EXACT)
    eng._core.set_forced_kinds(pattern)
    kinds = {"plain": 0, "lookup": 0, "head": 0}
    for p in [*PROMPTS, REPEAT]:
        out = eng.generate(p, max_tokens=40, n_tree=16, n_lookup=16)
        assert out.tokens == reference[p], f"prompt {p!r}"
        s = out.stats
        assert sum(s.rounds_by_kind.values()) == s.n_passes
        assert sum(s.tokens_by_kind.values()) == s.n_tokens - 1  # the prefill produced the first token
        for k, n in s.rounds_by_kind.items():
            kinds[k] += n
    for k in pattern:
        assert kinds[k] > 0, f"no {k} rounds ran: {kinds}"
    if pattern == ["lookup"]:
        assert kinds["head"] == kinds["plain"] == 0


def test_lookup_only_rounds_copy_repeats(tiny_f32, reference, random_heads):
    eng = Engine(str(tiny_f32), draft=str(random_heads["eagle12"]), **EXACT)
    eng._core.set_forced_kinds(["lookup"])
    out = eng.generate(REPEAT, max_tokens=40, n_tree=16, n_lookup=16)
    assert out.tokens == reference[REPEAT]
    assert out.stats.n_lookup_accepted > 0 and out.stats.tau > 1.0


@pytest.mark.parametrize("drafter,pattern", [("oracle", ["head"]), ("oracle", []), ("eagle12", ["lookup"])],
                         ids=["oracle-head", "oracle-policy", "lookup"])
def test_no_draft_reaches_past_max_tokens(tiny_f32, reference, random_heads, drafter, pattern):
    """A round emits its accepted drafts and one token more, so a draft deeper than the tokens still
    wanted minus one is verified for nothing: every round's tree stays within that depth. The
    oracle's drafts are all right, so its rounds draft as deep as the budget lets them."""
    if drafter == "oracle":
        eng = Engine(str(tiny_f32), draft=None, **EXACT)
        eng._core.set_draft_oracle(TargetOracle(str(tiny_f32)))
    else:
        eng = Engine(str(tiny_f32), draft=str(random_heads[drafter]), **EXACT)
    eng._core.set_forced_kinds(pattern)
    eng._core.set_trace(True)
    max_tokens, cut = 15, 0
    n_prompt = len(eng.tokenize(REPEAT))
    out = eng.generate(REPEAT, max_tokens=max_tokens, n_tree=16, n_lookup=16, n_depth=8, n_top_k=2,
                       adaptive=not pattern)
    assert out.tokens == reference[REPEAT][:max_tokens]
    for n_past, kind, toks, par in eng._core.trace():
        depth = [0] * len(par)
        for i in range(1, len(par)):
            depth[i] = depth[par[i]] + 1
        left = max_tokens - (n_past - n_prompt + 1)  # the round's root is emitted, not yet in the KV
        assert max(depth) <= left - 1, (kind, left, depth)
        cut += 0 < max(depth) == left - 1 < 8
    if pattern == ["head"]:
        assert cut > 0  # a round near the end drafted exactly as deep as the budget allowed


def test_a_head_that_sat_out_drafts_what_one_that_never_did_drafts(tiny_f32, random_heads):
    """Rounds without the head leave its KV behind; the next head round catches up in one batched
    prefix pass. Its trees must equal those of an engine whose head ran every round, at the same
    position (fixed trees, lookup off, so that nothing but the head's state shapes them)."""
    trees = {}
    for name, pattern in (("always", ["head"]), ("sat_out", ["lookup", "plain", "head", "plain", "plain", "head"])):
        eng = Engine(str(tiny_f32), draft=str(random_heads["eagle12"]), **EXACT)
        eng._core.set_forced_kinds(pattern)
        eng._core.set_trace(True)
        for p in PROMPTS:
            eng.reset()
            eng.generate(p, max_tokens=40, n_top_k=3, n_depth=4, n_tree=10, n_lookup=0, adaptive=False)
        trees[name] = [(i, n_past, toks, par) for i, (n_past, k, toks, par) in enumerate(eng._core.trace()) if k == "head"]
    # both engines decode the same tokens (greedy, exact); prompts are told apart by trace order
    always = {}
    prompt = 0
    for i, n_past, toks, par in trees["always"]:
        if always and n_past < max(k[1] for k in always if k[0] == prompt):
            prompt += 1
        always[(prompt, n_past)] = (toks, par)
    compared, prompt, last = 0, 0, -1
    for i, n_past, toks, par in trees["sat_out"]:
        if n_past < last:
            prompt += 1
        last = n_past
        if (prompt, n_past) in always:
            assert (toks, par) == always[(prompt, n_past)], f"prompt {prompt}, n_past {n_past}"
            compared += 1
    assert compared >= 10


def test_head_catch_up_in_one_pass_equals_step_by_step(tiny_f32, random_heads):
    t = Target(str(tiny_f32), **EXACT)
    t.features = True
    ids = t.tokenize(PROMPTS[0]) + t.tokenize(PROMPTS[1], add_special=False)
    t.prefill(ids)
    feats = t.hidden()
    nxt = ids[1:] + [ids[0]]
    one = DraftHead(str(random_heads["eagle12"]), t, 256, 64)
    one.prefix(nxt, feats, 0)
    steps = DraftHead(str(random_heads["eagle12"]), t, 256, 64)
    for a, b in [(0, 3), (3, 4), (4, 9), (9, len(ids))]:
        steps.prefix(nxt[a:b], feats[a:b], a)
    np.testing.assert_allclose(steps.logits()[-1], one.logits()[-1], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(steps.y()[-1], one.y()[-1], rtol=1e-4, atol=1e-4)


# A CPU like this project's (ms: a verify of 3 tokens costs 2.2 single steps) and a GPU's, where 64
# tokens cost about what one does.
CPU = [(1, 7.6), (2, 14.2), (3, 16.3), (4, 19.2), (6, 23.9), (9, 28.7), (13, 34.6), (19, 43.4), (28, 55.6),
       (42, 81.8), (63, 116.8)]
GPU = [(1, 10.0), (8, 10.2), (16, 10.4), (32, 10.9), (64, 11.8)]


def test_tree_size_follows_the_measured_cost_curve():
    unsure = [0.3] * 3 + [0.09] * 9 + [0.027] * 27 + [0.008] * 21  # a bushy tree of so-so drafts
    m, expect, seconds = _core.best_size(unsure, 0.0, CPU, 60, 1 / 7.6)
    assert m == 0 and expect == 1.0 and seconds == pytest.approx(7.6)  # a plain step
    m, _, _ = _core.best_size(unsure, 0.0, GPU, 60, 1 / 10.0)
    assert m >= 30  # nearly free nodes: all but the most hopeless
    repeat = [0.95 ** (j + 1) for j in range(40)]  # a copy inside a repeat
    m, expect, seconds = _core.best_size(repeat, 0.0, CPU, 40, 1 / 7.6)
    assert 8 <= m <= 40 and expect / seconds > 1 / 7.6
    # drafting time already spent does not change the choice; a higher price of time shortens the chain
    assert _core.best_size(repeat, 5.0, CPU, 40, 1 / 7.6)[0] == m
    assert _core.best_size(repeat, 0.0, CPU, 40, 1 / 3.0)[0] < m
    assert _core.best_size(repeat, 0.0, CPU, 3, 1 / 7.6)[0] <= 3  # the cap holds


def test_a_curve_measured_under_load_falls_back_into_shape():
    # measured while another process held the cores (every pass twice as slow), then the machine is
    # idle: plain steps alone (larger sizes, priced out, are never observed) must bring the price of a
    # draft back to what it is, or the engine never drafts again
    busy = [(n, 2 * s) for n, s in CPU]
    after = _core.cost_after(busy, [(1, 7.6)] * 60, [1, 2, 4, 9, 63, 80])
    want = [7.6, 14.2, 19.2, 28.7, 116.8, 116.8 * 80 / 63]
    np.testing.assert_allclose(after, want, rtol=0.01)
    # a larger pass corrects its own point against that level, not the others
    after = _core.cost_after(CPU, [(1, 7.6)] * 10 + [(4, 2 * 19.2)] * 60, [1, 2, 4, 6])
    np.testing.assert_allclose(after, [7.6, 14.2, 2 * 19.2, 23.9], rtol=0.01)
    # one slow pass moves the curve a little, not all the way
    after = _core.cost_after(CPU, [(1, 100.0)], [1, 2])
    assert 7.6 < after[0] < 1.2 * 7.6 and after[1] / after[0] == pytest.approx(14.2 / 7.6)


def test_a_longer_context_rescales_the_curve_from_a_few_passes():
    """Attention grows with the context, by more for bigger passes: passes timed at a few sizes move
    every point by the ratio now / before, interpolated in n between them, flat beyond them; the
    step shape between anchors (ggml's blocks of 4) stays."""
    grid = dict(CPU)
    anchors = [(1, 1.2 * grid[1]), (4, 1.5 * grid[4]), (13, 2.0 * grid[13])]
    got = _core.cost_after(CPU, [], [1, 2, 4, 6, 13, 63], rescaled=anchors)
    want = [1.2 * grid[1], (1.2 + 0.3 / 3) * grid[2], 1.5 * grid[4], (1.5 + 0.5 * 2 / 9) * grid[6],
            2.0 * grid[13], 2.0 * grid[63]]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # no anchors: nothing moves
    np.testing.assert_allclose(_core.cost_after(CPU, [], [1, 9], rescaled=[]), [grid[1], grid[9]], rtol=1e-6)


def test_suffix_lookup_votes_for_continuations():
    assert _core.suffix_lookup([1, 2, 3], 8, 4, 8) == ([], [], [], 0, 0)
    # "1 2" occurred three times: followed by 3, 3 and 4; the tree counts the votes
    toks, parents, counts, n_occ, n_match = _core.suffix_lookup([1, 2, 3, 5, 1, 2, 3, 6, 1, 2, 4, 1, 2], 8, 2, 8)
    assert (n_occ, n_match) == (3, 2)
    nodes = {(t, parents[i]): counts[i] for i, t in enumerate(toks)}
    assert nodes[(3, -1)] == 2 and nodes[(4, -1)] == 1
    assert all(p < i for i, p in enumerate(parents))  # parents first
    # at most n_nodes, the most travelled (ties: shallower): 3 (2 votes), then 4 before 3's children
    toks, parents, counts, _, _ = _core.suffix_lookup([1, 2, 3, 5, 1, 2, 3, 6, 1, 2, 4, 1, 2], 8, 2, 2)
    assert (toks, parents, counts) == ([3, 4], [-1, -1], [2, 1])
    # a single occurrence is a chain, unrolled past the end like prompt lookup
    assert _core.suffix_lookup([7, 8, 7], 8, 4, 8)[0] == [8, 7, 8, 7]


@pytest.mark.parametrize("pattern", [[], ["lookup"], ["lookup", "head"]], ids=lambda p: "+".join(p) or "policy")
def test_suffix_tree_drafts_keep_greedy_exact(tiny_f32, reference, random_heads, pattern):
    eng = Engine(str(tiny_f32), draft=str(random_heads["eagle12"]), **EXACT)
    eng._core.set_forced_kinds(pattern)
    accepted = 0
    for p in [*PROMPTS, REPEAT]:
        out = eng.generate(p, max_tokens=40, n_tree=16, n_lookup=16, suffix=True)
        assert out.tokens == reference[p], f"prompt {p!r}"
        assert out.stats.n_lookup_accepted <= out.stats.n_lookup_drafted
        accepted += out.stats.n_lookup_accepted
    if pattern:
        assert accepted > 0


@pytest.mark.parametrize("suffix", [False, True])
@pytest.mark.parametrize("with_head", [False, True])
def test_copy_only_drafting_needs_no_head_and_keeps_greedy_exact(tiny_f32, reference, random_heads, with_head, suffix):
    eng = Engine(str(tiny_f32), draft=str(random_heads["eagle12"]) if with_head else None, **EXACT)
    eng._core.set_forced_kinds(["lookup"])  # every round verifies its copy: deterministic, and it drafts
    drafted = 0
    for p in [*PROMPTS, REPEAT]:
        out = eng.generate(p, max_tokens=40, n_tree=16, n_lookup=16, copy_only=True, suffix=suffix)
        assert out.tokens == reference[p], f"prompt {p!r}"
        assert out.stats.rounds_by_kind["head"] == 0
        drafted += out.stats.n_lookup_drafted
    assert drafted > 0
    # without copy_only a head-less engine decodes plainly, as before
    assert Engine(str(tiny_f32), draft=None, **EXACT).generate(REPEAT, max_tokens=20).stats.n_drafted == 0


def test_store_finds_the_longest_match_in_earlier_outputs():
    outs = [[1, 2, 3, 4, 5, 6], [9, 2, 3, 4, 7, 8], [2, 3, 4, 7, 9]]
    # "2 3 4" occurs in all three; "9 2 3 4" only in the second: the longest match wins
    assert _core.store_find(outs, [0, 9, 2, 3, 4], 32, 8) == ([7, 8], 4, 1, 1)
    # equal matches: the most recent; of the three "2 3 4", two go on with 7
    toks, n_match, n_same, n_agree = _core.store_find(outs, [5, 2, 3, 4], 32, 8)
    assert (toks, n_match, n_same, n_agree) == ([7, 9], 3, 3, 2)
    # a continuation stops at the end of its output, and at n_len
    assert _core.store_find(outs, [2, 3, 4], 32, 1) == ([7], 3, 3, 2)
    # fewer than three tokens in common: nothing (the index is keyed by three)
    assert _core.store_find(outs, [8, 3, 4], 32, 8)[0] == []
    assert _core.store_find([], [2, 3, 4], 32, 8)[0] == []
    assert _core.store_find([[2, 3]], [2, 3], 32, 8)[0] == []  # too short to index


def test_a_remembered_output_is_copied_and_greedy_stays_exact(tiny_f32, reference):
    """The store: outputs of earlier generations are copy drafts for later ones. Drafting the
    remembered answer to the same prompt copies most of it; output never changes."""
    eng = Engine(str(tiny_f32), draft=None, store=True, **EXACT)
    eng._core.set_forced_kinds(["lookup"])
    p = PROMPTS[0]
    kw = dict(max_tokens=40, n_tree=16, n_lookup=16, copy_only=True)
    fresh = eng.generate(p, remember=False, **kw)
    assert eng.n_remembered == 0
    eng.remember(reference[p])
    assert eng.n_remembered == len(reference[p])
    again = eng.generate(p, remember=False, **kw)
    # the store off (and prompt lookup, which the store otherwise implies over the default suffix
    # tree): nothing copied from it, nothing kept
    off = eng.generate(p, store=False, suffix=False, **kw)
    assert eng.n_remembered == len(reference[p])
    assert fresh.tokens == again.tokens == off.tokens == reference[p]
    assert again.stats.n_lookup_accepted > fresh.stats.n_lookup_accepted + 20
    assert again.stats.n_passes < fresh.stats.n_passes / 2
    assert off.stats.n_lookup_accepted == fresh.stats.n_lookup_accepted
    eng.forget()
    assert eng.n_remembered == 0
    assert eng.generate(p, **kw).stats.n_lookup_accepted == fresh.stats.n_lookup_accepted
    assert eng.n_remembered == len(reference[p])  # with the store on, a generation keeps its output
    with pytest.raises(ValueError, match="outside the vocabulary"):
        eng.remember([0, 1, 10**6])
    # off by default: an engine keeps nothing
    plain_default = Engine(str(tiny_f32), draft=None, **EXACT)
    plain_default.generate(p, **kw)
    assert plain_default.n_remembered == 0


@pytest.mark.parametrize("pattern", [[], ["lookup", "head"]], ids=lambda p: "+".join(p) or "policy")
def test_store_drafts_keep_greedy_exact_with_the_head(tiny_f32, reference, random_heads, pattern):
    eng = Engine(str(tiny_f32), draft=str(random_heads["eagle12"]), store=True, **EXACT)
    eng._core.set_forced_kinds(pattern)
    for p in [*PROMPTS, REPEAT]:
        eng.remember(reference[p][5:])  # part of each answer, as if an earlier one had said it
    for p in [*PROMPTS, REPEAT]:
        assert eng.generate(p, max_tokens=40, n_tree=16, n_lookup=16).tokens == reference[p], f"prompt {p!r}"
