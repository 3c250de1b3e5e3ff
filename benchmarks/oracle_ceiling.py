"""How fast could any round policy go, with this head and this machine's verify costs?

    python benchmarks/oracle_ceiling.py HEAD DATA [--curve 1:1,2:1.9,... [--curve ...]] [--head-cost 0,0.1] [-t 2]

HEAD: a head file (.gguf, e.g. the shipped one) or a training run directory; DATA: the target's
own single-turn answers made by `python -m pyeagle.train data` (e.g. data/mtb, MT-bench's 80
first turns, one category per chunk; docs/TRAINING.md section 1; multi-turn sequences and ones
longer than 1024 rows are skipped). Nothing is timed: costs come from the curve, in single steps
(plain decoding = 1.00). About 7 minutes on 2 cores for data/mtb.

For every answer position p (the last committed token), the whole answer being known:
- the head's chain: how many greedy drafts in a row the head gets right from p, drafting on its
  own features as at inference (the teacher-forced unroll of `train eval`, up to --depth), with
  the head's probability of each draft (softmax over the target's output rows of its draft
  vocabulary, uncalibrated: the buckets below calibrate by their outcomes); and the same where a
  draft only has to be among the head's top 4 (a tree holding the right path: a generous bound
  on any tree);
- the copy: the longest earlier occurrence of the context's end (prompt and answer so far: prompt
  lookup, as in round_efficiency.py: up to 16 tokens), its match length, how many of its tokens
  are right, and the head's probability of the copy's first token.

Two bounds:
1. Hindsight. A dynamic programme picks, per answer, the cheapest rounds that produce it: a plain
   step (1), a head chain of k <= the head's run (cost(k + 1) + k * head-cost), or a copy of k <=
   the copy's run (cost(k + 1)). No round fails: no policy drafting from these sources does better.
2. Calibrated. A policy that knows, for each kind of situation, exactly how drafts there fare on
   average, but not how this one will. Situations are buckets: copies by match length and streak
   (the earlier positions in a row whose copy was right), then also by the head's probability of
   the copy's first token and whether it is the head's own draft; head chains by the head's
   probability of its first draft, or by the products of its probabilities of the first 1, 2 and
   4 (taken along the right path: after a wrong draft the real head's later probabilities differ,
   a small optimism). Each bucket's best chain length comes from the mean over all answers
   (in-sample: optimistic), and a walk takes, per round, the option whose expected tokens less
   R x its cost is largest (R = 1.1 tokens per step), without mixing head and copy in one round.
   The head's signals are not free: every round pays the head steps they need (1 for the copy's
   probability, where there is a copy; 1 or 4 for head chains, counted in a chain's own drafts).
   Not a strict bound (fixed buckets, a greedy walk), but what a policy rating drafts by these
   signals could expect to reach.

Prints the speed-up over plain steps per category (geometric mean over answers) and the worst
answer, one table per --curve (default: this project's CPU, round_efficiency.py's curve).
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np
import torch

from round_efficiency import CURVE, DEPTH as COPY_DEPTH, accepted, cost_of, longest_local

from pyeagle import models
from pyeagle.bench import gmean, load_prompts, mtbench_file
from pyeagle.train.data import load
from pyeagle.train.fit import _held_out, make_batch

Q_EDGES = [0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.75, 0.9, 0.97]
RATE = 1.1        # tokens per step a round must beat (the calibrated walk's exchange rate)
K_MAX = 16        # longest chain the calibrated walk considers


def head_rows(head, rows, windows, seq, emb, w_d, to_draft, depth: int, copy_first: np.ndarray):
    """Per row (Rows order) and drafting step s < depth, for the chain that starts at the row:
    whether its draft s is the target's token (top-1, and within the top 4) and the head's
    probability of that draft; per row, the head's first draft and its probability of the row's
    copy_first token (a draft-vocabulary id; -1: none)."""
    n = len(rows.tok)
    ok1 = np.zeros((n, depth), bool)
    ok4 = np.zeros((n, depth), bool)
    q = np.zeros((n, depth), np.float32)
    first = np.full(n, -1, np.int64)
    q_copy = np.full(n, -1.0, np.float32)
    head.eval()
    with torch.no_grad():
        for i in range(0, len(windows), 8):
            ws = windows[i:i + 8]
            bt = make_batch(rows, ws, seq)
            ys = head.unroll(head.embed(emb, bt), bt[head.input_key], bt["pos"], bt["mask"], depth)
            want = to_draft[bt["nexttok"]]
            for s, y in enumerate(ys):
                prob = torch.softmax(head.logits(y, w_d), dim=-1)
                top_q, top = prob.topk(4, dim=-1)
                for b, w in enumerate(ws):
                    j = 0
                    for a, e in w:
                        # step s at row t drafts for the chain that starts at row t - s, within
                        # its own sequence (a packed window holds several)
                        if e - a > s:
                            sl = slice(j + s, j + e - a)
                            ok1[a:e - s, s] = (top[b, sl, 0] == want[b, sl]).numpy()
                            ok4[a:e - s, s] = (top[b, sl] == want[b, sl, None]).any(-1).numpy()
                            q[a:e - s, s] = top_q[b, sl, 0].numpy()
                        if s == 0:
                            first[a:e] = top[b, j:j + e - a, 0].numpy()
                            c = torch.from_numpy(copy_first[a:e])
                            got = prob[b, j:j + e - a].gather(1, c.clamp(min=0)[:, None])[:, 0]
                            q_copy[a:e] = torch.where(c >= 0, got, torch.tensor(-1.0)).numpy()
                        j += e - a
    return ok1, ok4, q, first, q_copy


def run_length(ok: np.ndarray) -> np.ndarray:
    """Drafts right in a row from step 0."""
    return np.cumprod(ok, axis=-1).sum(-1)


def cheapest(n: int, sources: list[tuple[np.ndarray, object]], cost) -> float:
    """Least cost, in single steps, of producing n tokens, where from position p a source (runs,
    c) gives k + 1 tokens for c(k) with k <= runs[p]; a plain step gives 1 for cost(1)."""
    best = np.full(n + 1, np.inf)
    best[n] = 0.0
    for p in range(n - 1, -1, -1):
        b = cost(1) + best[p + 1]
        for runs, c in sources:
            for k in range(1, min(int(runs[p]), n - 1 - p) + 1):
                b = min(b, c(k) + best[p + k + 1])
        best[p] = b
    return float(best[0])


def bucket_q(x: float) -> int:
    return -1 if x < 0 else int(np.searchsorted(Q_EDGES, x))


def bucket_match(n: int) -> int:
    return 0 if n == 0 else next(i for i, m in enumerate((1, 2, 3, 5, 8, 15, 10**9), 1) if n <= m)


def bucket_streak(n: int) -> int:
    return 0 if n == 0 else 1 if n <= 2 else 2 if n <= 7 else 3


def calibrated(answers, cost, head_cost: float, copy_signals: bool, head_signals: int, probe: bool):
    """Per-answer speed-up of the calibrated walk (module docstring, bound 2). head_signals: 0 (no
    head chains), 1 (chains rated by the first draft's probability) or 4 (by the products of the
    first 1, 2 and 4). With probe, every round pays the head steps its signals need (none for
    copy signals where there is no copy); a head chain's own first drafts are those steps."""
    def copy_key(x):
        base = (bucket_match(x["match"]), bucket_streak(x["streak"]))
        return base + (bucket_q(x["q_copy"]), x["agree"]) if copy_signals else base

    def head_key(x):
        q = np.cumprod(x["q"])
        return tuple(bucket_q(float(q[i])) for i in ((0,) if head_signals == 1 else (0, 1, 3)) if i < len(q))

    tables = ({}, {})
    for table, key, run, extra, on in ((tables[0], copy_key, "copy_run", 0.0, True),
                                       (tables[1], head_key, "head_run", head_cost, head_signals > 0)):
        if not on:
            continue
        seen = collections.defaultdict(list)
        for _, rec in answers:
            for x in rec:
                if run == "head_run" or x["copy_len"]:
                    seen[key(x)].append(x[run])
        for k_, v in seen.items():
            v = np.array(v)
            vals = [(np.minimum(v, k).mean() + 1 - RATE * (cost(k + 1) + extra * k) - (1 - RATE), k)
                    for k in range(1, K_MAX + 1)]
            table[k_] = max(vals)
    out = []
    for _, rec in answers:
        p, steps = 0, 0.0
        while p < len(rec):
            x = rec[p]
            best = (0.0, "plain", 0)
            if x["copy_len"]:
                v, k = tables[0].get(copy_key(x), (0.0, 0))
                best = max(best, (v, "copy", k))
            if head_signals:
                v, k = tables[1].get(head_key(x), (0.0, 0))
                best = max(best, (v, "head", k))
            _, kind, k = best
            looked = 0
            if probe:
                looked = head_signals or (1 if copy_signals and x["copy_len"] else 0)
            if kind == "plain":
                steps, p = steps + cost(1) + looked * head_cost, p + 1
            elif kind == "copy":
                steps, p = steps + cost(k + 1) + looked * head_cost, p + min(x["copy_run"], k) + 1
            else:
                steps, p = steps + cost(k + 1) + max(k, looked) * head_cost, p + min(x["head_run"], k) + 1
        out.append(len(rec) / steps)
    return out


