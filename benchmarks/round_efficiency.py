"""Where a `python -m pyeagle.bench --peer --json OUT.json` run's time went, and what copies could
give at best on this machine's cost curve.

    python benchmarks/round_efficiency.py OUT.json [--curve 1:1,2:1.9,...]

1. Rounds by kind (plain, lookup, head) over all prompts: rounds, tokens, seconds, tokens/s, and
   the EAGLE run's plain rounds against the plain run's steps (the policy's own overhead).
2. The prompts on which llama.cpp's ngram-mod drafted nothing (it was plain decoding there): its
   speed and EAGLE's against plain, geometric means.
3. A copy ceiling: the plain answers, retokenized, walked token by token; at each position the
   longest earlier occurrence of the context's end (the prompt and the answer so far, <= 32 tokens)
   proposes what followed it. With hindsight, per match length, the chain length k maximising mean
   accepted + 1 - cost(k + 1) (in single steps, from --curve) is chosen; the walk then pays
   cost(k + 1) per round and advances by the accepted copies + 1. The speed-up it prints is what a
   policy that knew each match length's acceptance exactly would get from copies alone. Also the
   same statistics for matches in the earlier answers of the run (the store).
"""
from __future__ import annotations

import argparse
import collections
import json
import sys

from pyeagle import Engine, models
from pyeagle.bench import gmean, load_prompts, mtbench_file
from pyeagle.template import ChatTemplate

N_MAX, DEPTH, KEY = 32, 16, 3
# verify cost of N tokens in single steps (this project's CPU, `python -m pyeagle.bench --verify-curve`, 2026-12-01)
CURVE = "1:1,2:1.9,3:2.7,4:2.7,5:3.3,6:3.5,7:3.7,8:3.7,12:5.3,16:6.9"


def cost_of(spec: str):
    """cost(n) from "N:cost,...": a size between measured ones costs what the next one does (the
    policy's rule), beyond the last one in proportion."""
    curve = sorted((int(a), float(b)) for a, b in (x.split(":") for x in spec.split(",")))

    def cost(n):
        for m, c in curve:
            if m >= n:
                return c
        return curve[-1][1] * n / curve[-1][0]
    return cost


def longest_local(ctx):
    best = (0, [])
    for e in range(len(ctx) - 2, -1, -1):
        if ctx[e] != ctx[-1]:
            continue
        n = 1
        while n < N_MAX and e - n >= 0 and ctx[e - n] == ctx[-1 - n]:
            n += 1
        if n > best[0]:
            best = (n, ctx[e + 1:e + 1 + DEPTH])
    return best


