"""tau (tokens per target pass) of a head for several fixed tree sizes on MT-bench first turns.

  python benchmarks/tau_by_tree_size.py [-md HEAD.gguf] [--sizes 4,8,16,32,60] [-n 256] [--limit N] [--every K]

Greedy, the default target; one line per tree size as soon as it is measured (tau does not
depend on timing, so this can run beside other work; the tok/s column then does). Depth and
top-k per size: depth 8 / top-k 4 up to 32 nodes, the paper's depth 6 / top-k 10 at 60.
"""
from __future__ import annotations

import argparse
import json
import time

from pyeagle import Engine, models
from pyeagle.template import ChatTemplate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-md", "--model-draft", default=None)
    ap.add_argument("--sizes", default="4,8,16,32,60")
    ap.add_argument("-n", type=int, default=256)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--every", type=int, default=1, help="every k-th question (5: 16 across all categories)")
    ap.add_argument("-t", "--threads", type=int, default=0)
    args = ap.parse_args()
    questions = [json.loads(line) for line in open(models.cache_dir() / "mt_bench_question.jsonl")]
    questions = questions[::args.every]
    if args.limit:
        questions = questions[:args.limit]
    eng = Engine(models.default_target(), draft=args.model_draft or models.default_head(), n_threads=args.threads)
    tmpl = ChatTemplate.from_target(eng.target)
    prompts = [eng.tokenize(tmpl.render([{"role": "user", "content": q["turns"][0]}])) for q in questions]
    print(f"| nodes | depth / top-k | prompts | tokens | target passes | tau | EAGLE tok/s |")
    print(f"|---|---|---|---|---|---|---|", flush=True)
    for n in (int(s) for s in args.sizes.split(",")):
        depth, k = (6, 10) if n >= 60 else (8, 4)
        tokens = passes = 0
        t0 = time.perf_counter()
        for ids in prompts:
            eng.reset()
            s = eng.generate(ids, max_tokens=args.n, n_tree=n, n_depth=depth, n_top_k=k).stats
            tokens += s.n_tokens - 1  # the first token comes from the prefill
            passes += s.n_passes
        dt = time.perf_counter() - t0
        print(f"| {n} | {depth} / {k} | {len(prompts)} | {tokens} | {passes} | {tokens / passes:.2f} | "
              f"{tokens / dt:.1f} |", flush=True)


if __name__ == "__main__":
    main()