def report(args, spec: str, answers, copy_runs, head_runs, head_runs4, head_costs) -> None:
    """One table of bounds (module docstring) for the verify curve `spec`."""
    cost = cost_of(spec)

    def hindsight(use_copy: bool, heads, hc: float | None):
        out = []
        for i, (_, rec) in enumerate(answers):
            src = [(copy_runs[i], lambda k: cost(k + 1))] if use_copy else []
            if heads is not None:
                src.append((heads[i], lambda k: cost(k + 1) + k * hc))
            out.append(len(rec) / cheapest(len(rec), src, cost))
        return out

    table = [("hindsight: copies alone", hindsight(True, None, None))]
    for hc in head_costs:
        table += [(f"hindsight: head alone, head step {hc}", hindsight(False, head_runs, hc)),
                  (f"hindsight: head + copies, head step {hc}", hindsight(True, head_runs, hc))]
    table += [("hindsight: head top-4 (any tree) + copies, head step 0", hindsight(True, head_runs4, 0.0)),
              ("calibrated: copies by match length and streak", calibrated(answers, cost, 0.0, False, 0, False))]
    for hc in head_costs:
        table += [(f"calibrated: + head's probability of the copy, head step {hc}", calibrated(answers, cost, hc, True, 0, True)),
                  (f"calibrated: + head chains by its first draft, head step {hc}", calibrated(answers, cost, hc, True, 1, True)),
                  (f"calibrated: + head chains by its first 1/2/4 drafts, head step {hc}",
                   calibrated(answers, cost, hc, True, 4, True))]

    n_pos = sum(len(rec) for _, rec in answers)
    print(f"## Speed-up over plain steps: {args.head} on {args.data}\n")
    print(f"Verify curve (single steps): {spec}; head chains up to {args.depth}, copies up to "
          f"{COPY_DEPTH}; {len(answers)} answers, {n_pos} positions; mean right drafts in a row: head "
          f"{sum(h.sum() for h in head_runs) / n_pos:.2f} (top-4: {sum(h.sum() for h in head_runs4) / n_pos:.2f}), "
          f"copy {sum(c.sum() for c in copy_runs) / n_pos:.2f}.\n")
    cats = list(dict.fromkeys(cat for cat, _ in answers))
    print("| bound | " + " | ".join(cats) + " | **all** | worst |")
    print("|---" * (len(cats) + 3) + "|")
    for name, ratios in table:
        by_cat = [gmean([r for r, (cat, _) in zip(ratios, answers) if cat == c]) for c in cats]
        print(f"| {name} | " + " | ".join(f"{x:.2f}" for x in by_cat) + f" | **{gmean(ratios):.2f}** | {min(ratios):.2f} |")
    print()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("head", type=Path)
    ap.add_argument("data", type=Path)
    ap.add_argument("-m", "--model", help="target GGUF the data was made with (default: the embedded default)")
    ap.add_argument("--curve", action="append", help="verify cost of N tokens in single steps, N:cost,...; "
                    "several: a table each (default: this project's CPU)")
    ap.add_argument("--head-cost", default="0,0.1", help="one head drafting step, in single steps; several: a row each")
    ap.add_argument("--depth", type=int, default=8, help="longest head chain (default 8)")
    ap.add_argument("--labels", help="a category per chunk of DATA, in order (default: MT-bench's, in its "
                    "file's order, as `train data --chunk 10` splits it; e.g. coding)")
    ap.add_argument("-t", "--threads", type=int, default=0)
    args = ap.parse_args()
    labels = args.labels.split(",") if args.labels else \
        list(dict.fromkeys(p.category for p in load_prompts(mtbench_file())))
    if args.threads:
        torch.set_num_threads(args.threads)
    head_costs = [float(x) for x in args.head_cost.split(",")]

    seq = 1024
    head, rows, windows, emb, w_d, to_draft = _held_out(args.head, args.data, args.model or str(models.default_target()),
                                                         seq, True)
    to_draft_np = to_draft.numpy()

    # the answers, in build_rows' order (it skips sequences under 4 tokens): prompt lookup at every
    # answer position p (token p committed; the first answer token comes with the prefill). Row
    # r = r0 + p - 1 of the sequence drafts token p + 1 on.
    found, skipped, s = [], 0, 0
    copy_first = np.full(len(rows.tok), -1, np.int64)
    for ci, c in enumerate(load(args.data)):
        off, npr = c["offsets"], c["n_prompt"]
        for i in range(len(npr)):
            a, b = int(off[i]), int(off[i + 1])
            if b - a < 4:
                continue
            r0 = int(rows.seq_start[s])
            s += 1
            toks = [int(x) for x in c["tokens"][a:b]]
            ans = c["answer"][a:b].astype(bool) if "answer" in c else np.arange(b - a) >= int(npr[i])
            first = int(np.argmax(ans))
            # one answer to the end (not multi-turn), and not cut by the packing into windows
            if not ans[first:].all() or b - a - 2 > seq or len(toks) - 1 - first < 2:
                skipped += 1
                continue
            copies = []
            for p in range(first, len(toks) - 1):
                match, cont = longest_local(toks[:p + 1])
                copies.append((match, cont))
                if cont:
                    copy_first[r0 + p - 1] = to_draft_np[cont[0]]
            found.append((labels[ci] if ci < len(labels) else str(ci), toks, first, r0, copies))
    if skipped:
        print(f"({skipped} sequences skipped: multi-turn, longer than {seq} rows, or too short)", file=sys.stderr)

    ok1, ok4, q, top0, q_copy = head_rows(head, rows, windows, seq, emb, w_d, to_draft, args.depth, copy_first)
    run1, run4 = run_length(ok1), run_length(ok4)
    answers = []
    for cat, toks, first, r0, copies in found:
        rec, streak = [], 0  # streak: earlier positions in a row whose copy's first token was right
        for p, (match, cont) in zip(range(first, len(toks) - 1), copies):
            r = r0 + p - 1
            rec.append(dict(match=match, copy_len=len(cont), copy_run=accepted(cont, toks[p + 1:]),
                            q_copy=float(q_copy[r]), agree=bool(cont) and int(top0[r]) == int(copy_first[r]),
                            head_run=int(run1[r]), head_run4=int(run4[r]), q=q[r], streak=streak))
            streak = streak + 1 if cont and cont[0] == toks[p + 1] else 0
        answers.append((cat, rec))

    def ones(field):
        return [np.array([x[field] for x in rec]) for _, rec in answers]

    copy_runs, head_runs, head_runs4 = ones("copy_run"), ones("head_run"), ones("head_run4")

    for spec in args.curve or [CURVE]:
        report(args, spec, answers, copy_runs, head_runs, head_runs4, head_costs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
