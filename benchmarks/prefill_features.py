"""Prefill time with and without features (the hidden states an EAGLE head needs: every prompt row
an output), on the default target; markdown on stdout. Run on an idle machine.

    python benchmarks/prefill_features.py [-t THREADS] [--sizes 128,400,1000,2000] [--reps 3]
"""
from __future__ import annotations

import argparse
import random
import time

from pyeagle import Target, models, on_compute_thread


def measure(args: argparse.Namespace) -> list[tuple[int, float, float]]:
    t = Target(str(models.default_target()), n_ctx=max(args.sizes) + 64, n_threads=args.threads)
    rng = random.Random(0)
    out = []
    for n in args.sizes:
        ids = [rng.randrange(1000, 20000) for _ in range(n)]
        best = {}
        for features in (False, True):
            t.features = features
            times = []
            for _ in range(args.reps):
                t.truncate(0)
                t0 = time.perf_counter()
                t.prefill(ids)
                times.append(time.perf_counter() - t0)
            best[features] = min(times)
        out.append((n, best[False], best[True]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[128, 400, 1000, 2000])
    ap.add_argument("--reps", type=int, default=3, help="prefills per size and mode (the fastest counts)")
    args = ap.parse_args()
    rows = on_compute_thread(measure, args)
    print(f"prefill of random token ids, {args.threads} threads, best of {args.reps}\n")
    print("| prompt tokens | plain prefill, ms | with features (EAGLE), ms | ratio |\n|---|---|---|---|")
    for n, plain, feat in rows:
        print(f"| {n} | {1000 * plain:.0f} | {1000 * feat:.0f} | {feat / plain:.2f} |")


if __name__ == "__main__":
    main()
