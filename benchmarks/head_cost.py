"""Time of the draft head's steps on this machine: a catch-up prefix of n rows (n = 1 is the probe a
round pays before drafting) and a tree expansion step over n rows, median of --reps, in ms and in
single target steps (one plain decode at a 150-token context). Markdown on stdout; run alone.

    python benchmarks/head_cost.py [-md HEAD] [-t THREADS] [--reps 15]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from pyeagle import DraftHead, Target, models, on_compute_thread


def measure(args: argparse.Namespace) -> list[tuple[str, float]]:
    t = Target(str(models.default_target()), n_ctx=1024, n_threads=args.threads)
    h = DraftHead(str(args.model_draft or models.default_head()), t, n_ctx=1024)
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(300, h.n_feature)).astype(np.float32)
    toks = [int(x) for x in rng.integers(1000, 20000, 300)]

    def median(fn) -> float:
        times = []
        for _ in range(args.reps):
            times.append(fn())
        return 1000 * statistics.median(times)

    def step() -> float:
        t.truncate(150)
        t0 = time.perf_counter()
        t.decode(toks[150])
        return time.perf_counter() - t0

    t.prefill(toks[:150])
    rows = [("target: one plain step", median(step))]
    h.prefix(toks[:150], feats[:150], 0)
    for n in (1, 2, 4, 8, 32):
        def prefix(n=n) -> float:
            h.truncate(150)
            t0 = time.perf_counter()
            h.prefix(toks[150:150 + n], feats[150:150 + n], 150)
            return time.perf_counter() - t0
        rows.append((f"head: catch-up prefix of {n} row(s)", median(prefix)))
    for n in (1, 4, 8):
        def tree(n=n) -> float:
            h.truncate(150)
            h.prefix(toks[150:151], feats[150:151], 150)
            inputs = np.repeat(h.y()[-1:], n, axis=0)
            t0 = time.perf_counter()
            h.tree(toks[:n], inputs, [151] * n, [-1] * n)
            dt = time.perf_counter() - t0
            h.rollback()
            return dt
        rows.append((f"head: expansion step over {n} row(s)", median(tree)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-md", "--model-draft", help="head GGUF (default: the shipped head)")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    rows = on_compute_thread(measure, args)
    step = rows[0][1]
    print(f"median of {args.reps}, {args.threads} threads\n\n| pass | ms | target steps |\n|---|---|---|")
    for name, ms in rows:
        print(f"| {name} | {ms:.2f} | {ms / step:.3f} |")


if __name__ == "__main__":
    main()
