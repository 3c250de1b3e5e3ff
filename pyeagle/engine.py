"""The Python API: Engine.generate / Engine.stream over the C++ round loop."""
from __future__ import annotations

import argparse
import codecs
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence, Union

from . import _core

log = logging.getLogger("pyeagle")

Prompt = Union[str, Sequence[int]]

# Tree defaults: caps, not sizes. Each round the policy (cpp/src/budget.h, docs/ARCHITECTURE.md)
# chooses a plain step, a prompt-lookup chain alone or a head tree, and the tree's size and depth
# within these caps, from this engine's own measurements: the verify cost of every tree size on this
# machine (a 2-core CPU pays 2.4 single steps for 3 tokens, a GPU about one for 60) and the
# acceptance rates of its drafts. So one set of defaults serves CPUs and GPUs. adaptive=False turns
# the policy off: every round then verifies the head's n_tree best drafts (the tree sweep's mode).
DEFAULT_TREE = dict(n_depth=8, n_top_k=8, n_tree=64, p_min=0.0, adaptive=True, n_lookup=64, suffix=True,
                    copy_only=False, store=False)

# The tree options in llama.cpp-style spelling, shared by the chat and bench command lines.
TREE_FLAGS = (("--draft-depth", "n_depth", int, "draft tree expansion steps (n_depth)"),
              ("--draft-topk", "n_top_k", int, "children per expanded draft node (n_top_k)"),
              ("--draft-tree", "n_tree", int, "draft nodes verified per round (n_tree)"),
              ("--draft-pmin", "p_min", float,
               "verify only drafts whose path probability under the head is >= this (p_min)"),
              ("--draft-lookup", "n_lookup", int,
               "up to this many prompt-lookup tokens (copied from where the last 1-4 tokens occurred before) "
               "compete for the tree's places; 0: head drafts only (n_lookup)"))


def add_tree_args(ap) -> None:
    for flag, name, kind, doc in TREE_FLAGS:
        ap.add_argument(flag, dest=name, type=kind, help=doc)
    ap.add_argument("--draft-adaptive", dest="adaptive", action=argparse.BooleanOptionalAction, default=None,
                    help="the round policy: plain step, lookup chain or head tree, sized per round within the caps "
                         "(default: on); --no-draft-adaptive verifies --draft-tree head drafts every round")
    ap.add_argument("--draft-suffix", dest="suffix", action=argparse.BooleanOptionalAction, default=None,
                    help="copy drafts from a suffix tree of the context (every earlier occurrence of the "
                         "matched suffix votes); --no-draft-suffix: prompt-lookup chains (default: on)")
    ap.add_argument("--draft-copy-only", dest="copy_only", action=argparse.BooleanOptionalAction, default=None,
                    help="draft only copies (prompt lookup / suffix tree), never the head (default: off)")
    ap.add_argument("--draft-store", dest="store", action=argparse.BooleanOptionalAction, default=None,
                    help="copy drafts also from the engine's earlier outputs in this process (default: off)")


def tree_kwargs(args) -> dict:
    """The tree options given on a command line (None: the engine's default)."""
    return {name: getattr(args, name) for name in [f[1] for f in TREE_FLAGS] + ["adaptive", "suffix", "copy_only", "store"]}


def tree_argv(args) -> list[str]:
    """The tree options given on a command line, as flags again (for a child process)."""
    out = [x for flag, name, _, _ in TREE_FLAGS if getattr(args, name) is not None for x in (flag, str(getattr(args, name)))]
    for name, flag in (("adaptive", "--draft-adaptive"), ("suffix", "--draft-suffix"),
                       ("copy_only", "--draft-copy-only"), ("store", "--draft-store")):
        if getattr(args, name) is not None:
            out.append(flag if getattr(args, name) else "--no-" + flag[2:])
    return out


def with_overrides(tree: dict, **kw) -> dict:
    """tree with the options that are not None replaced."""
    return {**tree, **{k: v for k, v in kw.items() if v is not None}}


