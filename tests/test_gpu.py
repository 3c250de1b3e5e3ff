"""The device path: the target and the head on a GPU backend (CUDA, Metal, Vulkan; on a machine
without a GPU, Vulkan on Mesa's software device lavapipe, which goes through the same non-host
buffers, uploads, downloads and graph splits). Run by `bash scripts/gpu_check.sh <backend>`;
skipped where this build of llama.cpp has no GPU device. Tiny models and few tokens: lavapipe
decodes SmolLM2-135M at ~2 tok/s.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from eagle_checkpoints import target_dims, write_eagle3, write_eagle12
from eagle_ref import EagleRef
from test_draft_head import run_both
from tiny_gguf import TinySpec, write_tiny_llama

from pyeagle import ContextFullError, DraftHead, Engine, Target, _core
from pyeagle.convert import convert

pytestmark = pytest.mark.gpu

GPUS = [d for d in _core.devices() if d[2] in ("gpu", "igpu")]
if not GPUS:
    pytest.skip("no GPU device in this build of llama.cpp (bash scripts/gpu_check.sh vulkan|cuda|metal builds one)",
                allow_module_level=True)

ALL = -1  # n_gpu_layers: every layer and the output on the device
EXACT = dict(n_ctx=512, n_threads=2, flash_attn=0, kv_f32=True)
PROMPTS = ["the tree of code", "one two three, one two three, one two", "write a fast model"]
# The device's kernels round differently from the CPU's (f16 intermediates on some): logits agree
# to this, relative to their spread, and greedy paths may part only at near-ties.
LOGIT_TOL = 2e-2
NEAR_TIE = 0.1


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("gpu")
    target = write_tiny_llama(d / "target.gguf", TinySpec(n_layer=2, output_scale=5.0, seed=7))
    dims = target_dims(target)
    write_eagle12(d / "e12", **dims, embed=False)  # borrows the target's output matrix (on the device)
    write_eagle12(d / "e12x3", **dims, embed=False, layers=3, qkv_bias=True)  # a head of three layers
    write_eagle3(d / "e3", **dims, taps=[0, 1, 1], config_extra={"norm_before_residual": True, "rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16}})
    write_eagle3(d / "e3f", **dims, taps=[0, 1, 2])  # tap 2: the last layer's output
    return {"target": str(target), "e12_ckpt": d / "e12", "e3_ckpt": d / "e3",
            "eagle12": str(convert(d / "e12", target, d / "e12.gguf")),
            "e12x3_ckpt": d / "e12x3", "eagle12_three_layers": str(convert(d / "e12x3", target, d / "e12x3.gguf")),
            "eagle3": str(convert(d / "e3", target, d / "e3.gguf")),
            "eagle3_final_tap": str(convert(d / "e3f", target, d / "e3f.gguf"))}


def spread(x: np.ndarray) -> float:
    return max(1.0, float(np.abs(x).max()))


@pytest.mark.parametrize("n_gpu_layers", [ALL, 1])
def test_target_on_the_device_matches_the_cpu(models, n_gpu_layers):
    """Fully and partly offloaded (one of two layers): prefill and tree logits as on the CPU."""
    cpu = Target(models["target"], **EXACT)
    dev = Target(models["target"], n_gpu_layers=n_gpu_layers, **EXACT)
    ids = cpu.tokenize(PROMPTS[0])
    for t in (cpu, dev):
        t.features = True
        t.prefill(ids)
    np.testing.assert_allclose(dev.last_logits(), cpu.last_logits(), rtol=0, atol=LOGIT_TOL * spread(cpu.last_logits()))
    np.testing.assert_allclose(dev.hidden(), cpu.hidden(), rtol=0, atol=LOGIT_TOL * spread(cpu.hidden()))
    tree, parent = [5, 6, 7, 8, 9], [-1, 0, 0, 1, 1]
    for t in (cpu, dev):
        t.verify(tree, parent)
    np.testing.assert_allclose(dev.logits(), cpu.logits(), rtol=0, atol=LOGIT_TOL * spread(cpu.logits()))


def test_tree_verify_equals_chain_decode_on_the_device(models):
    t = Target(models["target"], n_gpu_layers=ALL, **EXACT)
    ids = t.tokenize(PROMPTS[1])
    t.prefill(ids)
    tree, parent = [5, 6, 7, 8, 9, 10], [-1, 0, 0, 1, 2, 4]
    t.verify(tree, parent)
    got = t.logits()
    t.discard_tree()
    for node in range(len(tree)):
        path = [node]
        while parent[path[-1]] >= 0:
            path.append(parent[path[-1]])
        chain = [tree[i] for i in reversed(path)]
        t.truncate(len(ids))
        t.prefill(chain)
        np.testing.assert_allclose(got[node], t.last_logits(), rtol=0, atol=LOGIT_TOL * spread(got[node]))


@pytest.mark.parametrize("kind", ["eagle12", "eagle3", "eagle12_three_layers"])
def test_head_forward_on_the_device_matches_the_reference(models, kind):
    """The head runs on the device that holds the target's output matrix, and computes there what
    the NumPy reference computes on the checkpoint (EAGLE-1/2 with the target's output matrix, of
    one layer and of three; EAGLE-3 with llama3 RoPE and norm_before_residual)."""
    tgt = Target(models["target"], n_gpu_layers=ALL, n_ctx=256, n_threads=2)
    head = DraftHead(models[kind], tgt, n_ctx=64, n_batch=16)
    assert head.device != "CPU", head.device
    ref = EagleRef(models[{"eagle12": "e12_ckpt", "eagle3": "e3_ckpt", "eagle12_three_layers": "e12x3_ckpt"}[kind]],
                   models["target"])
    for got, want in run_both(head, ref, tgt, kind == "eagle3", np.random.default_rng(0)):
        np.testing.assert_allclose(got, want, rtol=0, atol=LOGIT_TOL * spread(want))


def test_tied_output_matrix_keeps_the_head_on_the_device(models, tmp_path):
    """A tied target (no output.weight: Llama-3.2-1B, Qwen3 small, SmolLM2) has its output matrix as
    llama.cpp's copy of token_embd in the output layer's device buffer; the head must find that copy
    (not the mmapped host one) and run there."""
    tied = write_tiny_llama(tmp_path / "tied.gguf", TinySpec(n_layer=2, tied=True, seed=7))
    write_eagle12(tmp_path / "ck", **target_dims(tied), embed=False)
    head_path = str(convert(tmp_path / "ck", tied, tmp_path / "head.gguf"))
    tgt = Target(str(tied), n_gpu_layers=ALL, n_ctx=256, n_threads=2)
    head = DraftHead(head_path, tgt, n_ctx=64, n_batch=16)
    assert head.device != "CPU", head.device
    ref = EagleRef(tmp_path / "ck", tied)
    for got, want in run_both(head, ref, tgt, False, np.random.default_rng(0)):
        np.testing.assert_allclose(got, want, rtol=0, atol=LOGIT_TOL * spread(want))


def test_partly_offloaded_target_keeps_the_head_with_its_output_matrix(models):
    """One of the two layers offloaded: llama.cpp offloads from the top, so the output matrix is on
    the device and the first layers on the CPU; the head goes with the output matrix, and greedy
    EAGLE still equals plain decoding."""
    eng = Engine(models["target"], draft=models["eagle12"], n_gpu_layers=1, **EXACT)
    head = DraftHead(models["eagle12"], eng.target, n_ctx=64, n_batch=16)
    assert head.device != "CPU"
    for p in PROMPTS:
        assert eng.generate(p, max_tokens=16).tokens == eng.generate(p, max_tokens=16, draft=False).tokens


def assert_same_up_to_near_ties(t: Target, prompt: str, want: list[int], got: list[int]) -> bool:
    """got equals want, or parts from it where t (plain single-token decoding) has a near-tie between
    the two tokens: batched and single-row kernels round differently. True when equal."""
    k = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), None)
    if k is None:
        assert got == want
        return True
    t.truncate(0)
    t.prefill(t.tokenize(prompt) + want[:k])
    lg = t.last_logits()
    assert abs(float(lg[want[k]] - lg[got[k]])) <= NEAR_TIE, (prompt, k, float(lg[want[k]] - lg[got[k]]))
    return False


@pytest.mark.parametrize("kind", ["eagle12", "eagle3"])
def test_greedy_eagle_on_the_device_equals_plain_on_the_device(models, kind):
    eng = Engine(models["target"], draft=models[kind], n_gpu_layers=ALL, **EXACT)
    t = Target(models["target"], n_gpu_layers=ALL, **EXACT)
    equal = 0
    for p in PROMPTS:
        plain = eng.generate(p, max_tokens=24, draft=False)
        for tree in (dict(adaptive=False, n_tree=8, n_depth=4, n_top_k=2), {}):
            out = eng.generate(p, max_tokens=24, **tree)
            equal += assert_same_up_to_near_ties(t, p, plain.tokens, out.tokens)
    assert equal >= len(PROMPTS)  # near-ties are rare: most outputs are identical


def test_greedy_eagle_on_the_device_equals_plain_cpu_decoding_up_to_near_ties(models):
    cpu = Engine(models["target"], draft=None, **EXACT)
    dev = Engine(models["target"], draft=models["eagle3"], n_gpu_layers=ALL, **EXACT)
    t = Target(models["target"], **EXACT)
    equal = sum(assert_same_up_to_near_ties(t, p, cpu.generate(p, max_tokens=24).tokens,
                                            dev.generate(p, max_tokens=24).tokens) for p in PROMPTS)
    assert equal >= 1


def test_sampling_on_the_device_keeps_the_target_distribution(models, tmp_path):
    from test_sampling import TREE, chi_square_p, draw, exact_pairs
    peaked = str(write_tiny_llama(tmp_path / "peaked.gguf", TinySpec(weight_type="f32", output_scale=7.0, seed=5)))
    prompt = Target(peaked, n_ctx=256, n_threads=1).tokenize("the tree of code")
    exact = exact_pairs(peaked, prompt, 1.0, 1.0, 0)  # on the CPU; the device agrees to LOGIT_TOL
    p = chi_square_p(draw(peaked, 1.0, 1.0, 0, prompt=prompt, tree=TREE, n=1500, n_gpu_layers=ALL), exact)
    assert p > 1e-3, f"p = {p:.2e}"


def test_prefix_reuse_on_the_device(models):
    eng = Engine(models["target"], draft=models["eagle3"], n_gpu_layers=ALL, **EXACT)
    a = eng.generate(PROMPTS[0], max_tokens=8)
    follow = eng.tokenize(PROMPTS[0]) + a.tokens + eng.tokenize(" and more", add_special=False)
    b = eng.generate(follow, max_tokens=8)
    assert b.stats.n_reused >= len(eng.tokenize(PROMPTS[0])) + len(a.tokens) - 1
    fresh = Engine(models["target"], draft=models["eagle3"], n_gpu_layers=ALL, **EXACT)
    assert fresh.generate(follow, max_tokens=8).tokens == b.tokens


def test_cancel_on_the_device_leaves_the_engine_usable(models):
    eng = Engine(models["target"], draft=models["eagle12"], n_gpu_layers=ALL, **EXACT)
    timer = threading.Timer(0.3, eng.cancel)
    timer.start()
    t0 = time.time()
    out = eng.generate(PROMPTS[1], max_tokens=400)
    timer.cancel()
    assert out.stop_reason in ("cancelled", "eog", "context_full", "max_tokens")
    assert time.time() - t0 < 60
    assert len(eng.generate(PROMPTS[0], max_tokens=4).tokens) == 4


def test_full_context_on_the_device(models):
    eng = Engine(models["target"], draft=models["eagle3"], n_gpu_layers=ALL, n_ctx=64, n_threads=2)
    out = eng.generate(PROMPTS[0], max_tokens=1000)
    assert out.stop_reason in ("context_full", "eog")
    with pytest.raises(ContextFullError):
        eng.generate(" ".join(["code"] * 200), max_tokens=4)
    assert len(eng.generate(PROMPTS[0], max_tokens=4).tokens) >= 1


def test_eagle3_taps_from_layers_on_the_device(models):
    """Layer-input taps read from layers on the device, in prefill and verify, equal the CPU's."""
    cpu = Target(models["target"], tap_layers=[0, 1, 1], **EXACT)
    dev = Target(models["target"], tap_layers=[0, 1, 1], n_gpu_layers=ALL, **EXACT)
    ids = cpu.tokenize(PROMPTS[2])
    for t in (cpu, dev):
        t.features = True
        t.prefill(ids)
    np.testing.assert_allclose(dev.taps(), cpu.taps(), rtol=0, atol=LOGIT_TOL * spread(cpu.taps()))
    for t in (cpu, dev):
        t.verify([5, 6, 7], [-1, 0, 0])
    np.testing.assert_allclose(dev.taps(), cpu.taps(), rtol=0, atol=LOGIT_TOL * spread(cpu.taps()))


