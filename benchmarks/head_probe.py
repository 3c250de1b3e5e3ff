"""Per-sequence top-1 of trained heads on one data chunk: where a head is right and where not.

    python benchmarks/head_probe.py --chunk data/sd3/chunk-00095.npz --runs runs/h3 runs/e3 [-n 12]

For each of the chunk's first n sequences: its answer's first words, then for each run the
share of answer rows whose first draft (from the target's own feature, or taps for an EAGLE-3
run, which needs a chunk from `python -m pyeagle.train taps`) is the target's next token, with
causal attention as at inference and, with --self-only, with each row attending only to itself
(what attention over the context adds). Needs PyTorch.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from pyeagle import Target, models
from pyeagle.train import fit as tf


def top1(head, wd, ids, e, seq, x, n_prompt, self_only: bool) -> float:
    n = len(seq) - 2
    mask = torch.eye(n, dtype=torch.bool)[None] if self_only else torch.tril(torch.ones(1, n, n, dtype=torch.bool))
    with torch.no_grad():
        y = head(torch.from_numpy(e[seq[1:n + 1]])[None], torch.from_numpy(x[:n])[None], torch.arange(n)[None], mask)[0]
        pred = ids[head.logits(y, wd).argmax(1).numpy()]
    rows = np.arange(n_prompt - 2, n)
    return float((pred[rows] == seq[rows + 2]).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunk", required=True, type=Path)
    ap.add_argument("--runs", required=True, nargs="+", type=Path)
    ap.add_argument("-m", "--model", help="target GGUF (default: the embedded default target)")
    ap.add_argument("-n", type=int, default=12, help="sequences (default 12)")
    ap.add_argument("--self-only", action="store_true", help="also each row attending to itself only")
    ap.add_argument("--lens", action="store_true", help="also the logit lens of the taps and the feature")
    args = ap.parse_args()
    model = args.model or str(models.default_target())
    c = np.load(args.chunk)
    _, w, e = tf.target_config_and_matrices(model)
    tok = Target(model, n_ctx=64)
    heads = [(r.name, tf.load_head(r), np.load(r / "draft_vocab.npy")) for r in args.runs]
    cols = [n for n, _, _ in heads] + ([f"{n} self-only" for n, _, _ in heads] if args.self_only else [])
    print("| seq | answer starts | " + " | ".join(cols) + " |\n|---|---|" + "---|" * len(cols))
    off, npr = c["offsets"], c["n_prompt"]
    for s in range(min(args.n, len(npr))):
        seq = c["tokens"][off[s]:off[s + 1]].astype(np.int64)
        text = tok.detokenize([int(t) for t in seq[npr[s]:npr[s] + 12]]).decode(errors="replace")
        vals = []
        for self_only in ([False, True] if args.self_only else [False]):
            for _, head, ids in heads:
                x = c["taps" if isinstance(head, tf.Eagle3Head) else "features"][off[s]:off[s + 1]].astype(np.float32)
                vals.append(top1(head, torch.from_numpy(w[ids]), ids, e, seq, x, int(npr[s]), self_only))
        print(f"| {s} | {text!r:.60} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    if args.lens:
        logit_lens(c, w, tf.target_output_norm(model), min(args.n, len(npr)))


def logit_lens(c, w: np.ndarray, norm_w: np.ndarray, n_seqs: int) -> None:
    off, npr = c["offsets"], c["n_prompt"]
    h = w.shape[1]
    hits, n = np.zeros(c["taps"].shape[1] // h + 1), 0
    for s in range(n_seqs):
        a, b, p = int(off[s]), int(off[s + 1]), int(npr[s])
        nxt = c["tokens"][a + p:b]  # the answer; row j's next token is token j + 1
        rows = [c["taps"][a + p - 1:b - 1, k * h:(k + 1) * h].astype(np.float32) for k in range(len(hits) - 1)]
        for k, x in enumerate(rows):
            x = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-5) * norm_w
            hits[k] += ((x @ w.T).argmax(1) == nxt).sum()
        hits[-1] += ((c["features"][a + p - 1:b - 1].astype(np.float32) @ w.T).argmax(1) == nxt).sum()
        n += len(nxt)
    names = [f"tap {k}" for k in range(len(hits) - 1)] + ["final feature"]
    print("\nlogit lens, answer rows: " + ", ".join(f"{nm} {v / n:.3f}" for nm, v in zip(names, hits)) + f" ({n} rows)")


if __name__ == "__main__":
    main()
