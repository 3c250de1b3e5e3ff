"""Where EAGLE loses on prompts that give copies and the head nothing: plain decoding, EAGLE's
defaults and copy-only drafting (no head) on the same engine, per prompt, twice, with the rounds
and seconds by kind (plain step / copy only / head tree) of the EAGLE runs.

    cd /tmp && python /path/to/pyeagle/benchmarks/slow_prompts.py 140,105,119,107,112,118

MT-bench question ids (the slowest of the full run in docs/BENCHMARKS.md); greedy, 256 tokens,
2 threads, the embedded default. tok/s counts decode time only (prefill excluded), as the bench does.
"""
import sys

from pyeagle import Engine
from pyeagle.bench import load_prompts, mtbench_file


def main() -> None:
    ids = sys.argv[1].split(",")
    prompts = [p for p in load_prompts(mtbench_file()) if p.id in ids]
    e = Engine(n_threads=2)

    def run(p, **kw):
        o = e.generate(e.tokenize(e.chat_template.render([{"role": "user", "content": p.question}])),
                       max_tokens=256, **kw)
        s = o.stats
        return len(o.tokens) / (s.t_total - s.t_prefill), s

    for p in prompts:
        for _ in range(2):
            plain, _ = run(p, draft=False)
            eagle, s = run(p)
            copy, c = run(p, copy_only=True)
            print(f"{p.id}: plain {plain:.1f} tok/s, EAGLE / plain {eagle / plain:.3f}, copy-only / plain "
                  f"{copy / plain:.3f}; EAGLE rounds {s.rounds_by_kind}, seconds "
                  f"{ {k: round(v, 3) for k, v in s.time_by_kind.items()} }; copy-only rounds {c.rounds_by_kind}",
                  flush=True)


if __name__ == "__main__":
    main()
