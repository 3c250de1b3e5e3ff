"""Self-distillation throughput: the old one-conversation-at-a-time loop against BatchDecoder.

    cd /tmp && python /work/main/benchmarks/distill_throughput.py [--slots 8,16,32,48] [-t 2]

Greedy answers (features on) to first turns of the training prompt set (seed 5, never trained
on). Answer tokens per second of wall time. The batched arms keep every slot busy from a queue;
the clock stops when the queue runs dry (the tail, where slots idle, is not a steady state).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from pyeagle import models
from pyeagle._core import BatchDecoder, Target
from pyeagle.template import ChatTemplate
from pyeagle.train.prompts import build_prompts


def one_at_a_time(t: Target, prompts: list[list[int]], max_new: int) -> float:
    t.features = True
    n, t0 = 0, time.perf_counter()
    for ids in prompts:
        t.truncate(0)
        t.prefill(ids)
        t.hidden()
        for k in range(1, max_new + 1):
            tok = int(np.argmax(t.last_logits()))
            n += 1
            if t.is_eog(tok) or k == max_new:
                break
            t.decode(tok)
            t.hidden()
    return n / (time.perf_counter() - t0)


def batched(t: Target, prompts: list[list[int]], max_new: int, slots: int, threads: int) -> float:
    b = BatchDecoder(t, slots, 2048, 512, threads)
    queue = list(reversed(prompts))
    feeds, new = [[] for _ in range(slots)], [0] * slots
    for s in range(slots):
        feeds[s] = queue.pop()
    n, t0 = 0, time.perf_counter()
    while queue:
        nxt, _ = b.step(feeds)
        for s in range(slots):
            n += 1
            new[s] += 1
            if t.is_eog(nxt[s]) or new[s] >= max_new:
                b.truncate(s, 0)
                new[s] = 0
                feeds[s] = queue.pop() if queue else []
                if not queue:
                    break
            else:
                feeds[s] = [int(nxt[s])]
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slots", default="8,16,32,48")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--max-new", type=int, default=256)
    ap.add_argument("--single", type=int, default=10, help="prompts for the one-at-a-time arm")
    args = ap.parse_args()
    t = Target(str(models.default_target()), n_ctx=2048, n_threads=args.threads)
    tmpl = ChatTemplate.from_target(t)
    ids = [t.tokenize(tmpl.render([{"role": "user", "content": p}]), add_special=True, parse_special=True)
           for p in build_prompts(400, seed=5)]
    rows = [("one at a time (Target.decode)", one_at_a_time(t, ids[:args.single], args.max_new))]
    for s in (int(x) for x in args.slots.split(",")):
        rows.append((f"BatchDecoder, {s} slots", batched(t, ids[:3 * s], args.max_new, s, args.threads)))
    print(f"| arm ({args.threads} threads, answers up to {args.max_new} tokens) | answer tok/s | x one at a time |")
    print("|---|---|---|")
    for name, v in rows:
        print(f"| {name} | {v:.1f} | {v / rows[0][1]:.2f} |")


if __name__ == "__main__":
    main()
