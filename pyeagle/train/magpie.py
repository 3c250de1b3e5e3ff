"""Prompts the target writes itself (`python -m pyeagle.train prompts`), Magpie style.

Magpie (arXiv 2406.08464): an instruction-tuned model, given its chat template up to the start of
a user turn and nothing else, writes a plausible user request, drawn from the kind of requests it
was tuned on. The built-in prompt sets are filled templates; a head trained on answers to them
agrees with the target less on MT-bench's questions than on held-out answers to its own kind of
prompt (docs/TRAINING.md). Requests the target samples itself come closer to what chat users ask.

The target samples `slots` requests at once (BatchDecoder, temperature/top-p), each from the
rendered template up to the user's content. A request is kept when it ended by itself (an
end-of-turn token within max_len), has at least min_words words, holds no template marker, is not a
repeat of one already kept, and shares no run of 8 words with the evaluation prompts (MT-bench's
questions and the held-out coding prompts, `exclude`). Kept requests are appended to a JSONL file
({"turns": [...]} a line, the format of `train data --prompts`) as they come, so a stopped run
continues where it left off; with follow_ups > 0 that share gets a second turn from the built-in
follow-ups.

Left alone, a small target asks mostly short questions. With openings > 0 that share of requests
starts from a built-in opening (an instruction verb or a task frame: "Write a", "Imagine you are",
"Given the following", ...) that the target continues; the kept request is the opening plus its
continuation, under the same checks. The openings name kinds of task, not topics.
"""
from __future__ import annotations

import json
import random
import re
import sys
import time
from pathlib import Path

from .._core import BatchDecoder, Target
from ..template import ChatTemplate
from .prompts import FOLLOW_UPS
from .varied import word_runs

_SENTINEL = "\x00PYEAGLE-USER\x00"

# Ways chat users open a request: writing, role play, reasoning, maths, code, extraction, science
# and essays, as instruction datasets phrase them. No trailing space: the target's continuation
# brings its own.
OPENINGS = [
    "Write a", "Write an", "Compose a", "Draft an email", "Write a short story", "Write a blog post",
    "Write a poem", "Rewrite the following", "Edit the following paragraph", "Create a",
    "Imagine you are", "Pretend you are", "Act as a", "You are a", "Role-play as",
    "Solve the following", "If a", "Suppose that", "A train", "What is the probability",
    "Calculate", "How many", "Prove that", "Find the value of",
    "Write a Python function", "Implement a", "Write a program", "Write a SQL query", "Debug this code:",
    "Explain the difference between", "Given the following", "Extract", "Summarize the following",
    "From the text below,", "Identify the", "List the", "Classify",
    "Explain how", "Describe the process of", "What are the main", "Why does", "How does",
    "Discuss the", "Compare and contrast", "Analyze the", "What were the causes of", "Evaluate the",
]


def user_prefix(tmpl: ChatTemplate) -> str:
    """The rendered chat up to where the first user message's content starts (system prompt included)."""
    text = tmpl.render([{"role": "user", "content": _SENTINEL}], add_generation_prompt=False)
    if _SENTINEL not in text:
        raise ValueError("the chat template does not show the user's message; it cannot prompt for one")
    return text.split(_SENTINEL)[0]


def _key(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def read_existing(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.endswith("\n"):  # a line cut by a stop is dropped (and rewritten below)
                out.append(json.loads(line)["turns"])
    return out


def evaluation_prompts(files: list[Path] | None = None) -> list[str]:
    """Every user turn of the evaluation prompt files: by default MT-bench's questions and the
    held-out coding prompts (benchmarks/prompts/coding.jsonl, when run from a checkout)."""
    from .prompts import load_conversations
    if files is None:
        from .. import bench
        files = [bench.mtbench_file()]
        coding = Path(__file__).resolve().parents[2] / "benchmarks" / "prompts" / "coding.jsonl"
        if not coding.exists():
            coding = Path("benchmarks/prompts/coding.jsonl")
        if coding.exists():
            files.append(coding)
    turns = [turn for f in files for conv in load_conversations(f) for turn in conv]
    print(f"excluding requests that share 8 words with {len(turns)} turns of {', '.join(map(str, files))}",
          file=sys.stderr)
    return turns


def synthesize(out: Path, model: str, n: int, seed: int = 0, temperature: float = 1.0, top_p: float = 0.95,
               max_len: int = 160, min_words: int = 4, slots: int = 48, n_threads: int = 0,
               follow_ups: float = 0.0, exclude: list[str] | None = None, minutes: float = 0.0,
               openings: float = 0.0, progress: bool = True) -> int:
    """Appends requests to `out` until it holds n; returns how many are still missing."""
    have = read_existing(out)
    if len(have) >= n:
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:  # drops a half-written last line, if any
        f.writelines(json.dumps({"turns": c}) + "\n" for c in have)
    seen = {_key(c[0]) for c in have}
    t = Target(model, n_ctx=64, n_threads=n_threads)
    prefix = t.tokenize(user_prefix(ChatTemplate.from_target(t)).encode(), add_special=True, parse_special=True)
    b = BatchDecoder(t, slots, len(prefix) + max_len + 8, 512, n_threads)
    b.set_sampling(temperature, top_p, 0, seed * 1_000_003 + len(have))  # a resumed run draws anew
    rng = random.Random(seed * 7919 + len(have))
    excluded = set().union(*(word_runs(e) for e in exclude)) if exclude else set()  # once, not per request
    detok = lambda ids: t.detokenize(ids).decode("utf-8", errors="replace")  # noqa: E731
    opening_ids = {o: t.tokenize(o.encode(), add_special=False, parse_special=False) for o in OPENINGS}

    def start() -> tuple[str, list[int]]:  # a request's opening text ("": none) and its first feed
        o = rng.choice(OPENINGS) if openings > 0 and rng.random() < openings else ""  # 0: rng as before
        return o, list(prefix) + (opening_ids[o] if o else [])

    gen: list[list[int]] = [[] for _ in range(slots)]
    opened, feeds = map(list, zip(*(start() for _ in range(slots))))
    stats = dict(kept=0, cut=0, short=0, repeat=0, overlap=0)
    t_end = time.monotonic() + minutes * 60 if minutes > 0 else float("inf")
    from tqdm import tqdm
    bar = tqdm(total=n, initial=len(have), unit="prompt", disable=not progress, smoothing=0.05)
    count = len(have)
    try:
        with open(out, "a", encoding="utf-8") as f:
            while count < n and time.monotonic() < t_end:
                nxt, _ = b.step(feeds)
                for s in range(slots):
                    tok = int(nxt[s])
                    done = t.is_eog(tok)
                    if not done:
                        gen[s].append(tok)
                        if len(gen[s]) < max_len:
                            feeds[s] = [tok]
                            continue
                    text = (opened[s] + detok(gen[s])).strip()
                    why = ("cut" if not done else "short" if len(text.split()) < min_words or "<|" in text
                           else "repeat" if _key(text) in seen else "overlap" if word_runs(text) & excluded else "kept")
                    stats[why] += 1
                    if why == "kept" and count < n:
                        seen.add(_key(text))
                        turns = [text] + ([rng.choice(FOLLOW_UPS)] if rng.random() < follow_ups else [])
                        f.write(json.dumps({"turns": turns}) + "\n")
                        f.flush()
                        count += 1
                        bar.update(1)
                        bar.set_postfix(stats)
                    b.truncate(s, 0)
                    gen[s] = []
                    opened[s], feeds[s] = start()
    except KeyboardInterrupt:
        print(f"\nstopped with {count} of {n} prompts; the same command continues", file=sys.stderr)
    bar.close()
    return n - count
