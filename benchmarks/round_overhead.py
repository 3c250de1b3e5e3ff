"""What a round costs besides the target's pass: Engine.generate's time split per round (drafting,
acceptance and KV commit, the rest of the loop), over the first MT-bench questions, and the KV
commit of a one-node tree against a plain decode at the Target level. Markdown on stdout; run
alone on the machine.

    python benchmarks/round_overhead.py [-t THREADS] [--limit N] [-n TOKENS] [--copy-only]

--copy-only drafts copies alone (no head), so that "drafting" is the policy's own bookkeeping and
not the head's arithmetic. The first generation of an engine measures the verify cost curve (in its
prefill time, not counted here).
"""
from __future__ import annotations

import argparse
import statistics
import time

from pyeagle import Engine, Target, models, on_compute_thread
from pyeagle.bench import load_prompts, mtbench_file
from pyeagle.template import ChatTemplate


def loop_split(args: argparse.Namespace) -> dict:
    eng = Engine(n_threads=args.threads, copy_only=args.copy_only or None)
    tpl = ChatTemplate.from_target(eng.target, None)
    tot = dict(draft=0.0, verify=0.0, accept=0.0, rest=0.0, rounds=0, tokens=0)
    for p in load_prompts(mtbench_file())[:args.limit]:
        s = eng.generate(eng.tokenize(tpl.render([{"role": "user", "content": p.question}])),
                         max_tokens=args.tokens).stats
        tot["draft"] += s.t_draft
        tot["verify"] += s.t_verify
        tot["accept"] += s.t_accept
        tot["rest"] += s.t_total - s.t_prefill - s.t_draft - s.t_verify - s.t_accept
        tot["rounds"] += s.n_passes
        tot["tokens"] += s.n_tokens
    return tot


def commit_cost(args: argparse.Namespace) -> dict:
    t = Target(str(models.default_target()), n_ctx=4096, n_threads=args.threads, n_seq_max=64)
    t.features = True
    t.prefill(t.tokenize("<|im_start|>user\nWrite a short story about a robot.<|im_end|>\n<|im_start|>assistant\n"))
    n0 = t.n_past
    verify, commit, decode = [], [], []
    for i in range(60):
        t0 = time.perf_counter()
        t.verify([1000 + i], [-1])
        t1 = time.perf_counter()
        t.commit([0])
        verify.append(t1 - t0)
        commit.append(time.perf_counter() - t1)
    t.truncate(n0)
    for i in range(60):
        t0 = time.perf_counter()
        t.decode(1000 + i)
        decode.append(time.perf_counter() - t0)
    return {k: 1000 * statistics.median(v) for k, v in (("verify", verify), ("commit", commit), ("decode", decode))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=6, help="MT-bench questions (default 6)")
    ap.add_argument("-n", "--tokens", type=int, default=256)
    ap.add_argument("--copy-only", action="store_true", help="copies alone: no head rounds")
    args = ap.parse_args()
    tot = on_compute_thread(loop_split, args)
    c = on_compute_thread(commit_cost, args)
    r = tot["rounds"]
    print(f"{args.limit} MT-bench questions x {args.tokens} tokens, {args.threads} threads"
          f"{', copies only' if args.copy_only else ''}: {r} rounds, {tot['tokens']} tokens\n")
    print("| per round, ms | drafting | verify pass | acceptance + KV commit | rest of the loop |")
    print("|---|---|---|---|---|")
    print("| Engine.generate | " + " | ".join(f"{1000 * tot[k] / r:.3f}" for k in ("draft", "verify", "accept", "rest")) + " |")
    print(f"\nTarget, median of 60 (n_ctx 4096, features on): verify of a one-node tree {c['verify']:.3f} ms, "
          f"its commit {c['commit']:.3f} ms; a plain decode {c['decode']:.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