def accepted(draft, truth):
    n = 0
    for a, b in zip(draft, truth):
        if a != b:
            break
        n += 1
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json")
    ap.add_argument("--prompts", help="the bench's --prompts file (default: MT-bench)")
    ap.add_argument("--curve", default=CURVE,
                    help="verify cost of N tokens in single steps, N:cost,... (default: this project's CPU, "
                         "python -m pyeagle.bench --verify-curve, 2026-12-01)")
    args = ap.parse_args()
    doc = json.load(open(args.json))
    runs = doc["prompts_detail"]
    cost = cost_of(args.curve)

    print("## Rounds by kind (EAGLE runs, all prompts)\n")
    print("| kind | rounds | tokens | seconds | ms / round | tokens/s |\n|---|---|---|---|---|---|")
    for k in ("plain", "lookup", "head"):
        n = sum(r["eagle"]["rounds_by_kind"][k] for r in runs)
        tok = sum(r["eagle"]["tokens_by_kind"][k] for r in runs)
        sec = sum(r["eagle"]["time_by_kind"][k] for r in runs)
        print(f"| {k} | {n} | {tok} | {sec:.1f} | {1000 * sec / max(n, 1):.2f} | {tok / sec if sec else 0:.1f} |")
    plain_steps = sum(r["plain"]["t_total"] - r["plain"]["t_prefill"] for r in runs) / sum(r["plain"]["n_tokens"] for r in runs)
    print(f"\nThe plain runs: {1000 * plain_steps:.2f} ms per token, {1 / plain_steps:.1f} tokens/s.\n")

    zero = [r for r in runs if r.get("peer") and r["peer"].get("n_drafted") == 0]
    if zero:
        print(f"## The {len(zero)} prompts on which ngram-mod drafted nothing\n")
        print(f"ngram-mod / plain {gmean([r['peer']['tokens_per_s'] / r['plain']['tokens_per_s'] for r in zero]):.3f}, "
              f"EAGLE / plain {gmean([r['eagle']['tokens_per_s'] / r['plain']['tokens_per_s'] for r in zero]):.3f}\n")

    eng = Engine(str(models.default_target()), draft=None)
    template = ChatTemplate.from_target(eng.target, None)
    by_id = {str(p.id): p for p in load_prompts(args.prompts or mtbench_file())}
    docs = []
    for r in runs:
        ids = eng.tokenize(template.render([{"role": "user", "content": by_id[str(r["id"])].question}]))
        docs.append((ids, eng.tokenize(r["plain"]["text"], add_special=False), r["category"]))

    local = collections.defaultdict(list)
    stored = collections.defaultdict(list)
    index = collections.defaultdict(list)  # 3-token key -> (answer, end position): earlier answers
    answers = []
    for ids, ans, _ in docs:
        for t in range(1, len(ans) - 1):
            ctx, truth = ids + ans[:t], ans[t:]
            n, cont = longest_local(ctx)
            local[min(n, N_MAX)].append(accepted(cont, truth))
            best = (0, [])
            for j, e in index.get(tuple(ctx[-KEY:]), ()):
                s = answers[j]
                m = KEY
                while m < N_MAX and e - m >= 0 and m < len(ctx) and s[e - m] == ctx[-1 - m]:
                    m += 1
                if m >= best[0]:
                    best = (m, s[e + 1:e + 1 + DEPTH])
            if best[0]:
                stored[min(best[0], N_MAX)].append(accepted(best[1], truth))
        answers.append(ans)
        for e in range(KEY - 1, len(ans) - 1):
            index[tuple(ans[e - KEY + 1:e + 1])].append((len(answers) - 1, e))

    def best_k(v):
        return max((sum(min(x, k) for x in v) / len(v) + 1 - cost(k + 1), k) for k in range(0, DEPTH + 1))

    n_pos = sum(len(a) - 2 for _, a, _ in docs)
    for name, table in (("this context (prompt lookup)", local), ("earlier answers (the store)", stored)):
        print(f"## Copies from {name}: {sum(len(v) for v in table.values())} of {n_pos} positions have a match\n")
        print("| match length | positions | mean accepted (of 16) | P(first accepted) | best chain k | gain, steps |")
        print("|---|---|---|---|---|---|")
        for n in sorted(table):
            v = table[n]
            g, k = best_k(v)
            print(f"| {n} | {len(v)} | {sum(v) / len(v):.2f} | {sum(x >= 1 for x in v) / len(v):.2f} | {k} | {g:+.2f} |")
        print()

    ks = {n: best_k(v)[1] for n, v in local.items()}
    ratios, cats = [], collections.defaultdict(list)
    for ids, ans, cat in docs:
        t, steps = 1, 0.0
        while t < len(ans):
            n, cont = longest_local(ids + ans[:t])
            k = ks.get(min(n, N_MAX), 0)
            steps += cost(k + 1)
            t += (min(accepted(cont, ans[t:]), k) if k else 0) + 1
        r = (len(ans) - 1) / steps
        ratios.append(r)
        cats[cat].append(r)
    print("## Copy ceiling: prompt lookup with hindsight-calibrated chain lengths, speed-up over plain steps\n")
    print("| category | speed-up |\n|---|---|")
    for c in sorted(cats):
        print(f"| {c} | {gmean(cats[c]):.2f} |")
    print(f"| **overall** | {gmean(ratios):.2f} (worst prompt {min(ratios):.2f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
