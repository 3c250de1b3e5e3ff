"""python -m pyeagle.chat: a multi-turn chat on a GGUF model, with EAGLE drafts when a head is given.

    python -m pyeagle.chat                                 # embedded default (SmolLM2-135M-Instruct + its head)
    python -m pyeagle.chat -m target.gguf -md head.gguf -c 4096 -n 512 -sys "You are terse."
    printf 'hi\\nhow are you\\n' | python -m pyeagle.chat -m target.gguf    # one reply per input line

Commands: /help, /reset (forget the conversation), /stats (session totals), /exit. Keys: Ctrl-C during a
reply stops it, Ctrl-C at the prompt exits (status 130, like llama.cpp), Ctrl-D exits (status 0). With
stdin not a terminal, each line is a message (or a command), each reply is printed followed by a newline
(an empty line for a skipped message), and everything else goes to stderr.

- The chat template is the GGUF's own (or --chat-template), rendered only in jinja2's sandbox
  (template.py); a template that fails or tries an unsafe operation is refused at start.
- The KV is reused across turns: each turn renders the whole conversation, and where the new text
  extends the text of the previous turn (its prompt and reply), the prompt is the previous turn's
  tokens (the reply's as generated) plus the tokens of the new text only, as llama.cpp's CLI does.
  The model thus sees its own reply tokens as it emitted them (a reply can tokenize differently as
  text, and control tokens have no text), and turn N prefills only its new message. Elsewhere (a
  template that rewrites old turns) the whole text is tokenized and the engine reuses the common prefix.
- --temp defaults to 0 (greedy; llama.cpp's default is 0.8): the reply is then the target's own
  greedy output, with or without drafts.
- An interrupted reply is dropped together with its message: the history holds complete exchanges.
- A full context: the oldest exchanges are dropped (the system prompt stays) until prompt + n_predict
  fits n_ctx, with a notice on stderr; a message that alone does not fit n_ctx is skipped.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import random
import sys
import time
from dataclasses import dataclass
from typing import Iterator

from ._core import ContextFullError
from .engine import Engine, Output, add_tree_args, tree_kwargs
from .template import ChatTemplate, TemplateError

log = logging.getLogger("pyeagle.chat")

HELP = """commands: /help   this text
          /reset  forget the conversation (history and KV cache)
          /stats  totals of this session: turns, tokens, mean tau, tok/s
          /exit   quit (also Ctrl-D)
