"""Self-distillation data: the target answers the prompt set; its features are recorded.

For every conversation (through the model's chat template, as a chat user's would be) the target
decodes greedily through pyeagle's own runtime with features on, so one pass yields the answer
tokens and the post-norm feature of every token it fed. Many conversations decode at once
(BatchDecoder, one llama_decode per step); a second user turn is answered with the first answer
as context. The work is split into chunks of
`chunk` prompts; each chunk is written atomically as DIR/chunk-NNNNN.npz, so a run can stop at
any time (Ctrl-C, --minutes) and the next run with the same arguments continues where it
stopped. Shards (--shard i/n) let n processes share the prompt set.

A chunk holds, for its sequences concatenated:
  tokens   int32 [T]        prompt + answer tokens
  features float16 [T, h]   post-norm feature of each token (the last token of a sequence was
                            never fed: its row is zero and never used)
  offsets  int64 [S + 1]    sequence boundaries in T
  n_prompt int32 [S]        prompt length of each sequence (its first turn's)
  answer   uint8 [T]        (data made with follow-ups) 1 where the target chose the token: the
                            answers of every turn; later turns' prompts are 0
  taps     float16 [T, 3h]  (optional, `add_taps`) the inputs of three target layers, low to high,
                            for EAGLE-3 heads; from one batched pass over each finished sequence
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from .._core import BatchDecoder, Target
from ..template import ChatTemplate
from .prompts import build_conversations, build_prompts, load_conversations, with_follow_ups


def chunk_path(out: Path, c: int) -> Path:
    return out / f"chunk-{c:05d}.npz"


def write_chunk(path: Path, **arrays: np.ndarray) -> None:
    """A chunk appears whole or not at all; Ctrl-C while saving leaves no partial file."""
    part = path.with_suffix(".part.npz")
    old_handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        np.savez(part, **arrays)
        part.replace(path)
    finally:
        signal.signal(signal.SIGINT, old_handler)


def _check_meta(out: Path, meta: dict) -> None:
    meta_file = out / "meta.json"
    if meta_file.exists():
        old = json.loads(meta_file.read_text())
        if old != meta:
            raise SystemExit(f"{out} holds data made with {old}; this run asks for {meta}. Use another directory.")
    else:
        meta_file.write_text(json.dumps(meta, indent=1))


class _Conversation:
    """One conversation on a slot: its tokens so far, their features and which are answers."""

    def __init__(self, index: int, turns: list[str]):
        self.index, self.turns, self.turn = index, turns, 0
        self.tokens: list[int] = []
        self.answer: list[int] = []        # 1: a token the target chose (greedy), 0: prompt
        self.feats: list[np.ndarray] = []  # one [k, h] block per feed; rows align with tokens
        self.taps: list[np.ndarray] = []   # the same for the taps ([k, 3h]) when recorded
        self.n_prompt = 0                  # length of the first turn's prompt
        self.n_new = 0                     # answer tokens of the current turn

    def messages(self, detok) -> list[dict]:
        """The chat so far, through the user turn being answered next."""
        msgs, k, ans = [], 0, self.answer
        runs, cur = [], []
        for tok, a in zip(self.tokens, ans):  # answer runs, in order
            if a:
                cur.append(tok)
            elif cur:
                runs.append(cur)
                cur = []
        if cur:
            runs.append(cur)
        for i in range(self.turn + 1):
            msgs.append({"role": "user", "content": self.turns[i]})
            if i < self.turn:
                msgs.append({"role": "assistant", "content": detok(runs[k])})
                k += 1
        return msgs


def generate(out: Path, model: str, n_prompts: int = 4000, seed: int = 0, chunk: int = 40, max_new: int = 256,
             shard: tuple[int, int] = (0, 1), n_threads: int = 1, minutes: float = 0.0, progress: bool = True,
             follow_ups: float = 0.0, slots: int = 16, n_ctx_slot: int = 2048, taps: list[int] | None = None,
             prompts: Path | None = None, prompt_set: str = "templates") -> int:
    """Writes the missing chunks of this shard; returns how many chunks are still missing.

    The target answers `slots` conversations at once (BatchDecoder: one llama_decode per step for
    all of them, each in its own KV stream), greedily, up to max_new tokens per turn. With
    follow_ups > 0 that share of the conversations has a second user turn, answered with the first
    answer as context, as a chat user sees it. A chunk is written once all its conversations end.
    With taps (three layer ids; n_layer: the last layer's output) the chunks also hold EAGLE-3
    inputs, recorded in the same pass. With `prompts` (a JSONL file, prompts.load_conversations)
    the conversations are that file's first n_prompts, not a built-in set; prompt_set "varied"
    takes varied.build_varied_prompts instead of the first set's templates."""
    out.mkdir(parents=True, exist_ok=True)
    t = Target(model, n_ctx=64, n_threads=n_threads)
    if prompts is not None:
        raw = Path(prompts).read_bytes()
        convs = load_conversations(prompts)[:n_prompts]
        meta = dict(model=os.path.basename(model), prompts=os.path.basename(prompts),
                    prompts_sha256=hashlib.sha256(raw).hexdigest(), n_prompts=len(convs), chunk=chunk, max_new=max_new)
    else:
        if prompt_set == "varied":
            from .varied import build_varied_prompts, vocabulary_words
            words = vocabulary_words(lambda i: t.detokenize([i]).decode("utf-8", errors="replace"), t.n_vocab)
            convs = with_follow_ups(build_varied_prompts(n_prompts, seed, words), seed, follow_ups)
        elif prompt_set == "templates":
            convs = build_conversations(n_prompts, seed, follow_ups) if follow_ups > 0 else [[p] for p in build_prompts(n_prompts, seed)]
        else:
            raise ValueError(f"unknown prompt set {prompt_set!r} (templates, varied)")
        meta = dict(model=os.path.basename(model), n_prompts=n_prompts, seed=seed, chunk=chunk, max_new=max_new)
        if follow_ups > 0:
            meta["follow_ups"] = follow_ups
        if prompt_set != "templates":
            meta["prompt_set"] = prompt_set
    if taps:
        meta["taps"] = list(taps)
    _check_meta(out, meta)
    tmpl = ChatTemplate.from_target(t)
    n_chunks = (len(convs) + chunk - 1) // chunk
    mine = [c for c in range(n_chunks) if c % shard[1] == shard[0] and not chunk_path(out, c).exists()]
    queue = [i for c in mine for i in range(c * chunk, min((c + 1) * chunk, len(convs)))]
    queue.reverse()  # pop() takes them in order
    left = {c: min(chunk, len(convs) - c * chunk) for c in mine}
    finished: dict[int, _Conversation] = {}
    b = BatchDecoder(t, slots, n_ctx_slot, 512, n_threads, list(taps or []))
    n_ctx_slot = b.n_ctx_slot
    detok = lambda ids: t.detokenize(ids).decode("utf-8", errors="replace")  # noqa: E731
    slot: list[_Conversation | None] = [None] * slots
    feeds: list[list[int]] = [[] for _ in range(slots)]

    def start_turn(s: int, conv: _Conversation) -> bool:
        """Feeds slot s the prompt of conv's current turn; False when it would not fit."""
        ids = t.tokenize(tmpl.render(conv.messages(detok)), add_special=True, parse_special=True)
        if conv.turn == 0:
            ids = ids[:1024]
            conv.n_prompt = len(ids)
        keep = 0  # the prefix already in the KV (a retokenised answer may part early)
        while keep < min(len(ids), b.n_past(s)) and ids[keep] == conv.tokens[keep]:
            keep += 1
        if len(ids) + max_new > n_ctx_slot or keep == len(ids):
            return False
        b.truncate(s, keep)
        conv.feats = [np.concatenate(conv.feats)[:keep]] if keep else []  # a row per token in the KV
        conv.taps = [np.concatenate(conv.taps)[:keep]] if keep and taps else []
        conv.tokens, conv.answer = conv.tokens[:keep] + ids[keep:], conv.answer[:keep] + [0] * (len(ids) - keep)
        conv.n_new = 0
        feeds[s] = ids[keep:]
        return True

    def finish(conv: _Conversation) -> None:
        finished[conv.index] = conv
        c = conv.index // chunk
        left[c] -= 1
        if left[c]:
            return
        seqs = [finished.pop(i) for i in range(c * chunk, c * chunk + min(chunk, len(convs) - c * chunk))]
        seqs = [q for q in seqs if q.tokens]  # a prompt too long for a slot is left out
        h = t.n_embd
        write_chunk(chunk_path(out, c),
                    tokens=np.concatenate([np.asarray(q.tokens, np.int32) for q in seqs]),
                    features=np.concatenate([np.concatenate(q.feats + [np.zeros((1, h), np.float16)]) for q in seqs]),
                    offsets=np.cumsum([0] + [len(q.tokens) for q in seqs]).astype(np.int64),
                    n_prompt=np.asarray([q.n_prompt for q in seqs], np.int32),
                    answer=np.concatenate([np.asarray(q.answer, np.uint8) for q in seqs]),
                    # (the last token of a sequence was never fed: its rows are zero)
                    **({"taps": np.concatenate([np.concatenate(q.taps + [np.zeros((1, 3 * h), np.float16)])
                                                for q in seqs])} if taps else {}))
        del left[c]

    def refill(s: int) -> None:
        while queue:
            i = queue.pop()
            conv = _Conversation(i, convs[i])
            b.truncate(s, 0)
            if start_turn(s, conv):
                slot[s] = conv
                return
            finish(conv)  # a prompt too long even for the first turn: an empty sequence
        slot[s], feeds[s] = None, []

    t_end = time.monotonic() + minutes * 60 if minutes > 0 else float("inf")
    from tqdm import tqdm
    bar = tqdm(total=len(queue), unit="conv", disable=not progress, smoothing=0.02)
    n_tok, t0 = 0, time.monotonic()

    try:
        for s in range(slots):
            refill(s)
        while any(q is not None for q in slot) and time.monotonic() < t_end:
            nxt, hidden = b.step(feeds)
            tapped = b.taps() if taps else None
            r = 0
            for s, conv in enumerate(slot):
                if conv is None:
                    continue
                k = len(feeds[s])
                conv.feats.append(hidden[r:r + k].astype(np.float16))
                if taps:
                    conv.taps.append(tapped[r:r + k].astype(np.float16))
                r += k
                tok = int(nxt[s])
                conv.tokens.append(tok)
                conv.answer.append(1)
                conv.n_new += 1
                n_tok += 1
                if not (t.is_eog(tok) or conv.n_new >= max_new or len(conv.tokens) >= n_ctx_slot):
                    feeds[s] = [tok]
                    continue
                conv.turn += 1
                if conv.turn < len(conv.turns) and start_turn(s, conv):
                    continue
                finish(conv)
                bar.update(1)
                bar.set_postfix(tok_s=f"{n_tok / (time.monotonic() - t0):.0f}", chunks=len(mine) - len(left))
                refill(s)
    except KeyboardInterrupt:  # written chunks are whole; conversations in flight are redone next time
        print(f"\nstopped: {len(left)} chunks left; the same command continues", file=sys.stderr)
    bar.close()
    return len(left)


def default_taps(n_layer: int) -> list[int]:
    """The layers pyeagle's EAGLE-3 heads read: the inputs of layers 2 and n_layer/2, and the last
    layer's output (id n_layer, the feature EAGLE-1/2 heads read). Published EAGLE-3 heads use
    2, n_layer/2, n_layer-3, whose input gives the target's next token far less often."""
    return [2, n_layer // 2, n_layer]


def add_taps(src: Path, out: Path, model: str, layers: list[int] | None = None, n_threads: int = 1,
             minutes: float = 0.0, shard: tuple[int, int] = (0, 1), progress: bool = True) -> int:
    """Copies the chunks of `src` to `out` with EAGLE-3 taps added: each finished sequence goes
    through the target in one batched pass (prompt + answer), recording the inputs of `layers`.
    Resumable per chunk like `generate`; returns how many chunks are still missing."""
    out.mkdir(parents=True, exist_ok=True)
    layers = layers or default_taps(Target(model, n_ctx=64).n_layer)
    t = Target(model, n_ctx=2048, n_threads=n_threads, n_batch=512, tap_layers=layers)
    _check_meta(out, {**read_meta(src), "taps": list(layers)})
    t.features = True
    files = sorted(Path(src).glob("chunk-[0-9][0-9][0-9][0-9][0-9].npz"))
    todo = [f for i, f in enumerate(files) if i % shard[1] == shard[0] and not (out / f.name).exists()]
    t_end = time.monotonic() + minutes * 60 if minutes > 0 else float("inf")
    from tqdm import tqdm
    done = 0
    for f in tqdm(todo, unit="chunk", disable=not progress):
        if time.monotonic() > t_end:
            break
        c = dict(np.load(f))
        taps = np.zeros((len(c["tokens"]), 3 * t.n_embd), np.float16)
        off = c["offsets"]
        for s in range(len(off) - 1):
            a, b = int(off[s]), int(off[s + 1])
            t.truncate(0)
            t.prefill([int(x) for x in c["tokens"][a:b - 1]])  # the last token was never fed
            taps[a:b - 1] = t.taps()
        write_chunk(out / f.name, **c, taps=taps)
        done += 1
    return len(todo) - done


def data_dirs(directories: Path | list[Path]) -> list[Path]:
    """One data directory or several, as a list."""
    return [Path(d) for d in ([directories] if isinstance(directories, (str, Path)) else directories)]


def read_meta(directory: Path) -> dict:
    """A data directory's meta.json ({} if it has none)."""
    meta_file = Path(directory) / "meta.json"
    return json.loads(meta_file.read_text()) if meta_file.exists() else {}


def load(directories: Path | list[Path]) -> list[dict[str, np.ndarray]]:
    """All chunks of one data directory, or of several in the order given (e.g. two rounds of
    data: `fit --data round2 round3`), each in chunk order. Directories whose meta.json names
    different targets or different EAGLE-3 taps do not mix."""
    dirs = data_dirs(directories)
    first = read_meta(dirs[0])
    files = []
    for d in dirs:
        found = sorted(d.glob("chunk-[0-9][0-9][0-9][0-9][0-9].npz"))
        if not found:
            raise FileNotFoundError(f"no chunk-NNNNN.npz in {d}: run `python -m pyeagle.train data` first")
        meta = read_meta(d)
        for key in ("model", "taps"):
            if meta.get(key) != first.get(key):
                raise SystemExit(f"{d} was made with {key} {meta.get(key)!r}, {dirs[0]} with "
                                 f"{first.get(key)!r}: data of different targets or taps do not mix")
        files += found
    return [dict(np.load(f)) for f in files]
