"""Plain decoding speed of Engine.generate after other ggml work in the same process, by the thread
that did it: none, the caller's thread, or pyeagle.on_compute_thread. Each scenario in a fresh
process; markdown on stdout. Run on an idle machine.

    python benchmarks/compute_thread.py [-t THREADS] [-n TOKENS] [--depth PROMPT_TOKENS] [--reps R]

ggml's CPU backend parallelises with OpenMP; libgomp keeps a team of threads for every thread that
starts parallel work, and lets idle team threads spin only while all teams fit the cores.
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys

SCENARIOS = {
    "none": "only generations",
    "caller": "a Target decode on the caller's thread first",
    "compute": "the same decode through pyeagle.on_compute_thread first",
}


def scenario(name: str, args: argparse.Namespace) -> dict:
    from pyeagle import Engine, Target, on_compute_thread
    eng = Engine(draft=None, n_threads=args.threads)
    rng = random.Random(0)
    ids = [rng.randrange(1000, 20000) for _ in range(args.depth)]
    if name != "none":
        t = Target(eng.target_path, n_ctx=256, n_threads=args.threads)

        def other_work():
            t.prefill(ids[:32])
            for tok in ids[32:64]:
                t.decode(tok)

        other_work() if name == "caller" else on_compute_thread(other_work)
    best = 0.0
    for _ in range(args.reps):
        eng.reset()
        s = eng.generate(ids, max_tokens=args.n, draft=False).stats
        best = max(best, s.tokens_per_s)
    return {"scenario": name, "tokens_per_s": best}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-n", type=int, default=64, help="tokens per generation")
    ap.add_argument("--depth", type=int, default=150, help="prompt tokens (random ids)")
    ap.add_argument("--reps", type=int, default=3, help="generations per scenario (the fastest counts)")
    ap.add_argument("--scenario", choices=SCENARIOS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.scenario:
        print(json.dumps(scenario(args.scenario, args)))
        return
    rows = []
    for name in SCENARIOS:
        cmd = [sys.executable, __file__, "--scenario", name, "-t", str(args.threads), "-n", str(args.n),
               "--depth", str(args.depth), "--reps", str(args.reps)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    base = rows[0]["tokens_per_s"]
    print(f"plain decoding, {args.depth}-token prompt, {args.n} tokens, {args.threads} threads, best of {args.reps}\n")
    print("| before the generations | tok/s | vs none |\n|---|---|---|")
    for r in rows:
        print(f"| {SCENARIOS[r['scenario']]} | {r['tokens_per_s']:.1f} | {r['tokens_per_s'] / base:.2f} |")


if __name__ == "__main__":
    main()
