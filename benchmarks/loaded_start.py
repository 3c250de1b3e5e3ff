"""Does a moment's load at an engine's start cost it its drafting for good? The round policy measures
its verify cost curve once, at the first drafting call; a curve measured while something else held
the cores prices every draft too high. Two fresh engines decode the same prompts (EAGLE defaults,
greedy, 256 tokens, 2 threads, the embedded default): one started on an idle machine, one whose
first call (the curve's measurement) runs beside two busy-looping processes that stop a few seconds
later. Per prompt: tok/s of each against plain decoding on the same engine, and the rounds by kind.

    cd /tmp && python /path/to/pyeagle/benchmarks/loaded_start.py [--busy 4] [--ids 95,160,123,...]

The busy processes stop while the first prompt is still decoding; that prompt is printed but left
out of the summary (it ran partly under load). The curve each engine ends with is printed too, and
the first call's prefill time, which includes the curve's measurement.
"""
from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import time

from pyeagle import Engine
from pyeagle.bench import load_prompts, mtbench_file

IDS = "95,160,123,90,136,139,145,158,110,135,81,100"  # MT-bench ids where copies pay (docs/BENCHMARKS.md)


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--busy", type=float, default=4.0, help="seconds the two busy processes run (default 4)")
    ap.add_argument("--ids", default=IDS, help="MT-bench question ids, comma-separated")
    ap.add_argument("-n", type=int, default=256)
    a = ap.parse_args()
    ids = a.ids.split(",")
    prompts = [p for p in load_prompts(mtbench_file()) if p.id in ids]
    prompts.sort(key=lambda p: ids.index(p.id))

    def run(e: Engine, p, **kw):
        s = e.generate(e.tokenize(e.chat_template.render([{"role": "user", "content": p.question}])),
                       max_tokens=a.n, **kw).stats
        return s.tokens_per_s, s

    rows: dict[str, list] = {}
    for arm in ("idle start", "busy start"):
        e = Engine(n_threads=2)
        hogs = []
        if arm == "busy start":
            hogs = [mp.Process(target=_spin, args=(a.busy,)) for _ in range(2)]
            for h in hogs:
                h.start()
            time.sleep(0.2)
        for i, p in enumerate(prompts):
            eagle, s = run(e, p)
            if i == 0:
                for h in hogs:
                    h.join()
                print(f"{arm}: the first drafting call's prefill, the curve's measurement included: "
                      f"{s.t_prefill:.2f} s", flush=True)
            plain, _ = run(e, p, draft=False)
            rows.setdefault(p.id, []).append((eagle / plain, s.rounds_by_kind))
            print(f"{arm}, {p.id}: EAGLE / plain {eagle / plain:.3f}, tau {s.tau:.2f}, rounds {s.rounds_by_kind}",
                  flush=True)
        curve = e._core.verify_curve()
        print(f"{arm}: verify curve at the end (ms): "
              + ", ".join(f"{n}: {s * 1e3:.1f}" for n, s in curve[:10]) + (", ..." if len(curve) > 10 else ""))

    print("\n| prompt | idle start: EAGLE / plain | busy start: EAGLE / plain | idle rounds | busy rounds |")
    print("|---|---|---|---|---|")
    for pid, ((r0, k0), (r1, k1)) in rows.items():
        print(f"| {pid} | {r0:.2f} | {r1:.2f} | {k0} | {k1} |")
    rest = list(rows.values())[1:]
    if rest:
        g = [math.exp(sum(math.log(r[j][0]) for r in rest) / len(rest)) for j in (0, 1)]
        print(f"\ngeometric mean without the first prompt: idle start {g[0]:.3f}, busy start {g[1]:.3f}")


if __name__ == "__main__":
    main()