Ctrl-C stops a reply (it is dropped from the history); at the prompt it quits."""


@dataclass
class Totals:
    turns: int = 0
    tokens: int = 0
    passes: int = 0        # target passes after the prefills: tau = (tokens - turns) / passes
    t_decode: float = 0.0  # seconds, prefills excluded (as Stats.tokens_per_s)

    def add(self, out: Output) -> None:
        s = out.stats
        self.turns, self.tokens, self.passes = self.turns + 1, self.tokens + s.n_tokens, self.passes + s.n_passes
        self.t_decode += s.t_total - s.t_prefill

    def __str__(self) -> str:
        tau = (self.tokens - self.turns) / self.passes if self.passes else 0.0
        tps = self.tokens / self.t_decode if self.t_decode > 0 else 0.0
        return f"{self.turns} turns, {self.tokens} tokens, mean tau {tau:.2f}, {tps:.1f} tok/s"


class ChatSession:
    """A conversation held in one Engine's KV cache: its messages, and the tokens of its last turn.

    `_kv_tokens` are the last turn's prompt and reply tokens as the model saw them, `_kv_text` their
    text; a new prompt whose text extends `_kv_text` starts with `_kv_tokens`, so the engine's prefix
    reuse covers the whole previous turn (its KV holds all of them but the last). Empty: unknown.
    """

    def __init__(self, engine: Engine, template: ChatTemplate, system: str | None = None, n_predict: int = 512,
                 temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, seed: int = 0, draft: bool = True):
        self.engine, self.template, self.system, self.n_predict = engine, template, system, n_predict
        self.sampling = dict(temperature=temperature, top_p=top_p, top_k=top_k, draft=draft)
        self.seed = seed
        self.totals = Totals()
        self.last: Output | None = None
        self.ttft = 0.0  # seconds from send to the first text of the last reply (render, tokenize, prefill)
        # fail here, not on the first turn, if the template cannot render this kind of conversation
        probe = self._system() + [{"role": "user", "content": "pyeagle-probe"}]
        if "pyeagle-probe" not in template.render(probe):
            raise TemplateError("chat template: the rendered conversation does not contain the user's message")
        self.reset()

    def _system(self) -> list[dict]:
        return [{"role": "system", "content": self.system}] if self.system else []

    def reset(self) -> None:
        self.messages: list[dict] = self._system()
        self._kv_text, self._kv_tokens = "", []
        self.engine.reset()

    def _tokens(self, messages: list[dict]) -> tuple[list[int], str]:
        text = self.template.render(messages)
        if self._kv_tokens and text.startswith(self._kv_text):
            return self._kv_tokens + self.engine.tokenize(text[len(self._kv_text):], add_special=False), text
        return self.engine.tokenize(text), text

    def _fit(self, user: dict) -> tuple[list[int], str]:
        """Prompt tokens of history + user, after dropping the oldest exchanges that do not fit n_ctx."""
        n_ctx, n_sys, n_dropped = self.engine.target.n_ctx, len(self._system()), 0
        messages = self.messages
        ids, text = self._tokens(messages + [user])
        while len(ids) + self.n_predict > n_ctx and len(messages) > n_sys:
            messages = messages[:n_sys] + messages[n_sys + 2:]  # after the system prompt: user, assistant, ...
            n_dropped += 1
            ids, text = self._tokens(messages + [user])
        if len(ids) >= n_ctx:  # the history stays as it was
            raise ContextFullError(f"chat: message too long: the prompt is {len(ids)} tokens, the context "
                                   f"{n_ctx} (-c); message skipped")
        if n_dropped:
            log.warning("chat: context full: dropped the %d oldest exchange(s) (prompt %d + n_predict %d tokens, "
                        "n_ctx %d)", n_dropped, len(ids), self.n_predict, n_ctx)
        self.messages = messages
        return ids, text

    def stream(self, message: str) -> Iterator[str]:
        """Yields the reply's text as it is generated; then `last` holds its Output and `ttft` its latency."""
        t0 = time.perf_counter()
        user = {"role": "user", "content": message}
        ids, text = self._fit(user)
        n_sent, self.ttft = 0, 0.0
        for piece in self.engine.stream(ids, max_tokens=self.n_predict, seed=self.seed + self.totals.turns,
                                        **self.sampling):
            self.ttft = self.ttft or time.perf_counter() - t0
            n_sent += len(piece)
            yield piece
        out = self.engine.last
        if out.text[n_sent:]:  # the decoder's final flush (a cut UTF-8 sequence) is not streamed
            yield out.text[n_sent:]
        self.ttft = self.ttft or time.perf_counter() - t0
        self.messages += [user, {"role": "assistant", "content": out.text}]
        # the reply's tokens as generated; a final end-of-generation token (never in the KV: the last
        # token is only decoded by the next call) is left to the template, which closes the turn its way
        reply = out.tokens[:-1] if out.tokens and self.engine.target.is_eog(out.tokens[-1]) else out.tokens
        self._kv_text, self._kv_tokens = text + out.text, ids + reply
        self.totals.add(out)
        self.last = out

    def send(self, message: str) -> Output:
        for _ in self.stream(message):
            pass
        assert self.last is not None
        return self.last


def stats_line(out: Output, ttft: float) -> str:
    s = out.stats
    return (f"[{s.n_tokens} tokens, {s.tokens_per_s:.1f} tok/s, tau {s.tau:.2f}, ttft {1000 * ttft:.0f} ms, "
            f"prompt {s.n_prompt} tokens, {s.n_reused} reused]")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m pyeagle.chat", description=__doc__, allow_abbrev=False,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    a = ap.add_argument
    a("-m", "--model", help="target GGUF (default: the embedded SmolLM2-135M-Instruct)")
    a("-md", "--model-draft", help="EAGLE head GGUF (default: the head shipped for the default model, if any)")
    a("--no-draft", action="store_true", help="plain decoding (no head is loaded)")
    a("-c", "--ctx-size", type=int, default=4096, help="context size in tokens (default 4096)")
    a("-t", "--threads", type=int, default=0, help="CPU threads (default 0: the engine chooses)")
    a("-ngl", "--n-gpu-layers", type=int, default=0, help="layers offloaded to the GPU (default 0)")
    a("-n", "--n-predict", type=int, default=512, help="max new tokens per reply (default 512)")
    a("-sys", "--system-prompt", help="system message that starts the conversation")
    a("--chat-template", help="jinja template text or a file with it (default: the model's, else ChatML)")
    a("--temp", type=float, default=0.0, help="temperature (default 0: greedy, lossless w.r.t. the target)")
    a("--top-p", type=float, default=1.0, help="nucleus sampling (default 1.0: off)")
    a("--top-k", type=int, default=0, help="top-k sampling (default 0: off)")
    a("--seed", type=int, default=-1, help="sampling seed of the first reply, +1 per reply (default -1: random)")
    add_tree_args(ap)
    return ap.parse_args(argv)


