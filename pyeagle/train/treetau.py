"""Tree acceptance on fixed text: the tau a head's draft trees would reach on answers already written.

`benchmarks/head_tau.py` measures issue #17's number live: the engine decodes, and every round
verifies the head's tree. Its per-prompt noise is large for comparing heads or tree rules: a change
of tree changes the batches the target verifies, batched kernels break near-ties differently
(docs/ARCHITECTURE.md, "Invariants"), the text moves, and with it the prompt's tau. Here the text is
fixed: the target's own greedy answers recorded with their features (`train data`). At each round
the head grows the engine's tree (EAGLE-2: the top-k best nodes of each depth expanded, then the
n_tree best by score kept; `engine::grow_head_tree` with the round policy off), the drafts are
matched against the recorded continuation, and the next round starts after the accepted drafts and
the bonus token, as decoding would. No target pass is run: the recorded features stand in for the
verify pass's (same model, same text), so two heads or two tree rules are compared on exactly the
same tokens, and the result does not depend on the machine's kernels beyond the head's own.

    python -m pyeagle.train tree --head HEAD.gguf --data data/mtb [--sizes 8,60] [--depth 6] [--topk 10] [--json F]
    python benchmarks/head_tau.py --compare A.json B.json     # two --json runs, paired by answer
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np


@dataclass
class _Cand:
    token: int
    parent: int     # candidate index, -1: the root
    depth: int
    score: float


@dataclass
class TreeTau:
    """Per answer: tokens emitted and rounds (target passes) it took; tau = tokens / rounds."""
    tokens: list[int] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    accepted_depth: list[int] = field(default_factory=list)  # [d]: rounds that accepted d drafts

    @property
    def tau(self) -> float:
        return sum(self.tokens) / max(sum(self.rounds), 1)


def _top_k_logprobs(logits: np.ndarray, k: int) -> list[tuple[float, int]]:
    """The k best (log-probability, draft id), best first, ties to the lower id (sampling.cpp's top_k_logprobs)."""
    mx = np.float32(logits.max())
    lse = mx + np.float32(math.log(float(np.exp((logits - mx).astype(np.float64)).sum())))
    idx = np.argpartition(-logits, k)[:k + 1] if k < len(logits) else np.arange(len(logits))
    order = sorted(idx.tolist(), key=lambda i: (-float(logits[i]), i))
    return [(np.float32(logits[i]) - lse, int(i)) for i in order[:k]]


def _best(cands: list[_Cand], ids: Iterable[int], n: int) -> list[int]:
    """The n best of ids by score; ties: shallower, then earlier (tree.cpp's rerank order)."""
    return sorted(ids, key=lambda i: (-cands[i].score, cands[i].depth, i))[:n]


def grow_tree(head, root: int, pos_root: int, y_root: np.ndarray, first_logits: np.ndarray,
              n_tree: int, depth: int, top_k: int, powers: Sequence[float] = ()) -> tuple[list[int], list[_Cand]]:
    """The engine's fixed tree for one round (grow_head_tree with the policy off, then rerank): the
    indices of the kept candidates, shallow first, and all candidates. The head has committed every
    pair up to the root (its prefix); y_root / first_logits are the last prefix row's output and logits. powers: a_d per depth
    (the file's pyeagle.tree.depth_power; () = the head's own, [1.0] = none)."""
    pw = list(powers) if powers else list(head.depth_powers) or [1.0]

    def power(d: int) -> float:
        return pw[min(len(pw), d) - 1]

    cands: list[_Cand] = []

    def add(parent: int, logits: np.ndarray) -> None:
        d = 1 if parent < 0 else cands[parent].depth + 1
        base = np.float32(0.0) if parent < 0 else cands[parent].score
        for lp, tok in _top_k_logprobs(logits, top_k):
            score = np.float32(base + np.float32(lp * np.float32(power(d))))  # float32, as the engine's
            cands.append(_Cand(head.to_target(tok), parent, d, score))

    add(-1, first_logits)
    y_of: dict[int, np.ndarray] = {}
    cell_of: dict[int, int] = {}
    for d in range(1, depth):
        frontier = _best(cands, [i for i, c in enumerate(cands) if c.depth == d], top_k)
        if not frontier:
            break
        ranked = sorted((c.score for c in cands), reverse=True)
        if len(ranked) >= n_tree and cands[frontier[0]].score < ranked[n_tree - 1]:
            break  # no frontier node can enter the best n_tree, nor can its children
        tok = [cands[f].token for f in frontier]
        inp = np.stack([y_root if cands[f].parent < 0 else y_of[cands[f].parent] for f in frontier])
        parent_cell = [-1 if cands[f].parent < 0 else cell_of[cands[f].parent] for f in frontier]
        first = head.tree(tok, inp.astype(np.float32), [pos_root + d - 1] * len(frontier), parent_cell)
        ys, logits = head.y(), head.logits()
        for i, f in enumerate(frontier):
            y_of[f], cell_of[f] = ys[i].copy(), first + i
        for i, f in enumerate(frontier):
            add(f, logits[i])
    keep = _best(cands, range(len(cands)), n_tree)
    return sorted(keep, key=lambda i: cands[i].depth), cands


def accepted_along(cands: list[_Cand], keep: Sequence[int], text: Sequence[int]) -> int:
    """Drafts accepted on fixed text: the longest kept path that spells text[0], text[1], ..."""
    kept = set(keep)
    node, n = -1, 0
    while n < len(text):
        nxt = [i for i in kept if cands[i].parent == node and cands[i].token == text[n]]
        if not nxt:
            break
        node, n = nxt[0], n + 1
    return n


def answer_runs(answer: np.ndarray) -> list[tuple[int, int]]:
    """[a, b) spans of consecutive answer tokens (a turn each)."""
    runs, a = [], None
    for i, v in enumerate(answer.tolist() + [0]):
        if v and a is None:
            a = i
        elif not v and a is not None:
            runs.append((a, i))
            a = None
    return runs


def tree_tau(head, chunks: Sequence[dict], n_tree: int = 8, depth: int = 6, top_k: int = 10,
             powers: Sequence[float] = (), max_answer: int = 256, limit: int = 0, progress: bool = False,
             trace: list | None = None) -> TreeTau:
    """Fixed-text tree tau of `head` (a pyeagle DraftHead) over every answer turn of `chunks`
    (`train.data.load`): per turn, the first answer token is the first root (decoding samples it from
    the prefill), and each round emits its accepted drafts plus the bonus token, up to max_answer
    tokens or the turn's end. Where max_answer cuts the turn, rounds draft no deeper than the tokens
    still wanted less one, as the engine does under max_tokens. trace: if a list, each round's (root
    position, tree tokens, tree parents, margin) is appended, root first, in the engine's order (its
    round trace); margin: the score of the last kept candidate less the best one left out (near 0: a
    tie decided the tree)."""
    from tqdm import tqdm

    out = TreeTau(accepted_depth=[0] * (depth + 1))
    seqs = [(c, s) for c in chunks for s in range(len(c["offsets"]) - 1)]
    seqs = seqs[:limit] if limit else seqs
    for c, s in tqdm(seqs, unit="seq", disable=not progress):
        a, b = int(c["offsets"][s]), int(c["offsets"][s + 1])
        toks = c["tokens"][a:b].astype(np.int64)
        feats = c["features"][a:b]
        for r0, r1 in answer_runs(c["answer"][a:b]):
            end = min(r1, r0 + max_answer)
            head.truncate(0)
            committed = 0  # the head holds pairs (feature t, token t+1) for t < committed
            r = r0         # the root: the last token emitted; the target's KV holds positions < r
            emitted, rounds = 1, 0  # the first answer token comes from the prefill
            while r + 1 < end:
                # as the engine under max_tokens: no draft deeper than the tokens still wanted less one
                d_max = min(depth, end - r - 2) if r0 + max_answer <= r1 else depth
                if d_max < 1:  # one token left: a plain step
                    if trace is not None:
                        trace.append((r, [int(toks[r])], [-1], math.inf))
                    out.accepted_depth[0] += 1
                    emitted, rounds, r = emitted + 1, rounds + 1, r + 1
                    continue
                head.rollback()
                head.prefix([int(x) for x in toks[committed + 1:r + 1]],
                            np.ascontiguousarray(feats[committed:r], np.float32), committed)
                committed = r
                keep, cands = grow_tree(head, int(toks[r]), r, head.y()[-1].copy(), head.logits()[-1].copy(),
                                        n_tree, d_max, top_k, powers)
                if trace is not None:
                    node = {k: i + 1 for i, k in enumerate(keep)}
                    scores = sorted((float(x.score) for x in cands), reverse=True)
                    margin = scores[n_tree - 1] - scores[n_tree] if len(scores) > n_tree else math.inf
                    trace.append((r, [int(toks[r])] + [cands[k].token for k in keep],
                                  [-1] + [node.get(cands[k].parent, 0) for k in keep], margin))
                n_acc = accepted_along(cands, keep, toks[r + 1:end].tolist())
                n_emit = min(n_acc + 1, end - r - 1)
                out.accepted_depth[min(n_acc, depth)] += 1
                emitted += n_emit
                rounds += 1
                r += n_emit
            out.tokens.append(emitted - 1)  # tokens after the prefill's, as head_tau counts them
            out.rounds.append(rounds)
    head.rollback()
    return out


FLAT = (1.0, 1.15, 1.3, 1.5, 1.75, 2.0)  # a_d for every d >= 2 (a_1 = 1: only ratios between depths matter)
RAMP = (0.85, 1.15)                      # then a_d = g * r^(d-2) around the best flat g


def fit_powers(head, chunks: Sequence[dict], n_tree: int, depth: int, top_k: int, max_answer: int = 256,
               limit: int = 0, log=None) -> tuple[list[float], list[tuple[list[float], float]]]:
    """The tree calibration a_1..a_depth (a_1 = 1) that maximises fixed-text tau on `chunks`: a grid
    of flat powers for depths >= 2, then a ramp around the best. A path's score is sum a_d log q_d:
    a_d > 1 says the head's depth-d probabilities are less reliable than its first step's (it drafts
    on its own predicted features there), so the tree trades depth for width. Returns the best
    powers and every (powers, tau) tried. Use held-out data, never the set the head is judged on."""
    tried: list[tuple[list[float], float]] = []

    def run(pw: list[float]) -> float:
        t = tree_tau(head, chunks, n_tree, depth, top_k, pw, max_answer, limit).tau
        tried.append((pw, t))
        (log or (lambda x: print(x, flush=True)))(f"powers {', '.join(f'{a:.3f}' for a in pw)}: tau {t:.4f}")
        return t

    flat = {g: run([1.0] + [g] * (depth - 1)) for g in FLAT}
    g = max(FLAT, key=lambda x: (flat[x], -abs(x - 1)))
    for r in RAMP:
        run([1.0] + [g * r ** (d - 2) for d in range(2, depth + 1)])
    best = max(tried, key=lambda pt: (pt[1], -sum(abs(a - 1) for a in pt[0])))
    return [round(a, 4) for a in best[0]], tried


def main_tree(args, ap) -> int:
    """`python -m pyeagle.train tree` (see the module docstring)."""
    import json

    from .. import models
    from .._core import DraftHead, Target
    from ..convert import write_depth_powers
    from .data import load

    if not args.head.is_file():
        ap.error(f"no such head file: {args.head}")
    if args.write and not args.fit_powers:
        ap.error("--write needs --fit-powers")
    sizes = [int(x) for x in args.sizes.split(",")]
    powers = [float(x) for x in args.powers.split(",")] if args.powers else []
    chunks = load(args.data)
    longest = max(int(np.diff(c["offsets"]).max()) for c in chunks)
    target = Target(args.model or str(models.default_target()), n_ctx=64, n_threads=args.threads or 0)
    head = DraftHead(str(args.head), target, n_ctx=longest + args.depth * args.topk + 64)
    if args.fit_powers:
        best, tried = fit_powers(head, chunks, sizes[0], args.depth, args.topk, args.max_answer, args.limit)
        base = next(t for p, t in tried if all(a == 1.0 for a in p))
        print(f"fitted powers (n_tree {sizes[0]}, depth {args.depth}, top-k {args.topk}): "
              f"{', '.join(map(str, best))}; tau {max(t for _, t in tried):.4f} against {base:.4f} without")
        if args.write:
            write_depth_powers(args.head, args.write, best)
            print(f"wrote {args.write} (pyeagle.tree.depth_power)")
        return 0
    rows = []
    for n in sizes:
        r = tree_tau(head, chunks, n, args.depth, args.topk, powers, args.max_answer, args.limit, progress=True)
        print(f"n_tree {n}: tau {r.tau:.4f} over {len(r.rounds)} answers, {sum(r.rounds)} rounds; "
              f"rounds by drafts accepted: {r.accepted_depth}")
        # head_tau.py's rows (tokens with the prefill's first; passes = rounds): its --compare pairs two runs
        rows += [{"n_tree": n, "id": i, "tokens": t + 1, "passes": k}
                 for i, (t, k) in enumerate(zip(r.tokens, r.rounds))]
    if args.json:
        args.json.write_text(json.dumps({"head": str(args.head), "powers": powers or list(head.depth_powers),
                                         "rows": rows}, indent=1))
    return 0
