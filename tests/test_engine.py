"""The speculative engine: greedy output equals plain decoding; sampling keeps the distribution;
stops inside an accepted path; cancellation.

Exactness runs on the tiny f32 model with flash attention off and an f32 KV cache: there batched
and single-token logits differ by ~6e-6 at most (tests/test_target.py), far below any argmax
margin these seeds produce, so a difference in tokens is a bug.
"""
from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from pyeagle import Engine, Target, on_compute_thread
from pyeagle.engine import _ComputeThread

EXACT = dict(n_ctx=1024, n_threads=1, flash_attn=0, kv_f32=True)
PROMPTS = ["the tree of code", "write a fast model", "<|im_start|>user\nhow do you do<|im_end|>\n", "one two"]


def log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max()
    return x - m - math.log(np.exp(x - m).sum())


class TargetOracle:
    """Drafts taken from the target itself: the right answer at every node (test hook)."""

    def __init__(self, path: str, noise: float = 0.0, seed: int = 0):
        self.t = Target(path, **{k: v for k, v in EXACT.items()})
        self.noise = noise
        self.rng = np.random.default_rng(seed)

    def __call__(self, context: list[int], k: int) -> list[tuple[float, int]]:
        self.t.truncate(0)
        self.t.prefill(context)
        lp = log_softmax(self.t.last_logits().astype(np.float64))
        if self.noise:
            lp = lp + self.rng.normal(0, self.noise, lp.shape)
        top = np.argsort(-lp)[:k]
        return [(float(min(lp[i], 0.0)), int(i)) for i in top]


@pytest.fixture(scope="module")
def plain_outputs(tiny_f32):
    eng = Engine(str(tiny_f32), draft=None, **EXACT)
    return {p: eng.generate(p, max_tokens=40, draft=False).tokens for p in PROMPTS}


@pytest.mark.parametrize("n_top_k,n_depth,n_tree", [(1, 1, 1), (1, 6, 6), (2, 3, 5), (4, 6, 20), (8, 4, 60), (3, 2, 7)])
@pytest.mark.parametrize("noise", [0.0, 3.0])
def test_greedy_equals_plain_with_oracle_drafts(tiny_f32, plain_outputs, n_top_k, n_depth, n_tree, noise):
    eng = Engine(str(tiny_f32), draft=None, **EXACT)
    eng._core.set_draft_oracle(TargetOracle(str(tiny_f32), noise=noise))
    for p in PROMPTS:
        out = eng.generate(p, max_tokens=40, n_top_k=n_top_k, n_depth=n_depth, n_tree=n_tree, adaptive=False)
        assert out.tokens == plain_outputs[p], f"prompt {p!r}"
        if noise == 0.0 and out.stop_reason == "max_tokens" and n_depth >= 3:
            assert out.stats.tau > 1.5  # right drafts are accepted


def test_plain_decoding_stats(tiny_f32):
    eng = Engine(str(tiny_f32), draft=None, **EXACT)
    out = eng.generate("the tree", max_tokens=10)
    assert out.stop_reason in ("max_tokens", "eog")
    assert out.stats.tau == pytest.approx(1.0)
    assert len(out.tokens) == out.stats.n_tokens


def test_max_tokens_and_stop_token_inside_accepted_path(tiny_f32, plain_outputs):
    eng = Engine(str(tiny_f32), draft=None, **EXACT)
    eng._core.set_draft_oracle(TargetOracle(str(tiny_f32)))
    p = PROMPTS[0]
    ref = plain_outputs[p]
    for n in (1, 2, 5, 13):
        out = eng.generate(p, max_tokens=n, n_depth=8, n_top_k=2, n_tree=16)
        assert out.tokens == ref[:n] and out.stop_reason == "max_tokens"
        # the KV holds prompt + all but the last emitted token: the next call continues exactly
        nxt = eng.generate(eng.tokenize(p) + out.tokens, max_tokens=5, n_depth=8, n_top_k=2, n_tree=16)
        assert nxt.tokens == ref[n:n + 5]
    stop_tok = ref[6]
    out = eng.generate(p, max_tokens=40, stop_token_ids=[stop_tok], n_depth=8, n_top_k=2, n_tree=16)
    assert out.tokens == ref[: ref.index(stop_tok) + 1] and out.stop_reason == "stop_token"


