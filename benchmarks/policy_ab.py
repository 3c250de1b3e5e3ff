"""Side-by-side A/B of round-policy variants: one engine per variant, every prompt's runs back to
back (plain decoding first, then the variants in an order that rotates per prompt), per-prompt
ratios to plain, their geometric means, and each pair of variants' paired ratio with its standard
error. Resumes from OUT.json. Run alone on the machine.

    python benchmarks/policy_ab.py VAR MODES OUT.json [PROMPTS.jsonl|-] [LIMIT]

MODES: comma-separated values of the environment variable VAR, set before each of that variant's
generations. The engine reads no such variable: an experiment adds the read where the variant
differs (in C++, where the policy reads its constant: e.g. `lookup.h`'s clear_streak() read
`std::getenv(VAR)` for the slow start of 0c270d5, modes "1:0.25,0.5:0.25,1:0.1" for the copy
scale's start and floor), rebuilds (`pip install --no-build-isolation .`), runs this, and removes
the read again. Variants that the public API can express need no VAR: pass tree options instead.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import sys

from pyeagle import Engine
from pyeagle.bench import gmean, load_prompts, mtbench_file


def main() -> int:
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    var, modes, out_path = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
    prompts = load_prompts(sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] != "-" else mtbench_file())
    if len(sys.argv) > 5:
        prompts = prompts[:int(sys.argv[5])]
    plain = Engine(draft=None, n_threads=2)
    engines = {m: Engine(n_threads=2) for m in modes}
    tpl = plain.chat_template
    for m, e in engines.items():  # the cost curve measured before the first prompt
        os.environ[var] = m
        e.warm_up()
    res = json.load(open(out_path)) if os.path.exists(out_path) else []
    done = {r["id"] for r in res}
    for i, p in enumerate(prompts):
        if p.id in done:
            continue
        ids = plain.tokenize(tpl.render([{"role": "user", "content": p.question}]))
        r = {"id": p.id, "category": p.category}
        for m in ["plain"] + modes[i % len(modes):] + modes[:i % len(modes)]:
            if m == "plain":
                o = plain.generate(ids, max_tokens=256, draft=False)
            else:
                os.environ[var] = m
                o = engines[m].generate(ids, max_tokens=256)
            s = o.stats
            r[m] = {"tps": s.tokens_per_s, "n": s.n_tokens, "rounds": dict(s.rounds_by_kind), "tokens": dict(s.tokens_by_kind)}
        res.append(r)
        json.dump(res, open(out_path, "w"))
        print(p.id, " ".join(f"{m} {r[m]['tps'] / r['plain']['tps']:.3f}" for m in modes), flush=True)
    for m in modes:
        rs = [r[m]["tps"] / r["plain"]["tps"] for r in res]
        print(f"mode {m}: gmean {gmean(rs):.4f} worst {min(rs):.3f} below 0.9: {sum(x < 0.9 for x in rs)}")
    for a in modes:
        for b in modes:
            if a < b:
                d = [math.log(r[b]["tps"] / r[a]["tps"]) for r in res]
                se = statistics.stdev(d) / len(d) ** 0.5
                print(f"{b} / {a}: {math.exp(sum(d) / len(d)):.4f} (s.e. {se:.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