@pytest.mark.parametrize("n_gpu_layers", [ALL, 1])
def test_final_layer_tap_on_the_device(models, n_gpu_layers):
    """The last layer's output (tap 2 of 2 layers), read through llama.cpp's eval callback from the
    device, equals the CPU's; greedy EAGLE with such a head equals plain decoding, after plain
    steps (the features switch on and off: tests/test_target.py has the CPU side)."""
    cpu = Target(models["target"], tap_layers=[0, 1, 2], **EXACT)
    dev = Target(models["target"], tap_layers=[0, 1, 2], n_gpu_layers=n_gpu_layers, **EXACT)
    ids = cpu.tokenize(PROMPTS[0])
    for t in (cpu, dev):
        t.prefill(ids)  # features off first
        t.features = True
        t.verify([5, 6, 7], [-1, 0, 0])
    np.testing.assert_allclose(dev.taps(), cpu.taps(), rtol=0, atol=LOGIT_TOL * spread(cpu.taps()))
    eng = Engine(models["target"], draft=models["eagle3_final_tap"], n_gpu_layers=n_gpu_layers, **EXACT)
    t = Target(models["target"], n_gpu_layers=n_gpu_layers, **EXACT)
    for p in PROMPTS:
        assert_same_up_to_near_ties(t, p, eng.generate(p, max_tokens=16, draft=False).tokens,
                                    eng.generate(p, max_tokens=16).tokens)