def test_stop_string(tiny_f32, plain_outputs):
    eng = Engine(str(tiny_f32), draft=None, **EXACT)
    p = PROMPTS[1]
    full = eng.detokenize(plain_outputs[p])
    needle = full[len(full) // 2: len(full) // 2 + 3]
    out = eng.generate(p, max_tokens=40, stop=[needle])
    assert out.stop_reason == "stop_string" and out.text == full[: full.find(needle)]


def test_prefix_reuse(tiny_f32):
    eng = Engine(str(tiny_f32), draft=None, **EXACT)
    a = eng.generate("the tree of code", max_tokens=8)
    b = eng.generate(eng.tokenize("the tree of code") + a.tokens + eng.tokenize(" and more", add_special=False),
                     max_tokens=8)
    assert b.stats.n_reused >= len(eng.tokenize("the tree of code")) + len(a.tokens) - 1
    fresh = Engine(str(tiny_f32), draft=None, **EXACT)
    c = fresh.generate(eng.tokenize("the tree of code") + a.tokens + eng.tokenize(" and more", add_special=False),
                       max_tokens=8)
    assert b.tokens == c.tokens


def test_context_full_stops_cleanly(tiny_f32):
    eng = Engine(str(tiny_f32), draft=None, n_ctx=64, n_threads=1)
    n_ctx = eng.target.n_ctx
    out = eng.generate("the tree", max_tokens=10 * n_ctx)
    assert out.stop_reason in ("context_full", "eog")
    out = eng.generate("the model", max_tokens=4)  # still usable
    assert len(out.tokens) >= 1


def test_cancel_and_keyboard_interrupt_leave_engine_usable(tiny_f32):
    eng = Engine(str(tiny_f32), draft=None, **EXACT)
    pieces = 0
    with pytest.raises(KeyboardInterrupt):
        for _ in eng.stream("the tree of code", max_tokens=200):
            pieces += 1
            if pieces == 3:
                raise KeyboardInterrupt
    out = eng.generate("the tree of code", max_tokens=5)
    assert len(out.tokens) == 5


def test_keyboard_interrupt_during_generate_cancels_it(tiny_f32):
    """generate() runs without a per-round callback: a Ctrl-C (here from a timer thread) reaches the
    caller blocked on the result, cancels the loop within a round, and the engine works on."""
    import _thread
    import threading
    eng = Engine(str(tiny_f32), draft=None, **{**EXACT, "n_ctx": 4096})
    finished = []
    timer = threading.Timer(0.05, _thread.interrupt_main)  # 4000 tokens take ~0.6 s here
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            finished.append(eng.generate("the tree of code", max_tokens=4000))
    finally:
        timer.cancel()
    assert finished == []
    assert len(eng.generate("the tree of code", max_tokens=5).tokens) == 5


def test_bad_parameters(tiny_f32):
    eng = Engine(str(tiny_f32), draft=None, **EXACT)
    with pytest.raises(ValueError):
        eng.generate("x", n_top_k=0)
    with pytest.raises(ValueError):
        eng.generate("x", top_p=0.0)
    with pytest.raises(ValueError):
        eng.generate([])


@pytest.fixture(scope="module")
def random_heads(tmp_path_factory, tiny_f32):
    """Random EAGLE-1/2 and EAGLE-3 heads converted for tiny_f32: almost every draft is rejected."""
    import sys
    from pathlib import Path
    from eagle_checkpoints import target_dims, write_eagle3, write_eagle12
    from pyeagle.convert import convert
    d = tmp_path_factory.mktemp("heads")
    dims = target_dims(tiny_f32)
    write_eagle12(d / "e12", **dims)
    write_eagle3(d / "e3", **dims, taps=[0, 1, 1])
    # the final layer's output as a tap (tiny_f32 has 2 layers), norm_before_residual, yarn RoPE
    write_eagle3(d / "e3f", **dims, taps=[0, 1, 2], config_extra={
        "norm_before_residual": True, "rope_scaling": {"rope_type": "yarn", "factor": 2.0,
                                                       "original_max_position_embeddings": 64}})
    return {"eagle12": convert(d / "e12", tiny_f32, d / "e12.gguf"),
            "eagle3": convert(d / "e3", tiny_f32, d / "e3.gguf"),
            "eagle3_final_tap": convert(d / "e3f", tiny_f32, d / "e3f.gguf")}


@pytest.mark.parametrize("kind", ["eagle12", "eagle3", "eagle3_final_tap"])
@pytest.mark.parametrize("n_top_k,n_depth,n_tree", [(1, 1, 1), (2, 4, 8), (8, 6, 60)])
def test_greedy_equals_plain_with_random_head(tiny_f32, plain_outputs, random_heads, kind, n_top_k, n_depth, n_tree):
    eng = Engine(str(tiny_f32), draft=str(random_heads[kind]), **EXACT)
    assert eng.has_draft
    for p in PROMPTS:
        out = eng.generate(p, max_tokens=40, n_top_k=n_top_k, n_depth=n_depth, n_tree=n_tree)
        assert out.tokens == plain_outputs[p], f"prompt {p!r}"
        assert out.stats.n_passes >= 1 and out.stats.t_draft > 0


REPEAT = "one two three, one two three, one two three, one two"


@pytest.mark.parametrize("kind", ["eagle12", "eagle3"])
@pytest.mark.parametrize("n_top_k,n_depth,n_tree", [(1, 1, 1), (2, 4, 8), (8, 6, 60)])
def test_prompt_lookup_keeps_greedy_exact_and_copies_repeats(tiny_f32, plain_outputs, random_heads, kind, n_top_k,
                                                             n_depth, n_tree):
    eng = Engine(str(tiny_f32), draft=str(random_heads[kind]), **EXACT)
    ref = {**plain_outputs, REPEAT: eng.generate(REPEAT, max_tokens=40, draft=False).tokens}
    accepted = 0
    for p in [*PROMPTS, REPEAT]:
        fixed = dict(n_top_k=n_top_k, n_depth=n_depth, n_tree=n_tree, adaptive=False)
        off = eng.generate(p, max_tokens=40, n_lookup=0, **fixed)
        on = eng.generate(p, max_tokens=40, n_lookup=16, **fixed)
        assert off.tokens == ref[p] and on.tokens == ref[p], f"prompt {p!r}"
        assert off.stats.n_lookup_drafted == 0
        assert on.stats.n_drafted <= n_tree * on.stats.n_passes  # lookup drafts share the tree's places
        assert on.stats.n_lookup_accepted <= on.stats.n_lookup_drafted
        accepted += on.stats.n_lookup_accepted
    if n_tree >= 8:  # (with one place, a chain rated low after misses loses it to the head's draft)
        assert accepted > 0  # the random head is almost never right; copied repeats are


def test_generate_without_callback_gives_the_streamed_text(tiny_f32, plain_outputs):
    """generate() runs the C++ loop without a per-round callback and decodes once at the end; the
    text is what streaming, round by round, gives."""
    eng = Engine(str(tiny_f32), draft=None, **EXACT)
    for p in PROMPTS:
        out = eng.generate(p, max_tokens=40)
        assert out.tokens == plain_outputs[p][:40]
        assert "".join(eng.stream(p, max_tokens=40)) == out.text == eng.last.text


def test_warm_up_measures_the_costs_before_the_first_reply(tiny_f32, random_heads):
    eng = Engine(str(tiny_f32), draft=random_heads["eagle12"], **EXACT)
    assert eng._core.verify_curve() == []
    assert eng.warm_up() > 0
    curve = eng._core.verify_curve()
    assert curve and curve[0][0] == 1 and eng.target.n_past == 0
    out = eng.generate(PROMPTS[0], max_tokens=8)
    assert eng._core.verify_curve() != [] and out.stats.n_tokens == 8
    assert Engine(str(tiny_f32), draft=None, **EXACT).warm_up() == 0.0


def test_prompt_lookup_finds_the_longest_most_recent_matches():
    from pyeagle import _core
    assert _core.prompt_lookup([1, 2, 3], 4, 5) == []
    # the most recent earlier occurrence of the longest suffix; past the context's end the copy
    # goes on through its own output (a cycle is unrolled)
    assert _core.prompt_lookup([1, 2, 3, 9, 1, 2], 4, 6) == [([3, 9, 1, 2, 3, 9], 2)]
    assert _core.prompt_lookup([5, 1, 7, 5, 1, 8, 5, 1], 4, 3) == [([8, 5, 1], 2)]
    assert _core.prompt_lookup([1, 2, 3, 4, 2, 3, 9, 1, 2, 3], 4, 2) == [([4, 2], 3)]
    assert _core.prompt_lookup([1, 2, 3, 4, 2, 3, 9, 1, 2, 3], 2, 2) == [([9, 1], 2)]
    assert _core.prompt_lookup([7, 7], 4, 3) == [([7, 7, 7], 1)]
    # more chains: distinct continuations only, longest match first, then most recent
    ctx = [1, 2, 3, 4, 2, 3, 9, 1, 2, 3]
    assert _core.prompt_lookup(ctx, 4, 2, 4) == [([4, 2], 3), ([9, 1], 2)]
    assert _core.prompt_lookup(ctx, 4, 2, 1) == [([4, 2], 3)]
    assert _core.prompt_lookup([3, 8, 3, 8, 3], 1, 2, 4) == [([8, 3], 1)]  # the same continuation once


def test_prompt_lookup_is_validated(tiny_f32):
    eng = Engine(str(tiny_f32), draft=None, **EXACT)
    with pytest.raises(ValueError, match="n_lookup"):
        eng.generate("the", max_tokens=2, n_lookup=-1)


@pytest.mark.parametrize("p_min", [0.05, 0.5, 0.95])
def test_confidence_floor_keeps_greedy_exact_and_prunes_the_tree(tiny_f32, plain_outputs, random_heads, p_min):
    eng = Engine(str(tiny_f32), draft=None, **EXACT)
    eng._core.set_draft_oracle(TargetOracle(str(tiny_f32), noise=1.0))
    for p in PROMPTS:
        out = eng.generate(p, max_tokens=40, n_top_k=4, n_depth=8, n_tree=32, p_min=p_min, adaptive=False)
        assert out.tokens == plain_outputs[p], f"prompt {p!r}"
    # a random head is never confident: with a high floor nothing is drafted (a plain step a round;
    # prompt lookup off, its chains are scored by their own acceptance rate)
    eng = Engine(str(tiny_f32), draft=str(random_heads["eagle12"]), **EXACT)
    out = eng.generate(PROMPTS[0], max_tokens=20, n_tree=32, p_min=p_min, n_lookup=0, adaptive=False)
    assert out.tokens == plain_outputs[PROMPTS[0]][:20]
    if p_min >= 0.5:
        assert out.stats.n_passes == len(out.tokens) - 1


def test_confidence_floor_is_validated(tiny_f32):
    eng = Engine(str(tiny_f32), draft=None, **EXACT)
    with pytest.raises(ValueError, match="p_min"):
        eng.generate("the", max_tokens=2, p_min=1.5)


LONG = " ".join(["the tree of code and a fast model"] * 25)  # ~580 tokens


@pytest.mark.parametrize("when", ["prefill", "head_round", "stream"])
def test_cancel_from_another_thread_leaves_the_engine_as_fresh(tiny_f32, random_heads, when):
    """cancel() from another thread during the prefill, during head draft rounds, and during a
    stream: the call ends early ("cancelled"), and the engine's next generation equals a fresh
    engine's."""
    import threading
    eng = Engine(str(tiny_f32), draft=str(random_heads["eagle3"]), **EXACT)
    fixed = dict(adaptive=False, n_tree=8, n_depth=4, n_top_k=2)
    eng.generate("warm up", max_tokens=4, **fixed)  # calibration and first allocations done
    started = threading.Event()
    out = None
    if when == "stream":
        pieces = []
        for piece in eng.stream(LONG, max_tokens=400, **fixed):
            pieces.append(piece)
            if len(pieces) == 2:
                threading.Thread(target=eng.cancel).start()
        out = eng.last
    else:
        # a cancel racing the call: fired as soon as the worker runs, repeatedly until it lands
        def canceller():
            started.wait()
            for _ in range(200):
                eng.cancel()
                time.sleep(0.0005)
        t = threading.Thread(target=canceller)
        t.start()
        started.set()
        prompt = LONG if when == "prefill" else "one two three"
        out = eng.generate(prompt, max_tokens=400, **fixed)
        t.join()
    assert out.stop_reason in ("cancelled", "eog", "max_tokens", "context_full")
    if when != "head_round":
        assert out.stop_reason == "cancelled"
    if when == "prefill":
        assert out.stats.n_tokens <= 1, out.stats  # stopped in the prefill (or at its first token)
    fresh = Engine(str(tiny_f32), draft=str(random_heads["eagle3"]), **EXACT)
    for p in ("the tree of code", LONG[:120]):
        assert eng.generate(p, max_tokens=24, **fixed).tokens == fresh.generate(p, max_tokens=24, **fixed).tokens


def test_the_engine_refuses_a_second_caller_while_it_generates(tiny_f32):
    """llama.cpp's context is not thread-safe: while a generation runs on its worker thread, a
    second generate() or a reset() on the core raises instead of corrupting it; the stream then
    ends normally when closed, and the engine works on. A cancel() from before a call does not
    cancel it."""
    from pyeagle import _core
    eng = Engine(str(tiny_f32), draft=None, **EXACT)
    it = eng.stream(LONG, max_tokens=400)
    next(it)  # the loop runs on its thread (waiting for this thread's GIL to hand over the next piece)
    with pytest.raises(RuntimeError, match="busy"):
        eng._core.reset()
    gp = _core.GenParams()
    gp.max_tokens = 2
    with pytest.raises(RuntimeError, match="busy"):
        eng._core.generate([1, 2, 3], gp, None)
    it.close()
    eng.cancel()  # nothing runs: the next call is not cancelled
    out = eng.generate("the tree of code", max_tokens=6)
    assert out.stop_reason == "max_tokens" and len(out.tokens) == 6


def test_every_engine_generates_on_one_thread_and_other_ggml_work_can_join_it(tiny_f32):
    """libgomp keeps a team of threads per thread that starts ggml work, and with two teams on few
    cores every decode waits for sleeping threads (pyeagle.engine._ComputeThread: 100 -> 41 tok/s
    on 2 cores). So every generation of every engine runs on one thread, and on_compute_thread
    runs other work there, results and errors coming back to the caller."""
    seen = set()

    def oracle(context, k):  # called by the round loop, on the thread that generates
        seen.add(threading.get_ident())
        return [(0.0, int(context[-1]))]

    for _ in range(2):
        eng = Engine(str(tiny_f32), draft=None, **EXACT)
        eng._core.set_draft_oracle(oracle)
        for _ in range(2):
            assert len(eng.generate("one two", max_tokens=4).tokens) == 4
    compute = on_compute_thread(threading.get_ident)
    assert seen == {compute} and compute != threading.get_ident()
    assert [t.name for t in threading.enumerate()].count("pyeagle-compute") == 1
    t = Target(str(tiny_f32), **EXACT)
    on_compute_thread(t.prefill, [1, 2, 3])
    assert t.n_past == 3
    with pytest.raises(ValueError, match="no tokens"):
        on_compute_thread(t.prefill, [])
    # a generation started from work on the compute thread runs there, not queued behind itself
    assert on_compute_thread(lambda: eng.generate("one two", max_tokens=3).tokens) == eng.generate("one two", max_tokens=3).tokens


def test_a_generation_cancelled_while_it_waits_for_the_compute_thread_ends_cancelled(tiny_f32):
    eng = Engine(str(tiny_f32), draft=None, **EXACT)
    started, busy = threading.Event(), threading.Event()
    _ComputeThread.submit(lambda: (started.set(), busy.wait()))  # another generation holds the compute thread
    started.wait()
    result = {}
    caller = threading.Thread(target=lambda: result.update(out=eng.generate("the tree of code", max_tokens=50)))
    caller.start()
    while _ComputeThread._jobs.qsize() == 0:  # until the generation waits in the queue
        time.sleep(0.01)
    eng.cancel()
    busy.set()
    caller.join()
    out = result["out"]
    assert out.stop_reason == "cancelled" and out.tokens == []
    assert eng.generate("the tree of code", max_tokens=5).stop_reason == "max_tokens"
