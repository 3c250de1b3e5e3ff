"""python -m pyeagle.bench: measurements that print a table.

  --verify-curve   ms of one target pass over N tree nodes (one llama_decode, seq-id tree
                   encoding) next to a plain llama_decode of N tokens, for N = 1..64
  (default)        plain decoding vs EAGLE over the same prompts, in one run
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from . import models
from ._core import Target
from .engine import Engine

PROMPT = ("<|im_start|>user\nExplain, with an example, why speculative decoding keeps the output of the target "
          "model unchanged while making generation faster on a local machine. Keep it short.<|im_end|>\n"
          "<|im_start|>assistant\n")


def chain_and_tree(n: int) -> tuple[list[int], list[int]]:
    """parents of an N-node chain, and of an N-node tree with 4 children per node (breadth first)."""
    chain = [-1] + list(range(n - 1))
    tree = [-1] + [(i - 1) // 4 for i in range(1, n)]
    return chain, tree


def verify_curve(model: str, n_threads: int, reps: int, sizes: list[int]) -> None:
    t = Target(model, n_ctx=2048, n_threads=n_threads, n_batch=512, n_seq_max=64)
    t.features = True  # the engine verifies with features on: every node is an output row
    prefix = t.tokenize(PROMPT)
    t.prefill(prefix)
    rng = np.random.default_rng(0)
    print(f"# {model}\n# prefix {len(prefix)} tokens, n_threads {t.n_threads}, median of {reps}, ms")
    print(f"| N | plain decode of N | verify chain of N | verify tree of N (4-ary) | tree / plain |")
    print(f"|---|---|---|---|---|")
    for n in sizes:
        chain, tree = chain_and_tree(n)
        times = {"plain": [], "chain": [], "tree": []}
        for _ in range(reps):
            toks = [int(x) for x in rng.integers(100, t.n_vocab - 1, n)]
            # plain: N tokens appended to the sequence (all outputs), then removed again
            t0 = time.perf_counter()
            t.prefill(toks)
            times["plain"].append(time.perf_counter() - t0)
            t.truncate(len(prefix))
            for name, parents in (("chain", chain), ("tree", tree)):
                t0 = time.perf_counter()
                t.verify(toks, parents)
                times[name].append(time.perf_counter() - t0)
                t.discard_tree()
        med = {k: 1000 * statistics.median(v) for k, v in times.items()}
        print(f"| {n} | {med['plain']:.1f} | {med['chain']:.1f} | {med['tree']:.1f} | {med['tree'] / med['plain']:.2f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pyeagle.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", help="target GGUF (default: the embedded SmolLM2-135M-Instruct)")
    ap.add_argument("-md", "--model-draft", help="draft head GGUF")
    ap.add_argument("-t", "--threads", type=int, default=0)
    ap.add_argument("-n", type=int, default=128, help="new tokens per prompt")
    ap.add_argument("--verify-curve", action="store_true")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--sizes", default="1,2,4,8,16,32,64")
    args = ap.parse_args(argv)
    model = args.model or str(models.default_target())
    if args.verify_curve:
        verify_curve(model, args.threads, args.reps, [int(s) for s in args.sizes.split(",")])
        return 0
    eng = Engine(model, draft=args.model_draft, n_threads=args.threads)
    plain = eng.generate(PROMPT, max_tokens=args.n, draft=False)
    eagle = eng.generate(PROMPT, max_tokens=args.n) if eng.has_draft else None
    print("| mode | tokens | tokens/s | tau |\n|---|---|---|---|")
    print(f"| plain | {plain.stats.n_tokens} | {plain.stats.tokens_per_s:.1f} | 1.00 |")
    if eagle:
        print(f"| eagle | {eagle.stats.n_tokens} | {eagle.stats.tokens_per_s:.1f} | {eagle.stats.tau:.2f} |")
        print(f"identical: {plain.tokens == eagle.tokens}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