def command(line: str, session: ChatSession, out) -> bool:
    """Runs a /command; returns False for /exit."""
    name = line.split()[0]
    if name in ("/exit", "/quit"):
        return False
    if name == "/help":
        print(HELP, file=out)
    elif name == "/reset":
        session.reset()
        print("[conversation cleared]", file=out)
    elif name == "/stats":
        print(f"[{session.totals}]", file=out)
    else:
        print(f"unknown command {name} (/help lists them)", file=out)
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    for f in (sys.stdin, sys.stdout):  # a model may emit any text, a user may type any bytes
        if hasattr(f, "reconfigure"):
            f.reconfigure(errors="replace")
    draft = None if args.no_draft else (args.model_draft or "default")
    try:
        engine = Engine(args.model, draft, n_ctx=args.ctx_size, n_threads=args.threads,
                        n_gpu_layers=args.n_gpu_layers, **tree_kwargs(args))
    except (OSError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    seed = args.seed if args.seed >= 0 else random.randrange(1 << 32)
    try:
        template = ChatTemplate.from_target(engine.target, args.chat_template)
        session = ChatSession(engine, template, args.system_prompt, args.n_predict, args.temp, args.top_p,
                              args.top_k, seed)
    except TemplateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # --chat-template names a file that cannot be read
        print(f"error: --chat-template: {e}", file=sys.stderr)
        return 1

    interactive = sys.stdin.isatty()
    info = sys.stdout if interactive else sys.stderr  # stdout carries only replies when scripted
    if interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401 - line editing and history for input()
        draft_name = engine.draft_path or "none (plain decoding)"
        print(f"pyeagle chat: {engine.target_path}, draft: {draft_name}, n_ctx {engine.target.n_ctx}", file=info)
    # the draft policy measures this machine's verify costs before its first draft: now, not in the
    # first reply's time to first token
    try:
        warm = engine.warm_up()
    except KeyboardInterrupt:
        return 130
    if interactive:
        measured = f"(verify costs measured in {warm:.1f} s)\n" if warm else ""
        print(f"{measured}/help for commands, Ctrl-C stops a reply, Ctrl-D exits", file=info)
    while True:
        try:
            line = input("> ") if interactive else sys.stdin.readline()
        except EOFError:
            print(file=info)
            return 0
        except KeyboardInterrupt:
            print(file=info)
            return 130
        if not interactive and not line:
            return 0
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            if not command(line, session, info):
                return 0
            continue
        turns = session.totals.turns
        try:
            with contextlib.closing(session.stream(line)) as pieces:
                for piece in pieces:
                    sys.stdout.write(piece)
                    sys.stdout.flush()
            print(flush=True)
            out = session.last
            if out.stop_reason == "context_full":
                print(f"[context full: the reply stops at {out.stats.n_tokens} tokens]", file=sys.stderr)
            print(stats_line(out, session.ttft), file=info, flush=True)
        except KeyboardInterrupt:
            print()
            done = session.totals.turns > turns  # Ctrl-C as the reply ended (or during its stats): kept
            print("[interrupted: the reply was complete and is kept]" if done else
                  "[interrupted: the reply is dropped]", file=info)
            continue
        except ContextFullError as e:
            print(f"error: {e}", file=sys.stderr)
            if not interactive:
                print()  # one reply line per message, even an empty one
            continue
        except TemplateError as e:
            print(f"\nerror: {e}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
