"""What a round's copy proposal costs: prompt lookup against the suffix tree, per call, over contexts
of 512 to 16384 tokens of real text (the target's tokens of MT-bench-style answers, repeated to
reach the longer lengths), median of 50 calls each. Calls go through the bindings
(`_core.prompt_lookup` / `_core.suffix_lookup`, as the engine calls them each round, with its
arguments: matches up to 128 tokens, copies up to 64, a tree of up to 128 nodes), so each time
includes converting the context from a Python list: compare the two columns, not the absolute.

    cd docs && python ../benchmarks/copy_lookup_cost.py [BENCH.json]

BENCH.json: a `python -m pyeagle.bench --json` output whose plain answers are the text (default:
the first 80 MT-bench questions answered here by plain decoding, 128 tokens each).
"""
from __future__ import annotations

import json
import statistics
import sys
import time

from pyeagle import Engine, _core
from pyeagle.bench import load_prompts, mtbench_file


def main() -> None:
    eng = Engine(draft=None, n_threads=2)
    toks: list[int] = []
    if len(sys.argv) > 1:
        for p in json.load(open(sys.argv[1]))["prompts_detail"]:
            toks += eng.tokenize(p["plain"]["text"])
    else:
        for p in load_prompts(mtbench_file()):
            ids = eng.tokenize(eng.chat_template.render([{"role": "user", "content": p.question}]))
            toks += eng.generate(ids, max_tokens=128, draft=False).tokens
    print(f"{len(toks)} tokens of answers\n")
    print("| context tokens | prompt lookup, us | suffix tree, us |")
    print("|---|---|---|")
    for n in (512, 2048, 4096, 16384):
        ctx = toks[-n:] if n <= len(toks) else (toks * (n // len(toks) + 1))[:n]
        row = []
        for f in (lambda: _core.prompt_lookup(ctx, 128, 64, 1), lambda: _core.suffix_lookup(ctx, 128, 64, 128)):
            ts = []
            for _ in range(50):
                t0 = time.perf_counter()
                f()
                ts.append(time.perf_counter() - t0)
            row.append(1e6 * statistics.median(ts))
        print(f"| {n} | {row[0]:.1f} | {row[1]:.1f} |")


if __name__ == "__main__":
    main()
