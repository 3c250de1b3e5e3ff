"""What the round policy's verify cost curve costs a reply: a fresh engine's first generation
(which measures the curve), then one whose context has doubled (which re-measures it: since
commit 30ea9b4 by rescaling it from a few passes), then the curve it ended with against a fresh
measurement at that context. And the first reply after `Engine.warm_up()`. Prefill times as the
engine reports them (`Stats.t_prefill`: the prompt and the measurement). Markdown on stdout; run
alone on the machine.

    python benchmarks/curve_remeasure.py [-t THREADS]
"""
from __future__ import annotations

import argparse
import random

from pyeagle import Engine


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-t", "--threads", type=int, default=2)
    args = ap.parse_args()
    rng = random.Random(0)
    short = [rng.randrange(1000, 20000) for _ in range(60)]
    longer = short + [rng.randrange(1000, 20000) for _ in range(400)]

    e = Engine(n_threads=args.threads)
    first = e.generate(short, max_tokens=1).stats.t_prefill
    grown = e.generate(longer, max_tokens=1).stats.t_prefill
    e.reset()
    again = e.generate(longer, max_tokens=1).stats.t_prefill  # the same prompt, prefilled again: no measurement
    curve = dict(e._core.verify_curve())
    f = Engine(n_threads=args.threads)
    f.generate(longer, max_tokens=1)
    fresh = dict(f._core.verify_curve())
    w = Engine(n_threads=args.threads)
    warm = w.warm_up()
    after_warm = w.generate(short, max_tokens=1).stats.t_prefill

    print(f"{args.threads} threads, random token ids; prefill seconds (`Stats.t_prefill`)\n")
    print("| generation | prefill s |")
    print("|---|---|")
    print(f"| fresh engine, 60-token prompt (measures the curve) | {first:.2f} |")
    print(f"| then a 460-token prompt (context doubled: re-measures) | {grown:.2f} |")
    print(f"| the 460-token prompt again after reset() (no measurement) | {again:.2f} |")
    print(f"| Engine.warm_up() on a fresh engine | {warm:.2f} |")
    print(f"| then the 60-token prompt | {after_warm:.2f} |")
    print("\n| tokens | curve after the re-measurement, ms | fresh measurement at 460 tokens, ms | ratio |")
    print("|---|---|---|---|")
    for n in sorted(curve):
        if n in fresh:
            print(f"| {n} | {1000 * curve[n]:.1f} | {1000 * fresh[n]:.1f} | {curve[n] / fresh[n]:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
