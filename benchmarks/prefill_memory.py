"""What a long prompt's prefill costs in memory and time, with the shipped EAGLE-1/2 head (every
prompt token an output row: its hidden state is the head's feature) or without (plain).

    cd /tmp && python /path/to/pyeagle/benchmarks/prefill_memory.py [plain]

One engine (the embedded default, n_ctx 2048, 2 threads), a short warm-up generation, then the
same 1084-token prompt prefilled four times after reset(); prints the RSS added by those prefills
and each one's seconds (the first includes one-off allocations). The chunk a features-on prefill
is cut into is `target::prefill_rows` (cpp/src/target.h); docs/BENCHMARKS.md compares values of it.
"""
import sys
from pathlib import Path

from pyeagle import Engine

sys.path.insert(0, str(Path(__file__).parent))
from soak import rss_mib as rss  # noqa: E402


def main() -> None:
    e = Engine(n_ctx=2048, n_threads=2, draft=None if sys.argv[1:] == ["plain"] else "default")
    e.generate("Hello there", max_tokens=4)
    before = rss()
    prompt = "Hello there, " + "tell me about trees and rivers and the mountains of the north " * 90
    seconds = []
    for _ in range(4):
        e.reset()
        out = e.generate(prompt, max_tokens=4)
        seconds.append(round(out.stats.t_prefill, 3))
    print(f"{'plain' if e.draft_path is None else 'EAGLE-1/2 head'}: prompt {out.stats.n_prompt} tokens, "
          f"RSS +{rss() - before:.0f} MiB, prefill seconds {seconds}")


if __name__ == "__main__":
    main()
