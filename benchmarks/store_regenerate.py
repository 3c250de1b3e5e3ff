"""The "regenerate" case: the same question answered a second time, with and without the engine's store of
earlier outputs (copy drafts across generations, `store=True`).

    python benchmarks/store_regenerate.py [--prompts FILE.jsonl] [--limit 24] [-n 256] [-t 2]
                                          [--temp 0.7] [--json OUT]

For each prompt: a first answer (sampled, seed 1) is decoded once and remembered by the store
engine (the one without the store never sees it); then the second answer (seed 2) is decoded
plainly, by EAGLE with the store and by EAGLE without it, back to back. Sampling keeps the
target's distribution whatever is drafted, but the drafts change which random numbers are drawn,
so the three second answers are different samples: compare speed over many prompts (geometric
mean of per-prompt tok/s ratios to plain decoding), not prompt by prompt.
"""
from __future__ import annotations

import argparse
import json
import sys

from pyeagle import Engine
from pyeagle.bench import gmean, load_prompts, mtbench_file, progress
from pyeagle.template import ChatTemplate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", help="JSONL prompts (default: MT-bench first turns)")
    ap.add_argument("--limit", type=int, default=24, help="the first N prompts (0: all)")
    ap.add_argument("-n", type=int, default=256, help="new tokens per answer")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--temp", type=float, default=0.7, help="sampling temperature of both answers")
    ap.add_argument("--json", help="write per-prompt results here")
    args = ap.parse_args()
    prompts = load_prompts(args.prompts or mtbench_file())
    if args.limit:
        prompts = prompts[:args.limit]
    with_store = Engine(n_threads=args.threads, store=True)
    without = Engine(n_threads=args.threads, store=False)
    template = ChatTemplate.from_target(with_store.target, None)
    rows = []
    for p in progress("prompts", prompts):
        ids = with_store.tokenize(template.render([{"role": "user", "content": p.question}]))
        kw = dict(max_tokens=args.n, temperature=args.temp, remember=False)
        with_store.reset()
        first = with_store.generate(ids, seed=1, **kw)
        with_store.remember(first.tokens)
        row = {"id": p.id, "category": p.category, "first_tokens": len(first.tokens)}
        for name, eng, draft in (("plain", without, False), ("store", with_store, True), ("no store", without, True)):
            eng.reset()
            s = eng.generate(ids, seed=2, draft=draft, **kw).stats
            row[name] = {"tps": s.tokens_per_s, "tokens": s.n_tokens, "passes": s.n_passes}
        rows.append(row)
    print(f"# Regenerate: {len(rows)} prompts, {args.n} new tokens, temperature {args.temp}, {args.threads} threads\n")
    print("| arm | speed vs plain (gmean of per-prompt ratios) | tau | tokens |\n|---|---|---|---|")
    for name in ("store", "no store"):
        speed = gmean([r[name]["tps"] / r["plain"]["tps"] for r in rows])
        tau = sum(r[name]["tokens"] - 1 for r in rows) / max(sum(r[name]["passes"] for r in rows), 1)
        print(f"| EAGLE, {name} | {speed:.2f} | {tau:.2f} | {sum(r[name]['tokens'] for r in rows)} |")
    print(f"| plain | 1.00 | 1.00 | {sum(r['plain']['tokens'] for r in rows)} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
