"""How good the context's own guess at the next token is, alone (docs/TRAINING.md, "Stage 10").

    python benchmarks/copy_guess.py DATA [--train TRAIN ...]

DATA: self-distillation directories (`python -m pyeagle.train data`), e.g. the target's answers to
MT-bench. For every answer token: does a key of k = 1..4 tokens ending just before it occur earlier
in its sequence (prompt included), and is the token after the key's latest occurrence the answer
token? Then the same for the longest such key, the copy input of `fit --copy-input`
(`pyeagle.train.fit.copy_tokens`). With --train, also a bigram / trigram table (backing off to the
bigram) of the TRAIN directories' answers, for scale: language statistics against the context.
"""
from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from pyeagle.train.data import load
from pyeagle.train.fit import COPY_KEY, copy_tokens


def sequences(dirs: list[Path]):
    """(tokens, answer mask) of every sequence of the directories."""
    for c in load(dirs):
        off = c["offsets"]
        for a, b in zip(off[:-1], off[1:]):
            yield c["tokens"][a:b].astype(np.int64), c["answer"][a:b].astype(bool)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, nargs="+")
    ap.add_argument("--train", type=Path, nargs="*", default=[], help="directories for the n-gram baseline")
    args = ap.parse_args()

    n = 0
    has, right = Counter(), Counter()
    for toks, ans in sequences(args.data):
        t = [int(x) for x in toks]
        last: list[dict] = [{} for _ in range(COPY_KEY + 1)]
        longest, _ = copy_tokens(toks)
        for i in range(len(t) - 1):  # the guess at token i + 1 from the context up to i
            if ans[i + 1]:
                n += 1
                for k in range(1, min(COPY_KEY, i + 1) + 1):
                    c = last[k].get(tuple(t[i - k + 1:i + 1]))
                    if c is not None:
                        has[k] += 1
                        right[k] += c == t[i + 1]
                if longest[i] >= 0:
                    has["longest"] += 1
                    right["longest"] += longest[i] == t[i + 1]
            for k in range(1, min(COPY_KEY, i + 1) + 1):
                last[k][tuple(t[i - k + 1:i + 1])] = t[i + 1]
    print(f"{n} answer tokens in {', '.join(map(str, args.data))}\n")
    print("| key | a copy exists | right where it exists | right, of all tokens |\n|---|---|---|---|")
    for k in [*range(1, COPY_KEY + 1), "longest"]:
        name = f"the longest of 1-{COPY_KEY}" if k == "longest" else f"{k} token{'s' if k > 1 else ''}"
        print(f"| {name} | {has[k] / n:.3f} | {right[k] / max(has[k], 1):.3f} | {right[k] / n:.3f} |")

    if args.train:
        bi, tri = defaultdict(Counter), defaultdict(Counter)
        for toks, ans in sequences(args.train):
            for i in range(2, len(toks)):
                if ans[i]:
                    bi[toks[i - 1]][toks[i]] += 1
                    tri[(toks[i - 2], toks[i - 1])][toks[i]] += 1
        b = t3 = 0
        for toks, ans in sequences(args.data):
            for i in range(2, len(toks)):
                if not ans[i]:
                    continue
                c2, c3 = bi.get(toks[i - 1]), tri.get((toks[i - 2], toks[i - 1]))
                g2 = c2.most_common(1)[0][0] if c2 else -1
                b += g2 == toks[i]
                t3 += (c3.most_common(1)[0][0] if c3 else g2) == toks[i]
        print(f"\nn-gram tables of the answers in {', '.join(map(str, args.train))}: bigram {b / n:.3f}, "
              f"trigram (backing off to the bigram) {t3 / n:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
