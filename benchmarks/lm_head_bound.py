"""Could a step certify its greedy token without the whole LM head? The LM head (the tied
49152 x 576 Q8_0 embedding, 30 MB) is about a fifth of what a one-token step streams. The idea:
exact logits over a frequent subset S of the vocabulary, and for the rest a Q4_0 copy of the rows
(half the bytes) with a bound |w.h - w4.h| <= ||w - w4|| ||h|| (Cauchy-Schwarz): if no row outside S
can reach the subset's top logit, the top is the argmax, exactly.

On real hidden rows (the target's greedy answers to the first N MT-bench questions, verified as
one chain with features on) this prints how often that certifies. S: the K most frequent tokens of
those answers (an optimistic stand-in for a head's draft vocabulary).

    cd docs && python ../benchmarks/lm_head_bound.py [N]
"""
from __future__ import annotations

import os
import sys

import gguf
import numpy as np

from pyeagle import Engine, Target
from pyeagle.bench import load_prompts, mtbench_file
from pyeagle.template import ChatTemplate


def main() -> None:
    n_prompts = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    eng = Engine(draft=None, n_threads=2)
    path = eng.target_path
    te = next(t for t in gguf.GGUFReader(path).tensors if t.name == "token_embd.weight")
    n_vocab, n_embd = int(te.shape[1]), int(te.shape[0])
    W = gguf.quants.dequantize(te.data, te.tensor_type).reshape(n_vocab, n_embd).astype(np.float32)
    q4 = gguf.GGMLQuantizationType.Q4_0
    W4 = gguf.quants.dequantize(gguf.quants.quantize(W, q4), q4).reshape(W.shape)
    err = np.linalg.norm(W - W4, axis=1)
    print(f"Q4_0 error norm per row: median {np.median(err):.3f}, max {err.max():.3f}; "
          f"row norm median {np.median(np.linalg.norm(W, axis=1)):.3f}")

    tpl = ChatTemplate.from_target(eng.target, None)
    t = Target(path, n_ctx=2048, n_threads=2)
    t.features = True
    hs, zs = [], []
    counts = np.zeros(n_vocab)
    for p in load_prompts(mtbench_file())[:n_prompts]:
        ids = eng.tokenize(tpl.render([{"role": "user", "content": p.question}]))
        out = eng.generate(ids, max_tokens=200, draft=False).tokens
        t.truncate(0)
        t.prefill(ids)
        t.verify(out, list(range(-1, len(out) - 1)))
        zs.append(np.array(t.logits()))
        hs.append(np.array(t.hidden()))
        t.discard_tree()
        np.add.at(counts, out, 1)
    H, Z = np.concatenate(hs), np.concatenate(zs)
    print(f"{len(H)} rows; the hidden rows are the LM head's input: max |W h - logits| "
          f"{np.abs(H @ W.T - Z).max():.3f} (ggml quantizes h to Q8_0), largest logit {np.abs(Z).max():.1f}")
    h_norm = np.linalg.norm(H, axis=1)
    top = Z.max(axis=1)
    order = np.argsort(-counts)
    print("| K (subset) | argmax in S | rows certified | rows outside S to recheck, mean | p99 | top - best outside S, median |")
    print("|---|---|---|---|---|---|")
    for k in (4096, 8192, 16384):
        in_s = np.zeros(n_vocab, bool)
        in_s[order[:k]] = True
        bound = H @ W4[~in_s].T + np.outer(h_norm, err[~in_s])
        n_over = (bound >= top[:, None]).sum(axis=1)
        gap = top - Z[:, ~in_s].max(axis=1)
        print(f"| {k} | {in_s[Z.argmax(axis=1)].mean():.3f} | {(n_over == 0).mean():.3f} | {n_over.mean():.0f} | "
              f"{np.percentile(n_over, 99):.0f} | {np.median(gap):.2f} |")
    print(f"||h|| median {np.median(h_norm):.1f}: the bound's slack ||w - w4|| ||h|| has median "
          f"{np.median(err) * np.median(h_norm):.1f} logits")


if __name__ == "__main__":
    main()
