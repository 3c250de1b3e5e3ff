"""What requantizing the default model costs in quality: Q4_1 (as shipped) against other GGUFs.

  python benchmarks/requant_quality.py REF.gguf OTHER.gguf [...] [-n 128]

Prints, for each model: perplexity on held-out text (the docstrings of a fixed list of Python
standard-library modules: text no model here was tuned on, and no part of the training data),
agreement of greedy continuations with the reference model (fraction of prompts token-identical,
mean length of the common prefix), and top-1 agreement of next-token predictions on the text.
"""
from __future__ import annotations

import argparse
import importlib
import math

import numpy as np

from pyeagle import Target, set_log_level

MODULES = ["argparse", "collections", "json", "logging", "pathlib", "subprocess", "textwrap", "zipfile",
           "heapq", "bisect", "fractions", "decimal"]
PROMPTS = [
    "Explain how a refrigerator keeps food cold.",
    "Write a haiku about autumn rain.",
    "What are three tips for learning a new language?",
    "Write a Python function that reverses a linked list.",
    "If a train travels 60 miles in 1.5 hours, what is its average speed?",
    "Describe the water cycle in simple terms.",
    "Give me a short story opening set on a space station.",
    "What is the difference between weather and climate?",
]


def held_out_text() -> str:
    parts = []
    for name in MODULES:
        doc = importlib.import_module(name).__doc__ or ""
        parts.append(doc.strip())
    return "\n\n".join(parts)


def chat(t: Target, prompt: str) -> list[int]:
    return t.tokenize(f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n")


def score(t: Target, ids: list[int], chunk: int = 256) -> tuple[float, np.ndarray]:
    """Negative log-likelihood sum of ids[1:] and the argmax prediction at each position."""
    t.truncate(0)
    nll, argmax = 0.0, []
    prev = None
    for i0 in range(0, len(ids), chunk):
        part = ids[i0:i0 + chunk]
        t.verify(part, [-1] + list(range(len(part) - 1)))
        logits = t.logits()
        t.commit(list(range(len(part))))
        rows = logits if prev is None else np.vstack([prev[None], logits])
        targets = part[1:] if prev is None else part
        rows = rows[:len(targets)]
        lse = np.log(np.exp(rows - rows.max(1, keepdims=True)).sum(1)) + rows.max(1)
        nll += float((lse - rows[np.arange(len(targets)), targets]).sum())
        argmax.append(rows.argmax(1))
        prev = logits[-1]
    return nll, np.concatenate(argmax)


def greedy(t: Target, prompt: list[int], n: int) -> list[int]:
    t.truncate(0)
    t.prefill(prompt)
    out = []
    for _ in range(n):
        tok = int(np.argmax(t.last_logits()))
        out.append(tok)
        if t.is_eog(tok):
            break
        t.decode(tok)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("-t", "--threads", type=int, default=2)
    args = ap.parse_args()
    set_log_level(3)
    ref = None
    print(f"| model | perplexity | next-token top-1 agreement | greedy identical | mean common prefix |")
    print(f"|---|---|---|---|---|")
    for path in args.models:
        t = Target(path, n_ctx=4096, n_threads=args.threads, n_batch=256)
        ids = t.tokenize(held_out_text(), add_special=False)
        nll, am = score(t, ids)
        outs = [greedy(t, chat(t, p), args.n) for p in PROMPTS]
        if ref is None:
            ref = (am, outs)
        agree = float((am == ref[0]).mean())
        same = sum(a == b for a, b in zip(outs, ref[1])) / len(outs)
        prefix = np.mean([next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                          for a, b in zip(outs, ref[1])])
        print(f"| {path.rsplit('/', 1)[-1]} ({len(ids)} tokens) | {math.exp(nll / (len(ids) - 1)):.3f} | "
              f"{agree:.3f} | {same:.2f} | {prefix:.1f} |", flush=True)
        del t


if __name__ == "__main__":
    main()
