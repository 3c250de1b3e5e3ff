"""Self-distillation data: the target answers the prompt set; its features are recorded.

For every prompt (through the model's chat template, as a chat user's would be) the target
decodes greedily through pyeagle's own runtime with features on, so one pass yields the answer
tokens and the post-norm feature of every token it fed. The work is split into chunks of
`chunk` prompts; each chunk is written atomically as DIR/chunk-NNNNN.npz, so a run can stop at
any time (Ctrl-C, --minutes) and the next run with the same arguments continues where it
stopped. Shards (--shard i/n) let n processes share the prompt set.

A chunk holds, for its sequences concatenated:
  tokens   int32 [T]        prompt + answer tokens
  features float16 [T, h]   post-norm feature of each token (the last token of a sequence was
                            never fed: its row is zero and never used)
  offsets  int64 [S + 1]    sequence boundaries in T
  n_prompt int32 [S]        prompt length of each sequence
  taps     float16 [T, 3h]  (optional, `add_taps`) the inputs of three target layers, low to high,
                            for EAGLE-3 heads; from one batched pass over each finished sequence
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np

from .._core import Target
from ..template import ChatTemplate
from .prompts import build_prompts


def chunk_path(out: Path, c: int) -> Path:
    return out / f"chunk-{c:05d}.npz"


def answer(t: Target, prompt_ids: list[int], max_new: int) -> tuple[list[int], np.ndarray]:
    """Greedy answer of the target and the features of every token fed (prompt + answer)."""
    t.truncate(0)
    t.prefill(prompt_ids)
    rows = [t.hidden()]
    out: list[int] = []
    while True:
        tok = int(np.argmax(t.last_logits()))
        out.append(tok)
        if t.is_eog(tok) or len(out) >= max_new or t.n_past + 1 >= t.n_ctx:
            break
        t.decode(tok)
        rows.append(t.hidden())
    feats = np.concatenate(rows + [np.zeros((1, rows[0].shape[1]), np.float32)])  # the last token was not fed
    return out, feats


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


def generate(out: Path, model: str, n_prompts: int = 4000, seed: int = 0, chunk: int = 40, max_new: int = 256,
             shard: tuple[int, int] = (0, 1), n_threads: int = 1, minutes: float = 0.0, progress: bool = True) -> int:
    """Writes the missing chunks of this shard; returns how many chunks are still missing."""
    out.mkdir(parents=True, exist_ok=True)
    prompts = build_prompts(n_prompts, seed)
    _check_meta(out, dict(model=os.path.basename(model), n_prompts=n_prompts, seed=seed, chunk=chunk,
                          max_new=max_new))
    t = Target(model, n_ctx=2048, n_threads=n_threads, n_batch=512)
    t.features = True
    tmpl = ChatTemplate.from_target(t)
    n_chunks = (len(prompts) + chunk - 1) // chunk
    mine = [c for c in range(n_chunks) if c % shard[1] == shard[0] and not chunk_path(out, c).exists()]
    t_end = time.monotonic() + minutes * 60 if minutes > 0 else float("inf")
    try:
        from tqdm import tqdm
        bar = tqdm(total=len(mine) * chunk, unit="prompt", disable=not progress, smoothing=0.05)
    except ImportError:
        bar = None
    done = 0
    for c in mine:
        if time.monotonic() > t_end:
            break
        tokens, feats, offsets, n_prompt = [], [], [0], []
        n_new = 0
        for p in prompts[c * chunk:(c + 1) * chunk]:
            ids = t.tokenize(tmpl.render([{"role": "user", "content": p}]), add_special=True, parse_special=True)
            ids = ids[:1024]
            ans, f = answer(t, ids, max_new)
            tokens.append(np.asarray(ids + ans, np.int32))
            feats.append(f.astype(np.float16))
            offsets.append(offsets[-1] + len(ids) + len(ans))
            n_prompt.append(len(ids))
            n_new += len(ans)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(tokens=n_new)
        write_chunk(chunk_path(out, c), tokens=np.concatenate(tokens), features=np.concatenate(feats),
                    offsets=np.asarray(offsets, np.int64), n_prompt=np.asarray(n_prompt, np.int32))
        done += 1
    if bar is not None:
        bar.close()
    return len(mine) - done


def default_taps(n_layer: int) -> list[int]:
    """EAGLE-3's tapped layers (their inputs): low, middle, high."""
    return [2, n_layer // 2, n_layer - 3]


def add_taps(src: Path, out: Path, model: str, layers: list[int] | None = None, n_threads: int = 1,
             minutes: float = 0.0, shard: tuple[int, int] = (0, 1), progress: bool = True) -> int:
    """Copies the chunks of `src` to `out` with EAGLE-3 taps added: each finished sequence goes
    through the target in one batched pass (prompt + answer), recording the inputs of `layers`.
    Resumable per chunk like `generate`; returns how many chunks are still missing."""
    out.mkdir(parents=True, exist_ok=True)
    layers = layers or default_taps(Target(model, n_ctx=64).n_layer)
    t = Target(model, n_ctx=2048, n_threads=n_threads, n_batch=512, tap_layers=layers)
    src_meta = json.loads((Path(src) / "meta.json").read_text()) if (Path(src) / "meta.json").exists() else {}
    _check_meta(out, {**src_meta, "taps": list(layers)})
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


def load(directory: Path) -> list[dict[str, np.ndarray]]:
    """All chunks of a data directory, in order."""
    files = sorted(Path(directory).glob("chunk-[0-9][0-9][0-9][0-9][0-9].npz"))
    if not files:
        raise FileNotFoundError(f"no chunk-*.npz in {directory}: run `python -m pyeagle.train data` first")
    return [dict(np.load(f)) for f in files]
