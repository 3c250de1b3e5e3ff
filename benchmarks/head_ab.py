"""Heads side by side at the product's defaults: which one to ship.

    python benchmarks/head_ab.py HEAD.gguf [HEAD.gguf ...] [--prompts FILE.jsonl] [--limit N]
                                 [-n 256] [-t 2] [--json OUT]

For each prompt (default: MT-bench's 80 first turns): plain decoding, then one EAGLE run per head
(the engine's defaults: round policy on, prompt lookup on), the heads in an order that rotates
from prompt to prompt so that drifting machine load hits them alike. Prints, per category and
overall, the geometric mean of per-prompt tok/s ratios to plain, tau, the worst prompt, and how
many prompts each head's greedy output differs from plain decoding on (the bench's own divergence
analysis explains any). `pyeagle.bench --peer` compares one head with llama.cpp's n-gram
speculation; this compares heads with each other.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pyeagle import Engine
from pyeagle.bench import Agg, gmean, load_prompts, mtbench_file, progress
from pyeagle.template import ChatTemplate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("heads", nargs="+", help="EAGLE head GGUF files")
    ap.add_argument("--prompts", help="JSONL prompts (default: MT-bench first turns)")
    ap.add_argument("--limit", type=int, default=0, help="the first N prompts (0: all)")
    ap.add_argument("-n", type=int, default=256, help="new tokens per prompt")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--json", help="write per-prompt results here")
    args = ap.parse_args()
    for h in args.heads:
        if not Path(h).is_file():
            ap.error(f"no such head file: {h}")
    names = [Path(h).name for h in args.heads]
    if len(set(names)) != len(names):
        ap.error("give the heads distinct file names")
    prompts = load_prompts(args.prompts or mtbench_file())
    if args.limit:
        prompts = prompts[:args.limit]
    plain = Engine(n_threads=args.threads, draft=None)
    engines = {n: Engine(n_threads=args.threads, draft=h) for n, h in zip(names, args.heads)}
    template = ChatTemplate.from_target(plain.target, None)
    kw = dict(max_tokens=args.n, temperature=0.0, remember=False)
    for eng in (plain, *engines.values()):  # warm-up: first-call costs out of the first prompt
        eng.reset()
        eng.generate(plain.tokenize(template.render([{"role": "user", "content": "Hi"}])), max_tokens=8,
                     draft=eng is not plain, remember=False)
    aggs = {n: Agg() for n in names}
    rows = []
    for i, p in enumerate(progress("prompts", prompts)):
        ids = plain.tokenize(template.render([{"role": "user", "content": p.question}]))
        plain.reset()
        base = plain.generate(ids, draft=False, **kw)
        row = {"id": p.id, "category": p.category, "plain_tps": base.stats.tokens_per_s}
        order = names[i % len(names):] + names[:i % len(names)]
        for n in order:
            eng = engines[n]
            eng.reset()
            out = eng.generate(ids, **kw)
            aggs[n].add(out.stats)
            row[n] = {"tps": out.stats.tokens_per_s, "tau": out.stats.tau, "tokens": out.stats.n_tokens,
                      "passes": out.stats.n_passes, "same": list(out.tokens) == list(base.tokens)}
        rows.append(row)

    def ratio(r: dict, n: str) -> float:
        return r[n]["tps"] / r["plain_tps"]

    cats = list(dict.fromkeys(p.category for p in prompts))
    print(f"# Heads side by side: {len(rows)} prompts ({args.prompts or 'MT-bench first turns'}), {args.n} new tokens, "
          f"greedy, {args.threads} threads, engine defaults\n")
    print("EAGLE / plain, geometric mean of per-prompt tok/s ratios:\n")
    print("| head | " + " | ".join(cats) + " | overall | tau | worst prompt | prompts < 1.0 | output != plain |")
    print("|---|" + "---|" * (len(cats) + 5))
    for n in names:
        per_cat = [gmean([ratio(r, n) for r in rows if r["category"] == c]) for c in cats]
        worst = min(rows, key=lambda r: ratio(r, n))
        print(f"| {n} | " + " | ".join(f"{x:.2f}" for x in per_cat) +
              f" | **{gmean([ratio(r, n) for r in rows]):.3f}** | {aggs[n].tau:.2f} | "
              f"{ratio(worst, n):.2f} ({worst['id']}) | {sum(ratio(r, n) < 1.0 for r in rows)} | "
              f"{sum(not r[n]['same'] for r in rows)} |")
    if len(names) > 1:
        a, b = names[0], names[-1]
        wins = sum(ratio(r, b) > ratio(r, a) for r in rows)
        print(f"\n{b} / {a}: {gmean([ratio(r, b) / ratio(r, a) for r in rows]):.3f} (geometric mean of per-prompt "
              f"ratios), faster on {wins} of {len(rows)} prompts.")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": " ".join(sys.argv), "heads": args.heads, "rows": rows},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
