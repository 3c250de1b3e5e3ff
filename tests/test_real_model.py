"""On the real default model (SmolLM2-135M-Instruct Q8_0), where batched and single-token kernels
differ: every divergence of greedy EAGLE output from plain decoding is a near-tie.

The kernel noise is measured here, not assumed: the plain output is scored again in one batched
pass (teacher forcing) and compared with the single-token logits of plain decoding; the noise is the
largest change, between the two, of the logit gap from the chosen token to one of the 8 best. At EAGLE's first differing position
the two tokens' plain-decoding logits must be within that noise.
Skips when the default model cannot be fetched (no network and no cache).
"""
from __future__ import annotations

import numpy as np
import pytest

from pyeagle import Engine, Target, models

pytestmark = pytest.mark.model

PROMPTS = ["Write a short poem about the sea.", "Explain what a hash map is.",
           "Give me three tips for better sleep.", "What is 17 times 23? Show your steps."]
N_NEW = 64


@pytest.fixture(scope="module")
def target_path() -> str:
    try:
        return str(models.default_target())
    except Exception as e:  # noqa: BLE001 - offline without a cache
        pytest.skip(f"default model unavailable: {e}")


@pytest.fixture(scope="module")
def head_path(target_path, tmp_path_factory) -> str:
    shipped = models.DEFAULT_HEAD
    if shipped.exists():
        return str(shipped)
    from eagle_checkpoints import target_dims, write_eagle12

    from pyeagle.convert import convert
    d = tmp_path_factory.mktemp("head")
    dims = target_dims(target_path)
    write_eagle12(d / "ckpt", **dims, n_head=9, n_head_kv=3, ff=256, embed=False)
    return str(convert(d / "ckpt", target_path, d / "random.gguf"))


def chat(eng: Engine, text: str) -> list[int]:
    return eng.tokenize(f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n")


def single_token_logits(t: Target, prompt: list[int], out: list[int]) -> np.ndarray:
    """Plain decoding's logits before each token of out (one token per llama_decode)."""
    t.truncate(0)
    t.prefill(prompt)
    rows = [t.last_logits()]
    for tok in out[:-1]:
        t.decode(tok)
        rows.append(t.last_logits())
    return np.stack(rows)


def batched_logits(t: Target, prompt: list[int], out: list[int]) -> np.ndarray:
    """The same positions scored in one batched pass (teacher forcing)."""
    t.truncate(0)
    t.prefill(prompt[:-1])
    seq = [prompt[-1]] + out[:-1]
    t.verify(seq, [-1] + list(range(len(seq) - 1)))
    rows = t.logits()
    t.discard_tree()
    return rows


def test_every_divergence_is_a_near_tie(target_path, head_path):
    eng = Engine(target_path, draft=head_path, n_ctx=1024, n_threads=2)
    t = Target(target_path, n_ctx=1024, n_threads=2, n_seq_max=1)
    noise, report = 0.0, []
    for text in PROMPTS:
        prompt = chat(eng, text)
        plain = eng.generate(prompt, max_tokens=N_NEW, draft=False).tokens
        eagle = eng.generate(prompt, max_tokens=N_NEW).tokens
        single = single_token_logits(t, prompt, plain)
        batched = batched_logits(t, prompt, plain)
        # kernel noise: how much the gap between the chosen token and a contender (the 8 best
        # tokens of plain decoding) moves between single-token and batched scoring
        idx = np.arange(len(plain))
        top = np.argsort(-single, axis=1)[:, :8]
        d = (batched[idx[:, None], top] - batched[idx, plain][:, None]) - \
            (single[idx[:, None], top] - single[idx, plain][:, None])
        noise = max(noise, float(np.abs(d).max()))
        first = next((i for i, (a, b) in enumerate(zip(plain, eagle)) if a != b), None)
        if first is not None:
            gap = float(single[first, plain[first]] - single[first, eagle[first]])
            report.append((text, first, gap))
    for text, pos, gap in report:
        assert 0 <= gap <= noise, f"{text!r}: diverged at {pos} with plain logit gap {gap:.4f} > noise {noise:.4f}"
    print(f"kernel noise {noise:.4f}; divergences (prompt, position, plain logit gap): {report}")
    assert noise < 1.0, f"kernel noise {noise} is implausibly large"


def test_magpie_prompts_are_user_requests_and_resume(target_path, tmp_path):
    """`train prompts`: the target writes user requests from its template's user-turn prefix; the
    file is the `data --prompts` format, and a stopped run (a cut last line) continues it."""
    import json

    from pyeagle.train.magpie import synthesize
    from pyeagle.train.prompts import load_conversations
    out = tmp_path / "magpie.jsonl"
    assert synthesize(out, target_path, 4, seed=1, slots=4, n_threads=2, follow_ups=1.0, progress=False) == 0
    first = load_conversations(out)
    assert len(first) == 4 and len({c[0] for c in first}) == 4
    for turns in first:
        assert len(turns) == 2 and len(turns[0].split()) >= 4 and "<|" not in turns[0]
    out.write_text(out.read_text() + '{"turns": ["cut sh')  # a stop in the middle of a line
    assert synthesize(out, target_path, 6, seed=1, slots=4, n_threads=2, progress=False) == 0
    again = [json.loads(line)["turns"] for line in out.read_text().splitlines()]
    assert again[:4] == first and len(again) == 6 and all(len(c) == 1 for c in again[4:])


def test_magpie_openings_begin_requests(target_path, tmp_path):
    """`train prompts --openings 1`: every request starts with one of the built-in openings, which
    the target continues (the request is longer than its opening) and the usual checks still apply."""
    from pyeagle.train.magpie import OPENINGS, synthesize
    from pyeagle.train.prompts import load_conversations
    out = tmp_path / "opened.jsonl"
    assert synthesize(out, target_path, 4, seed=2, slots=4, n_threads=2, openings=1.0, progress=False) == 0
    for (request,) in load_conversations(out):
        opening = next((o for o in OPENINGS if request.startswith(o)), None)
        assert opening is not None, request
        assert len(request) > len(opening) and len(request.split()) >= 4 and "<|" not in request
