"""The heads people download, in their published config layouts, scaled down to a tiny target.

Each config below keeps the key names, nesting and non-size values of a published head's
config.json; only the sizes are scaled to the tiny target (hidden 64 instead of 4096, and so on).
The weights are random, in the tensor naming of the same publisher. Each head must convert, load
in pyeagle's runtime, match the NumPy reference (tests/eagle_ref.py) on the checkpoint, and keep
greedy output exact.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eagle_checkpoints import target_dims, write_eagle3, write_eagle12
from eagle_ref import EagleRef
from test_draft_head import run_both
from tiny_gguf import TinySpec, write_tiny_llama

from pyeagle import DraftHead, Engine, Target
from pyeagle.convert import convert

LLAMA31_ROPE = {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                "original_max_position_embeddings": 8192, "rope_type": "llama3"}


def published(vocab: int) -> dict[str, tuple[str, dict, dict]]:
    """name -> (writer, writer keyword arguments, the published config.json scaled to the tiny target)."""
    llama_common = {"hidden_act": "silu", "hidden_size": 64, "initializer_range": 0.02, "intermediate_size": 128,
                    "model_type": "llama", "num_attention_heads": 4, "num_key_value_heads": 2,
                    "num_hidden_layers": 1, "rms_norm_eps": 1e-05, "tie_word_embeddings": False, "use_cache": True,
                    "vocab_size": vocab}
    return {
        # SafeAILab EAGLE-3 for Llama-3.1-8B-Instruct (yuhuili/EAGLE3-LLaMA3.1-Instruct-8B layout)
        "eagle3-llama3.1-safeailab": ("eagle3", dict(layers_name="midlayer."), {
            "architectures": ["LlamaForCausalLMEagle3"], "bos_token_id": 128000, "eos_token_id": 128001,
            **llama_common, "max_position_embeddings": 2048, "pad_token_id": 0, "rope_theta": 500000.0,
            "rope_scaling": LLAMA31_ROPE, "torch_dtype": "float16", "transformers_version": "4.28.1",
            "draft_vocab_size": 200}),
        # SpecForge EAGLE-3 for Qwen3 (head_dim 128 with 32 heads of a 2560-wide Qwen3-4B: not hidden/heads;
        # here 32 with 4 heads of 64), an own copy of the embedding, rope_theta 1e6, no rope_scaling
        "eagle3-qwen3-specforge": ("eagle3", dict(layers_name="midlayer.", head_dim=32, embed=True), {
            "architectures": ["LlamaForCausalLMEagle3"], "attention_bias": False, "attention_dropout": 0.0,
            "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 32, **llama_common,
            "max_position_embeddings": 40960, "rms_norm_eps": 1e-06, "rope_scaling": None,
            "rope_theta": 1000000.0, "torch_dtype": "bfloat16", "transformers_version": "4.51.0",
            "draft_vocab_size": 200}),
        # the same with Qwen3's long-context setting (its model card's yarn rope_scaling)
        "eagle3-qwen3-yarn": ("eagle3", dict(layers_name="midlayer.", head_dim=32), {
            "architectures": ["LlamaForCausalLMEagle3"], "head_dim": 32, **llama_common,
            "max_position_embeddings": 131072, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
            "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
            "draft_vocab_size": 200}),
        # vllm-project/speculators (RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3 layout): nested
        # transformer_layer_config, norm_before_residual, layers.0.* names, an own embedding
        "eagle3-llama3.1-speculators": ("eagle3", dict(layers_name="layers.0.", embed=True), {
            "architectures": ["Eagle3Speculator"], "speculators_model_type": "eagle3",
            "speculators_version": "0.1.0.dev13", "draft_vocab_size": 200, "norm_before_residual": True,
            "target_hidden_size": None, "torch_dtype": "bfloat16",
            "transformer_layer_config": {**llama_common, "attention_bias": False, "attention_dropout": 0.0,
                                         "head_dim": 16, "max_position_embeddings": 131072, "mlp_bias": False,
                                         "pretraining_tp": 1, "rope_scaling": LLAMA31_ROPE,
                                         "rope_theta": 500000.0},
            "speculators_config": {"algorithm": "eagle3", "default_proposal_method": "greedy",
                                   "proposal_methods": [{"proposal_type": "greedy", "speculative_tokens": 5}],
                                   "verifier": {"architectures": ["LlamaForCausalLM"],
                                                "name_or_path": "meta-llama/Llama-3.1-8B-Instruct"}}}),
        # EAGLE-1 for Llama-3-8B-Instruct (yuhuili/EAGLE-LLaMA3-Instruct-8B layout): pytorch_model.bin
        # in the original, fc with bias (no "bias" key), an own embedding, rope_theta 5e5
        "eagle1-llama3": ("eagle12", dict(embed=True), {
            "architectures": ["LlamaForCausalLM"], "bos_token_id": 128000, "eos_token_id": 128001,
            **llama_common, "max_position_embeddings": 8192, "pretraining_tp": 1, "rope_scaling": None,
            "rope_theta": 500000.0, "torch_dtype": "float16", "transformers_version": "4.40.0.dev0"}),
    }


@pytest.fixture(scope="module")
def target(tmp_path_factory) -> Path:
    # 6 layers: EAGLE-3's default taps (2, N/2, N-3) need N >= 5
    return write_tiny_llama(tmp_path_factory.mktemp("pub") / "target.gguf", TinySpec(n_layer=6, tied=True))


@pytest.fixture(scope="module")
def plain_outputs(target) -> dict[str, list[int]]:
    eng = Engine(str(target), draft=None, n_ctx=512, n_threads=1, flash_attn=0, kv_f32=True)
    return {p: eng.generate(p, max_tokens=24).tokens for p in PROMPTS}


PROMPTS = ["the tree of code", "one two three one two three one"]
NAMES = list(published(0))


def write_published(directory: Path, target: Path, name: str) -> None:
    dims = target_dims(target)
    kind, kw, config = published(dims["vocab"])[name]
    writer = write_eagle3 if kind == "eagle3" else write_eagle12
    writer(directory, hidden=64, vocab=dims["vocab"], n_head=4, n_head_kv=2, ff=128,
           **({"draft_vocab": 200} if kind == "eagle3" else {}), **kw)
    (directory / "config.json").write_text(json.dumps(config, indent=2))  # exactly the published layout


@pytest.mark.parametrize("name", NAMES)
def test_published_head_converts_loads_and_matches_reference(target, tmp_path, name):
    write_published(tmp_path / "ck", target, name)
    head_path = convert(tmp_path / "ck", target, tmp_path / "head.gguf")
    tgt = Target(str(target), n_ctx=256, n_threads=1)
    head = DraftHead(str(head_path), tgt, n_ctx=64, n_batch=16)
    ref = EagleRef(tmp_path / "ck", target)
    assert head.eagle3 == ref.is_eagle3 and head.head_dim == ref.head_dim
    assert head.norm_before_residual == ref.norm_before_residual
    if head.eagle3:
        assert head.tap_layers == [2, 3, 3]  # the published default for a 6-layer target
    for got, want in run_both(head, ref, tgt, head.eagle3, np.random.default_rng(0)):
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-3 * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("name", NAMES)
def test_published_head_keeps_greedy_exact(target, plain_outputs, tmp_path, name):
    write_published(tmp_path / "ck", target, name)
    head_path = convert(tmp_path / "ck", target, tmp_path / "head.gguf", outtype="q8_0")
    eng = Engine(str(target), draft=str(head_path), n_ctx=512, n_threads=1, flash_attn=0, kv_f32=True)
    for p in PROMPTS:
        out = eng.generate(p, max_tokens=24, adaptive=False, n_tree=8, n_depth=4, n_top_k=2)
        assert out.tokens == plain_outputs[p], p
        assert out.stats.n_drafted > 0
