"""How much verify time goes to drafts deeper than a generation still needs. A round emits its
accepted drafts and one token more, so with `left` tokens still wanted, nodes deeper than left - 1
can only be thrown away. One engine (the defaults, warmed up) answers the MT-bench first turns with
the round trace on; each round's tree is priced by the engine's own verify curve, and the price of
its nodes past the budget (curve at the tree's size minus at the size cut to that depth) is summed.

    cd docs && python ../benchmarks/budget_waste.py [-n 256] [--limit N]

Prints the share of priced verify time past the budget, over all prompts and per prompt's worst,
and the geometric-mean speed-up the cut would give if nothing else changed. Since the engine cuts
drafts to the budget (the commit after 6cb18c8) it prints 0; at 6cb18c8 it measured what the cut saves.
"""
from __future__ import annotations

import argparse
import math

from pyeagle import Engine
from pyeagle.bench import load_prompts, mtbench_file
from round_efficiency import cost_of


def depth_cut_size(parents: list[int], max_depth: int) -> int:
    depth = [0] * len(parents)
    for i in range(1, len(parents)):
        depth[i] = depth[parents[i]] + 1
    return sum(d <= max_depth for d in depth)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=256, help="max tokens per answer (default 256)")
    ap.add_argument("--limit", type=int, default=0, help="first N prompts only")
    args = ap.parse_args()
    eng = Engine(n_threads=2)
    eng.warm_up()
    # the engine's own curve, priced by the policy's rule (round_efficiency.cost_of)
    price = cost_of(",".join(f"{n}:{s}" for n, s in eng._core.verify_curve()))

    eng._core.set_trace(True)
    prompts = load_prompts(mtbench_file())[: args.limit or None]
    total = past = 0.0
    logs, worst = [], (0.0, "")
    for p in prompts:
        ids = eng.tokenize(eng.chat_template.render([{"role": "user", "content": p.question}]))
        n0 = len(eng._core.trace())
        out = eng.generate(ids, max_tokens=args.n)
        t = w = 0.0
        for n_past, _kind, toks, par in eng._core.trace()[n0:]:
            left = args.n - (n_past - len(ids) + 1)  # the round's root is emitted, not yet in the KV
            t += price(len(toks))
            if out.stop_reason == "max_tokens":  # a budget known in advance
                w += price(len(toks)) - price(depth_cut_size(list(par), max(left - 1, 0)))
        total, past = total + t, past + w
        logs.append(-math.log(1 - w / t) if t else 0.0)
        worst = max(worst, (w / t if t else 0.0, p.id))
    print(f"{len(prompts)} prompts, {args.n} tokens: verify time (priced by the curve) past the budget "
          f"{100 * past / total:.2f}%, worst prompt {100 * worst[0]:.1f}% (question {worst[1]}); "
          f"geometric-mean speed-up without it {math.exp(sum(logs) / len(logs)):.4f}x")


if __name__ == "__main__":
    main()