class _ComputeThread:
    """The one thread on which every Engine of this process generates, started on first use.

    ggml's CPU backend parallelises each decode with OpenMP, and libgomp keeps a team of threads
    for every thread that starts parallel work. Between decodes a team's idle threads spin, so
    that the next decode starts at once, but only while the teams' threads together fit the
    cores: a second team (a decode started on another thread, the caller's or a fresh one per
    call) makes every team sleep between decodes, and waking them costs more than the decode.
    On a 2-core machine plain decoding fell from 100 to 41 tok/s after one decode on the caller's
    thread (docs/BENCHMARKS.md, "One thread for ggml's work"). Generations queue here, in order;
    a cancel() of one that waits is honoured when it starts."""

    _lock = threading.Lock()
    _jobs: queue.Queue | None = None
    ident: int | None = None

    @classmethod
    def start(cls, fn) -> None:
        """Runs fn in place when called from the compute thread (queued, it would wait for itself),
        else queues it."""
        if threading.get_ident() == cls.ident:
            fn()
        else:
            cls.submit(fn)

    @classmethod
    def submit(cls, fn) -> None:
        with cls._lock:
            if cls._jobs is None:
                cls._jobs = queue.Queue()
                thread = threading.Thread(target=cls._serve, args=(cls._jobs,), name="pyeagle-compute", daemon=True)
                thread.start()
                cls.ident = thread.ident
            cls._jobs.put(fn)

    @staticmethod
    def _serve(jobs: queue.Queue) -> None:
        while True:
            jobs.get()()  # a job catches its own errors


def on_compute_thread(fn, *args, **kw):
    """fn(*args, **kw) run on the thread where every Engine generates; its result, or its exception.
    For direct ggml work in a process that also generates (Target.prefill / decode / verify,
    BatchDecoder, DraftHead): from any other thread it would slow every later decode (_ComputeThread)."""
    done = threading.Event()
    out: dict = {}

    def job():
        try:
            out["result"] = fn(*args, **kw)
        except BaseException as e:  # noqa: BLE001 - re-raised on the caller's thread
            out["error"] = e
        finally:
            done.set()

    _ComputeThread.start(job)
    done.wait()
    if "error" in out:
        raise out["error"]
    return out["result"]


@dataclass
class Output:
    text: str
    tokens: list[int]               # the new tokens only
    stop_reason: str                # eog | stop_token | stop_string | max_tokens | context_full | cancelled
    stats: _core.Stats = field(repr=False)


