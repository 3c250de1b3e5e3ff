"""Head-alone acceptance (tau) on MT-bench, per tree size and per category, without the plain arm.

    python benchmarks/head_tau.py -md HEAD.gguf [--sizes 8,60] [--depth 6] [--topk 10] [--lookup 0]
                                  [-n 256] [-t 2] [--limit N] [--json OUT]
    python benchmarks/head_tau.py --compare BASE.json OTHER.json    # two --json runs, paired by prompt

Issue #17's measurement: every MT-bench first turn, greedy, fixed trees (the round policy off:
every round verifies the n_tree best drafts), depth 6, top-k 10, no prompt lookup. tau = tokens
per target pass after the prefill (as `Stats.tau` and `pyeagle.bench --tree-sweep`). Greedy
decoding makes tau a property of the head and the prompts, not of the machine's load: this script
skips the plain runs and the verify timings that `--tree-sweep` adds (80 plain answers: 5.8 minutes
on a 2-core EPYC). For speed, use `python -m pyeagle.bench`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pyeagle import Engine
from pyeagle.bench import Agg, load_prompts, mtbench_file, progress
from pyeagle.template import ChatTemplate


def compare(base: str, other: str) -> None:
    """Per-prompt tau of two `--json` runs, paired by (n_tree, prompt id): the mean difference, its
    standard error and the share of prompts where OTHER is higher. Greedy runs of two heads on one
    machine differ only by the heads, so pairing removes the prompts' own spread."""
    def load(f):
        return {(r["n_tree"], r["id"]): r["tokens"] / r["passes"] for r in json.loads(Path(f).read_text())["rows"]}
    a, b = load(base), load(other)
    for n in sorted({k[0] for k in a.keys() & b.keys()}):
        d = [b[k] - a[k] for k in sorted(a.keys() & b.keys()) if k[0] == n]
        mean = sum(d) / len(d)
        se = (sum((x - mean) ** 2 for x in d) / len(d)) ** 0.5 / len(d) ** 0.5
        print(f"n_tree {n}: {len(d)} prompts, per-prompt tau {other} - {base}: {mean:+.3f} "
              f"(standard error {se:.3f}), higher on {sum(x > 0 for x in d) / len(d):.0%}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", nargs=2, metavar=("BASE.json", "OTHER.json"),
                    help="compare two --json runs per prompt instead of running a head")
    ap.add_argument("-md", "--model-draft", help="EAGLE head GGUF")
    ap.add_argument("-m", "--model", help="target GGUF (default: the embedded default target)")
    ap.add_argument("--prompts", help="JSONL prompts (default: MT-bench first turns)")
    ap.add_argument("--limit", type=int, default=0, help="the first N prompts (0: all)")
    ap.add_argument("--sizes", default="8,60", help="tree sizes (n_tree), comma-separated")
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--topk", type=int, default=10)
    ap.add_argument("--lookup", type=int, default=0, help="prompt-lookup tokens in the tree (0: head alone)")
    ap.add_argument("-n", type=int, default=256, help="new tokens per prompt")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--json", help="write per-prompt results here")
    args = ap.parse_args()
    if args.compare:
        missing = [f for f in args.compare if not Path(f).is_file()]
        if missing:
            ap.error(f"no such --json result: {', '.join(missing)}")
        compare(*args.compare)
        return 0
    if not args.model_draft:
        ap.error("-md/--model-draft is required (or --compare)")
    if not Path(args.model_draft).is_file():
        ap.error(f"no such head file: {args.model_draft}")
    prompts = load_prompts(args.prompts or mtbench_file())
    if args.limit:
        prompts = prompts[:args.limit]
    sizes = [int(s) for s in args.sizes.split(",")]
    eng = Engine(args.model, draft=args.model_draft, n_threads=args.threads, n_depth=args.depth, n_top_k=args.topk,
                 n_lookup=args.lookup, adaptive=False)
    template = ChatTemplate.from_target(eng.target, None)
    ids = [eng.tokenize(template.render([{"role": "user", "content": p.question}])) for p in prompts]
    cats = list(dict.fromkeys(p.category for p in prompts))
    aggs = {(n, c): Agg() for n in sizes for c in (None, *cats)}  # (n_tree, category or None: all)
    rows = []
    for n in sizes:
        for p, x in zip(progress(f"n_tree {n}", prompts), ids):
            eng.reset()
            s = eng.generate(x, max_tokens=args.n, temperature=0.0, draft=True, remember=False, n_tree=n,
                             adaptive=False).stats
            aggs[n, None].add(s)
            aggs[n, p.category].add(s)
            rows.append({"n_tree": n, "id": p.id, "category": p.category, "tokens": s.n_tokens, "passes": s.n_passes})
        # each size's total as soon as it is known (a 60-node run takes several times an 8-node one)
        print(f"n_tree {n}: tau {aggs[n, None].tau:.3f}", file=sys.stderr, flush=True)

    print(f"# Head-alone tau: `{args.model_draft}`\n\ncommand: `python benchmarks/head_tau.py {' '.join(sys.argv[1:])}`\n\n"
          f"{len(prompts)} prompts "
          f"({args.prompts or 'MT-bench first turns'}), {args.n} new tokens, greedy, fixed trees, depth {args.depth}, "
          f"top-k {args.topk}, prompt lookup {args.lookup}\n")
    print("| n_tree | tau | " + " | ".join(cats) + " |\n|---|---|" + "---|" * len(cats))
    for n in sizes:
        print(f"| {n} | **{aggs[n, None].tau:.2f}** | " + " | ".join(f"{aggs[n, c].tau:.2f}" for c in cats) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
