"""Tau with and without prompt lookup on the first MT-bench questions: a quick A/B for tree settings.

    python benchmarks/lookup_subset.py --limit 10 8:0 8:32 60:0 60:32

Each CONFIG is n_tree:n_lookup (depth 6, top-k 10, 256 new tokens, greedy, default model and
head, one thread). Greedy output does not depend on the tree, so configurations differ only in
how many target passes the same text takes: tau = tokens after the first / passes. "from
lookup" counts accepted drafts that only prompt lookup proposed. This is how the lookup design
was chosen (docs/BENCHMARKS.md, "Prompt lookup"); `python -m pyeagle.bench --tree-sweep` is the
full measurement.
"""
from __future__ import annotations

import argparse

from pyeagle import Engine
from pyeagle.bench import load_prompts, mtbench_file
from pyeagle.template import ChatTemplate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("configs", nargs="+", help="n_tree:n_lookup")
    ap.add_argument("--limit", type=int, default=10, help="the first N MT-bench questions")
    ap.add_argument("-n", type=int, default=256, help="new tokens per question")
    ap.add_argument("-t", "--threads", type=int, default=1)
    args = ap.parse_args()
    eng = Engine(n_threads=args.threads)
    template = ChatTemplate.from_target(eng.target, None)
    prompts = load_prompts(mtbench_file())[:args.limit]
    ids = [eng.tokenize(template.render([{"role": "user", "content": p.question}])) for p in prompts]
    print("| n_tree | n_lookup | tau | from lookup | tok/s |\n|---|---|---|---|---|")
    for cfg in args.configs:
        n_tree, n_lookup = (int(x) for x in cfg.split(":"))
        tokens = passes = from_lookup = 0
        seconds = 0.0
        for x in ids:  # (the KV prefix common to consecutive prompts is reused, as in a chat)
            s = eng.generate(x, max_tokens=args.n, n_depth=6, n_top_k=10, n_tree=n_tree, n_lookup=n_lookup).stats
            tokens, passes = tokens + s.n_tokens - 1, passes + s.n_passes
            from_lookup += s.n_lookup_accepted
            seconds += s.t_total - s.t_prefill
        print(f"| {n_tree} | {n_lookup} | {tokens / passes:.2f} | {from_lookup} | {tokens / seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
