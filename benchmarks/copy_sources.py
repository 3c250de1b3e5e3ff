"""Copy-draft sources side by side: prompt lookup against the suffix tree, and with or without the
engine's earlier outputs (the store), each alone (no head) and with the head, under the round
policy; per category and overall, in one run.

    python benchmarks/copy_sources.py [--prompts FILE.jsonl] [--limit N] [-n 256] [-t 2] [--json OUT]
                                      [--configs NAME,NAME,...]

Each prompt is decoded plainly, then by each configuration, back to back (so that drifting machine
load hits them alike). Every configuration has its own engine, so that what one learns (its
acceptance rates, the head's worth) does not leak into another. Speed is the geometric mean of the
per-prompt tok/s ratios to plain decoding; tau = tokens per target pass after the prefill.
"""
from __future__ import annotations

import argparse
import json
import sys

from pyeagle import Engine
from pyeagle.bench import gmean, load_prompts, mtbench_file, progress
from pyeagle.template import ChatTemplate

CONFIGS = {
    "lookup alone": dict(copy_only=True, suffix=False, store=False),
    "lookup + store alone": dict(copy_only=True, suffix=False, store=True),
    "suffix tree alone": dict(copy_only=True, suffix=True, store=False),
    "head + lookup (default)": dict(suffix=False, store=False),
    "head + lookup + store": dict(suffix=False, store=True),
    "head + suffix tree": dict(suffix=True, store=False),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", help="JSONL prompts (default: MT-bench first turns)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N prompts")
    ap.add_argument("-n", type=int, default=256, help="new tokens per prompt")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--json", help="write per-prompt results here")
    ap.add_argument("--configs", help="comma-separated configuration names (default: all): " + ", ".join(CONFIGS))
    args = ap.parse_args()
    configs = CONFIGS
    if args.configs:
        names = [n.strip() for n in args.configs.split(",")]
        unknown = [n for n in names if n not in CONFIGS]
        if unknown:
            ap.error(f"unknown configurations {unknown}; choose from {list(CONFIGS)}")
        configs = {n: CONFIGS[n] for n in names}
    prompts = load_prompts(args.prompts or mtbench_file())
    if args.limit:
        prompts = prompts[:args.limit]
    plain_eng = Engine(n_threads=args.threads, draft=None)
    # each engine keeps its own outputs (remember, the default), as a live engine answering these
    # prompts one after the other would: the store configurations copy from the earlier answers
    engines = {name: Engine(n_threads=args.threads, **kw) for name, kw in configs.items()}
    template = ChatTemplate.from_target(plain_eng.target, None)
    rows = []
    for p in progress("prompts", prompts):
        ids = plain_eng.tokenize(template.render([{"role": "user", "content": p.question}]))
        plain_eng.reset()
        plain = plain_eng.generate(ids, max_tokens=args.n, draft=False, remember=False).stats
        row = {"id": p.id, "category": p.category, "plain_tps": plain.tokens_per_s}
        for name, eng in engines.items():
            eng.reset()
            s = eng.generate(ids, max_tokens=args.n).stats
            row[name] = {"tps": s.tokens_per_s, "tokens": s.n_tokens, "passes": s.n_passes,
                         "rounds_by_kind": s.rounds_by_kind}
        rows.append(row)
    cats = sorted({r["category"] for r in rows}) + ["**overall**"]
    print(f"# Copy-draft sources: {len(rows)} prompts, {args.n} new tokens, greedy, {args.threads} threads\n")
    head = ["category"] + [f"{n}: speed" for n in configs] + [f"{n}: tau" for n in configs]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for c in cats:
        rs = [r for r in rows if c == "**overall**" or r["category"] == c]
        speed = [gmean([r[n]["tps"] / r["plain_tps"] for r in rs]) for n in configs]
        tau = [sum(r[n]["tokens"] - 1 for r in rs) / max(sum(r[n]["passes"] for r in rs), 1) for n in configs]
        print("| " + " | ".join([c] + [f"{x:.2f}" for x in speed] + [f"{x:.2f}" for x in tau]) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