class Engine:
    """A target GGUF and, optionally, an EAGLE draft head GGUF (draft=None: plain decoding).

    With no model arguments the embedded default (SmolLM2-135M-Instruct + its trained head) is
    used. A call whose prompt extends the previous conversation reuses the KV prefix.
    """

    def __init__(self, target: str | Path | None = None, draft: str | Path | None = "default",
                 n_ctx: int = 4096, n_threads: int = 0, n_gpu_layers: int = 0, n_batch: int = 512,
                 n_depth: int | None = None, n_top_k: int | None = None, n_tree: int | None = None,
                 p_min: float | None = None, adaptive: bool | None = None, flash_attn: int = -1,
                 kv_f32: bool = False, n_lookup: int | None = None, suffix: bool | None = None,
                 copy_only: bool | None = None, store: bool | None = None, chat_template: str | None = None):
        if target is None:
            from . import models
            target = models.default_target()
            if draft == "default":
                draft = models.default_head()
        elif draft == "default":
            draft = None
        self.target_path = str(target)
        self.draft_path = str(draft) if draft else None
        self._core = _core.CoreEngine(self.target_path, self.draft_path or "", n_ctx=n_ctx, n_threads=n_threads,
                                      n_gpu_layers=n_gpu_layers, n_batch=n_batch, flash_attn=flash_attn,
                                      kv_f32=kv_f32)
        self.tree = with_overrides(DEFAULT_TREE, n_depth=n_depth, n_top_k=n_top_k, n_tree=n_tree, p_min=p_min,
                                   adaptive=adaptive, n_lookup=n_lookup, suffix=suffix, copy_only=copy_only,
                                   store=store)
        self._lock = threading.Lock()
        self._chat_template_source = chat_template  # template text or a file; None: the GGUF's own, else ChatML
        self._chat_template = None

    # --- facts --------------------------------------------------------------------------
    @property
    def target(self) -> _core.Target:
        return self._core.target

    @property
    def has_draft(self) -> bool:
        return self._core.has_head

    @property
    def model_name(self) -> str:
        """The target file's name without .gguf: the `model` of OpenAI-shaped responses."""
        name = Path(self.target_path).name
        return name[:-5] if name.endswith(".gguf") else name

    @property
    def chat_template(self):
        """The chat template (template.ChatTemplate): the GGUF's own unless one was given, else ChatML."""
        if self._chat_template is None:
            from .template import ChatTemplate
            self._chat_template = ChatTemplate.from_target(self.target, self._chat_template_source)
        return self._chat_template

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return self.target.tokenize(text, add_special=add_special, parse_special=True)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.target.detokenize(list(tokens)).decode("utf-8", errors="replace")

    # --- generation ---------------------------------------------------------------------
    def generate(self, prompt: Prompt, max_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
                 top_k: int = 0, seed: int = 0, stop: Sequence[str] = (), stop_token_ids: Sequence[int] = (),
                 draft: bool = True, n_depth: int | None = None, n_top_k: int | None = None,
                 n_tree: int | None = None, p_min: float | None = None, adaptive: bool | None = None,
                 n_lookup: int | None = None, suffix: bool | None = None, copy_only: bool | None = None,
                 store: bool | None = None, remember: bool = True) -> Output:
        out = None
        for piece in self._run(prompt, max_tokens, temperature, top_p, top_k, seed, stop, stop_token_ids, draft,
                               remember, per_round=False, n_depth=n_depth, n_top_k=n_top_k, n_tree=n_tree, p_min=p_min,
                               adaptive=adaptive, n_lookup=n_lookup, suffix=suffix, copy_only=copy_only, store=store):
            if isinstance(piece, Output):
                out = piece
        assert out is not None
        return out

    def stream(self, prompt: Prompt, **kw) -> Iterator[str]:
        """Yields text once per round (UTF-8 safe); the final Output is in `self.last`."""
        for piece in self._run(prompt, **self._stream_kw(kw)):
            if isinstance(piece, Output):
                self.last = piece
            elif piece:
                yield piece

    # --- OpenAI-shaped (openai_api.py) ----------------------------------------------------
    def create_completion(self, prompt: Prompt, **kw):
        """OpenAI's completions: a text_completion dict, or with stream=True an iterator of chunks.
        Keywords: max_tokens (16), temperature (1.0), top_p, seed, stop, stream, stream_options,
        and the tree options of generate()."""
        from .openai_api import create_completion
        return create_completion(self, prompt, **kw)

    def create_chat_completion(self, messages: Sequence[dict], **kw):
        """OpenAI's chat completions, rendered with the model's chat template: a chat.completion
        dict, or with stream=True an iterator of chat.completion.chunk dicts. Keywords: max_tokens
        (None: the rest of the context), temperature (1.0), top_p, seed, stop, stream,
        stream_options, and the tree options of generate()."""
        from .openai_api import create_chat_completion
        return create_chat_completion(self, messages, **kw)

    def cancel(self) -> None:
        """Stops a running generate()/stream() (from another thread) within one round."""
        self._core.cancel()

    def reset(self) -> None:
        """Forgets the conversation held in the KV cache (not what remember() keeps)."""
        self._core.reset()

    # a sentence of ~30 tokens: the context a warm-up measures the verify costs on
    WARM_UP_TEXT = ("The quick brown fox jumps over the lazy dog, and then it runs back across the field "
                    "to the old wooden fence where it started.")

    def warm_up(self) -> float:
        """Pays now what the first generation with the head would: the round policy's measurement
        of this machine's verify costs (about a second on a 2-core CPU) and the first prefill's
        check of its own LM head. A chat or a server calls it at start-up, so that the first reply
        does not wait for it. Returns the seconds it took (0 when nothing is drafted: no head and
        not copy_only); the KV is left empty."""
        if not (self.has_draft or self.tree.get("copy_only")):
            return 0.0
        t0 = time.perf_counter()
        ids = self.tokenize(self.WARM_UP_TEXT)
        self.generate(ids[:max(1, self.target.n_ctx // 2)], max_tokens=1, remember=False)
        self.reset()
        return time.perf_counter() - t0

    def remember(self, tokens: Prompt) -> None:
        """Keeps text or tokens as a copy source for later generations with `store=True`: where the
        context's last tokens occurred there, what followed is drafted. A generation with the store on
        keeps its own output so unless called with remember=False; this seeds the engine with more."""
        ids = self.tokenize(tokens, add_special=False) if isinstance(tokens, str) else [int(t) for t in tokens]
        with self._lock:
            self._core.remember(ids)

    def forget(self) -> None:
        """Drops everything remember() and earlier generations kept."""
        with self._lock:
            self._core.forget()

    @property
    def n_remembered(self) -> int:
        """Tokens kept as a copy source across generations."""
        return self._core.n_remembered

    def _wait(self, done: threading.Event) -> None:
        """Waits for the C++ loop to end, however many Ctrl-C arrive meanwhile (each cancels it
        again), then re-raises the interrupt: the caller never moves on while the loop still runs
        (the C++ engine refuses a second generation meanwhile)."""
        interrupted = None
        while not done.is_set():
            try:
                done.wait(0.5)
            except KeyboardInterrupt as e:
                self._core.cancel()
                interrupted = e
        if interrupted is not None:
            raise interrupted

    @staticmethod
    def _stream_kw(kw: dict) -> dict:
        names = ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "stop_token_ids", "draft", "remember",
                 *DEFAULT_TREE)
        unknown = set(kw) - set(names)
        if unknown:
            raise TypeError(f"unexpected arguments {sorted(unknown)}")
        defaults = dict(max_tokens=256, temperature=0.0, top_p=1.0, top_k=0, seed=0, stop=(), stop_token_ids=(),
                        draft=True, remember=True, **dict.fromkeys(DEFAULT_TREE))
        defaults.update(kw)
        return defaults

    def _gen_params(self, max_tokens=256, temperature=0.0, top_p=1.0, top_k=0, seed=0, stop_token_ids=(), draft=True,
                    remember=True, **tree) -> _core.GenParams:
        """The C++ loop's parameters: the tree options given (not None), else the engine's."""
        gp = _core.GenParams()
        for name, value in with_overrides(self.tree, **tree).items():
            setattr(gp, name, value)
        gp.draft, gp.temperature, gp.top_p, gp.top_k = bool(draft), float(temperature), float(top_p), int(top_k)
        gp.remember = bool(remember)
        gp.seed, gp.max_tokens, gp.stop_tokens = int(seed), int(max_tokens), [int(t) for t in stop_token_ids]
        return gp

    def _run(self, prompt, max_tokens, temperature, top_p, top_k, seed, stop, stop_token_ids, draft, remember=True,
             per_round=True, **tree):
        """Yields the text once per round (per_round=True), then the Output. Without pieces and stop
        strings the C++ loop runs without a Python callback (which costs each round the GIL) and
        the text is decoded once at the end."""
        ids = self.tokenize(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not ids:
            raise ValueError("empty prompt")
        if isinstance(stop, str):
            stop = [stop]
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text_parts: list[str] = []
        pieces: queue.Queue = queue.Queue()
        state: dict = {"stopped_at": None}
        tgt = self.target

        def decode(tokens: list[int]) -> str:
            return decoder.decode(b"".join(tgt.token_to_piece(t) for t in tokens))

        def on_tokens(tokens: list[int]) -> bool:  # once per round, on the compute thread
            new = decode(tokens)
            text_parts.append(new)
            if stop:
                text = "".join(text_parts)
                hits = [i for i in (text.find(s) for s in stop) if i >= 0]
                if hits:
                    state["stopped_at"] = min(hits)
                    return False
            pieces.put(new)
            return True

        gp = self._gen_params(max_tokens, temperature, top_p, top_k, seed, stop_token_ids, draft, remember, **tree)

        done = threading.Event()

        def work():
            try:
                state["result"] = self._core.generate(ids, gp, on_tokens if per_round or stop else None)
            except BaseException as e:  # noqa: BLE001 - re-raised on the caller's thread
                state["error"] = e
            finally:
                done.set()
                pieces.put(None)

        # The C++ loop runs on the compute thread with the GIL released, so this thread can stream
        # pieces and take Ctrl-C: KeyboardInterrupt cancels the loop (within one round), waits
        # for it, and leaves the engine usable.
        with self._lock:
            self._core.clear_cancel()  # a cancel() from here on stops this generation, even before it starts
            queued = False
            try:
                _ComputeThread.start(work)
                queued = True
                while True:
                    piece = pieces.get()
                    if piece is None:
                        break
                    yield piece
            except BaseException:
                self._core.cancel()
                raise
            finally:
                if queued:
                    self._wait(done)
        if "error" in state:
            raise state["error"]
        tokens, reason, stats = state["result"]
        if not (per_round or stop):
            text_parts.append(decode(tokens))
        tail = decoder.decode(b"", final=True)  # a UTF-8 sequence cut off at the end
        text = "".join(text_parts) + tail
        if state["stopped_at"] is not None:
            text = text[: state["stopped_at"]]
            reason = "stop_string"
        elif tail:
            yield tail
        yield Output(text=text, tokens=list(tokens), stop_reason=reason, stats=stats)
