"""EAGLE against llama.cpp's speculation, split by whether the peer decoded plain decoding's text.

    python benchmarks/peer_text_split.py BENCH.json

BENCH.json is the `--json` output of `python -m pyeagle.bench --peer` (from commit 76ec325 on, whose
peer records carry their text). llama.cpp's kernels and this engine's break near-ties differently,
so on some prompts the peer decodes another greedy text than plain decoding and EAGLE; this prints
the per-prompt geometric means (EAGLE / plain, peer / plain, EAGLE / peer at the peer's length) on
the prompts where the texts agree over the shorter of the two, and on the others.
"""
from __future__ import annotations

import json
import sys

from pyeagle.bench import gmean, peer_text_divergence


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    rows = json.load(open(sys.argv[1]))["prompts_detail"]
    groups: dict[str, list[tuple[float, float, float]]] = {"same text": [], "different text": []}
    for p in rows:
        plain, eagle, spec = p["plain"], p["eagle"], p["peer"]
        if not (eagle and spec) or spec.get("text") is None:
            continue
        at_len = (p.get("eagle_at_peer_length") or eagle)["tokens_per_s"]
        key = "same text" if peer_text_divergence(plain["text"], spec["text"]) == -1 else "different text"
        groups[key].append((eagle["tokens_per_s"] / plain["tokens_per_s"], spec["tokens_per_s"] / plain["tokens_per_s"],
                            at_len / spec["tokens_per_s"]))
    print(f"command: `python benchmarks/peer_text_split.py {sys.argv[1]}`\n")
    print("| prompts | n | EAGLE / plain | peer / plain | EAGLE / peer, same length |\n|---|---|---|---|---|")
    for key, g in groups.items():
        if g:
            print(f"| {key} | {len(g)} | " + " | ".join(f"{gmean([x[i] for x in g]):.3f}" for i in range(3)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
