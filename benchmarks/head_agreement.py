"""Where a head agrees with its target: top-1 agreement on answer rows, by the target's own confidence.

    python benchmarks/head_agreement.py HEAD DATA [DATA ...] [-t 1] [--seq 1024]

HEAD is a head GGUF (EAGLE-1/2, e.g. the shipped one) or a `train fit` run directory; DATA are
self-distillation directories (`python -m pyeagle.train data`), read whole. For every answer row
(feature t, token t+1 -> the draft of token t+2) it compares the head's first draft with the
target's token and buckets the rows by the target's probability of its own top token there
(softmax of the target's output matrix times the stored feature t+1). A head that misses
tokens its target is sure of lacks what the target computes, not luck. Also: the share of
misses that name the token after the wanted one (the head skipping a token ahead) or repeat the
input token t+1 (an echo of the head's own input), and agreement split by whether a one-token
copy of the context is right: token t+1 occurred earlier in the same sequence (prompt included)
and its last occurrence was followed by token t+2. Misses there are ones that a head reading its
context the way the target does would not make. Last, a table by the head's own probability of its
draft, split by whether that draft equals the one-token copy: how sharp a confidence the two give
together (what a round policy could calibrate head drafts on); and the target's token among the
head's top 1-4 drafts with and without the copy as one more candidate, and how often the copy is
right by its rank among the head's drafts.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from pyeagle.models import default_target
from pyeagle.train import fit as tfit

EDGES = (0.0, 0.3, 0.5, 0.7, 0.9, 0.99, 1.01)
K = 4  # the head's drafts per row compared with the one-token copy
Q_EDGES = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 1.01)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("head", type=Path, help="head GGUF or `train fit` run directory")
    ap.add_argument("data", type=Path, nargs="+", help="self-distillation data directories")
    ap.add_argument("-m", "--model", help="target GGUF the data was made with (default: the embedded default)")
    ap.add_argument("--seq", type=int, default=1024, help="rows per window (a sequence is cut after this many)")
    ap.add_argument("-t", "--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = args.model or str(default_target())
    head, rows, windows, emb, w_d, to_draft = tfit._held_out(args.head, args.data, model, args.seq, True)
    valid = torch.nonzero(to_draft >= 0).flatten()
    ids = torch.empty(len(valid), dtype=torch.long)
    ids[to_draft[valid]] = valid  # draft id -> target id
    w_full = torch.from_numpy(tfit.target_config_and_matrices(model)[1])
    k = len(EDGES) - 1
    count, hit = np.zeros(k), np.zeros(k)
    n = ok = miss = skip = echo = 0
    seen_hit = np.zeros((2, 2))  # [head right][a one-token copy of the sequence so far is right]
    by_q = np.zeros((len(Q_EDGES) - 1, 2, 2))  # [head probability bucket][draft == copy][rows, head right]
    topk_hit, union_hit = np.zeros(K), np.zeros(K)  # the target's token among the head's top j (and the copy)
    by_rank = np.zeros((K + 1, 2))  # [the copy's rank among the head's top K, K: outside][rows, copy right]
    head.eval()
    with torch.no_grad():
        for i in range(0, len(windows), 8):
            bt = tfit.make_batch(rows, windows[i:i + 8], args.seq)
            m = bt["w"] > 0
            y = head.unroll(head.embed(emb, bt), bt[head.input_key], bt["pos"], bt["mask"], 1)[0]
            probs = torch.softmax(head.logits(y, w_d), dim=-1)
            q, top = probs.max(-1)
            pred = ids[top]
            pred_k = ids[probs.topk(K, dim=-1).indices]  # [b, t, K] the head's K likeliest drafts
            qb = np.digitize(q.numpy(), Q_EDGES) - 1
            want = bt["nexttok"]
            after = torch.cat([want[:, 1:], torch.full_like(want[:, :1], -1)], dim=1)  # token t+3, same window
            p_top = torch.softmax(bt["y"][m] @ w_full.T, dim=-1).max(-1).values.numpy()
            right = (pred == want)[m].numpy()
            b = np.digitize(p_top, EDGES) - 1
            for j in range(k):
                count[j] += (b == j).sum()
                hit[j] += right[b == j].sum()
            n += int(m.sum())
            ok += int(right.sum())
            wrong = m & (pred != want)
            miss += int(wrong.sum())
            skip += int((wrong & (pred == after)).sum())
            echo += int((wrong & (pred == bt["tok"])).sum())
            for b, w in enumerate(windows[i:i + 8]):  # the one-token copy, per packed sequence
                r = 0
                for a, e in w:
                    last: dict[int, int] = {}  # token -> the token after its latest occurrence
                    for t in range(r, r + e - a):
                        cur, nxt = int(bt["tok"][b, t]), int(want[b, t])
                        if m[b, t]:
                            seen_hit[int(pred[b, t] == want[b, t]), int(last.get(cur) == nxt)] += 1
                            by_q[qb[b, t], int(last.get(cur) == int(pred[b, t]))] += (1, int(pred[b, t] == nxt))
                            drafts = pred_k[b, t].tolist()
                            in_k = [nxt in drafts[:j + 1] for j in range(K)]
                            topk_hit += in_k
                            union_hit += [h or last.get(cur) == nxt for h in in_k]
                            if cur in last:  # the copy's rank among the head's drafts (K: none of them)
                                rank = drafts.index(last[cur]) if last[cur] in drafts else K
                                by_rank[rank] += (1, int(last[cur] == nxt))
                        last[cur] = nxt
                    r += e - a
    print(f"# Head agreement by the target's confidence: `{args.head}`\n\n"
          f"command: `python benchmarks/head_agreement.py {' '.join(sys.argv[1:])}`\n\n"
          f"{n} answer rows of {', '.join(str(d) for d in args.data)}; head top-1 {ok / max(n, 1):.3f}; "
          f"of its misses, {skip / max(miss, 1):.3f} name the token after the wanted one, "
          f"{echo / max(miss, 1):.3f} repeat the input token\n")
    seen_n = seen_hit.sum(0)
    print(f"A one-token copy of the sequence so far (the token that followed token t+1 last time) is right on "
          f"{seen_n[1] / max(n, 1):.3f} of the rows: head top-1 {seen_hit[1, 1] / max(seen_n[1], 1):.3f} there, "
          f"{seen_hit[1, 0] / max(seen_n[0], 1):.3f} elsewhere; {seen_hit[0, 1] / max(miss, 1):.3f} of the misses "
          f"are on such rows\n")
    print("| target's top probability | share of rows | head top-1 |\n|---|---|---|")
    for j in range(k):
        label = f"[{EDGES[j]:.2f}, 1]" if j == k - 1 else f"[{EDGES[j]:.2f}, {EDGES[j + 1]:.2f})"
        print(f"| {label} | {count[j] / max(n, 1):.3f} | {hit[j] / max(count[j], 1):.3f} |")
    print("\nBy the head's probability of its draft, and whether the draft equals the one-token copy:\n")
    print("| head's probability | rows, draft != copy | head top-1 | rows, draft == copy | head top-1 |\n|---|---|---|---|---|")
    for j in range(len(Q_EDGES) - 1):
        label = f"[{Q_EDGES[j]:.2f}, 1]" if j == len(Q_EDGES) - 2 else f"[{Q_EDGES[j]:.2f}, {Q_EDGES[j + 1]:.2f})"
        (c0, h0), (c1, h1) = by_q[j]
        print(f"| {label} | {c0 / max(n, 1):.3f} | {h0 / max(c0, 1):.3f} | {c1 / max(n, 1):.3f} | {h1 / max(c1, 1):.3f} |")
    print("\nThe head's top j drafts, alone and with the one-token copy as one more (how much a copy child adds):\n")
    print("| j | target's token among the head's top j | ... or the copy |\n|---|---|---|")
    for j in range(K):
        print(f"| {j + 1} | {topk_hit[j] / max(n, 1):.3f} | {union_hit[j] / max(n, 1):.3f} |")
    print(f"\nWhere a copy exists ({by_rank[:, 0].sum() / max(n, 1):.3f} of the rows), by its rank among the head's drafts:\n")
    print("| copy is the head's | share of rows | copy right |\n|---|---|---|")
    for j in range(K + 1):
        label = f"draft {j + 1}" if j < K else f"none of the top {K}"
        print(f"| {label} | {by_rank[j, 0] / max(n, 1):.3f} | {by_rank[j, 1] / max(by_rank[j, 0], 1):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
