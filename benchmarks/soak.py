"""Long sessions: hundreds of chat turns through the Python API and through `python -m pyeagle.chat`
in a pseudo-terminal, with context overflow, /reset, Ctrl-C and stop strings, recording RSS.

    cd docs && python ../benchmarks/soak.py                 # 220 API turns + 60 CLI turns, embedded default
    python benchmarks/soak.py --turns 40 --cli-turns 12 -m T.gguf -md H.gguf -c 256 -n 24 --exact   # CI size

The API session is a `pyeagle.chat.ChatSession` (the CLI's own session class) on one Engine with a
small context (-c), so the oldest exchanges are dropped again and again. Turn i (from 0):
  i % 20 == 19  /reset (session.reset(): history and KV cleared)
  i % 7 == 3    interrupted: the reply's stream is closed after its first pieces, as Ctrl-C does in the CLI
  i % 5 == 1    a side request through Engine.create_chat_completion with stop strings (the reply must not
                contain them), on the same engine, between the session's turns
  i % 10 == 5   checked: the session's reply against a fresh engine's for the same prompt tokens (greedy)
The CLI session gets its messages, /reset every 10 turns and Ctrl-C (a real SIGINT through the pty) every
7 turns; its RSS is read from /proc/<pid>/status.

The bars, each printed with its figure (exit status 1 if one fails):
  - after warm-up (the first tenth of the turns, at least 30 but at most half), RSS grows by no more than 5%;
  - every checked reply equals the fresh engine's; with --exact (f32 weights and KV, one thread: exact
    kernels) token for token; otherwise a divergence must be a near-tie (the target's own logits at
    the first differing token within --tie-tol), as batched and single-token passes round differently;
  - no stop string in a reply that was cut at one; the CLI exits 0 on /exit.
Outputs in --out: soak-api.csv, soak-cli.csv, soak-rss.png (with matplotlib).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import logging
import os
import pty
import select
import signal
import sys
import time
from pathlib import Path

from pyeagle import ContextFullError, Engine
from pyeagle.bench import load_prompts, mtbench_file
from pyeagle.chat import ChatSession
from pyeagle.openai_api import ContextLengthError

SHORT = ["Go on.", "Say that again in one sentence.", "Why?", "Give me an example.", "Thanks! What else?"]
LONG = "Write a long story about a robot who learns to paint, with many details."  # for the interrupted turns
STOPS = [".", " the "]  # the default --stop


def rss_mib(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(x.split()[1]) for x in f if x.startswith("VmRSS:")) / 1024


def messages(n: int) -> list[str]:
    qs = [p.question for p in load_prompts(mtbench_file())]
    return [SHORT[i % len(SHORT)] if i % 3 == 2 else qs[(i * 7) % len(qs)] for i in range(n)]


def growth(rss: list[float], warm: int) -> tuple[float, float, float]:
    """(RSS at the end of warm-up, the most after it, growth as a fraction)."""
    base = rss[warm - 1]
    top = max(rss[warm:]) if len(rss) > warm else base
    return base, top, top / base - 1


class Dropped(logging.Handler):
    """Counts the chat's 'context full: dropped ...' notices."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.n = 0

    def emit(self, record):
        self.n += "dropped" in record.getMessage()


def first_divergence(eng: Engine, prompt: list[int], a: list[int], b: list[int]) -> tuple[int, float] | None:
    """Where two greedy continuations of `prompt` first differ, and the target's logit gap there
    between the two tokens (small: a near-tie); None when one is a prefix of the other."""
    k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    if k is None:
        return None
    t = eng.target
    t.truncate(0)
    t.prefill(prompt + a[:k])
    lg = t.last_logits()
    return k, abs(float(lg[a[k]]) - float(lg[b[k]]))


def api_soak(args, log) -> tuple[list[dict], dict]:
    kw = dict(n_ctx=args.ctx_size, n_threads=args.threads)
    if args.exact:
        kw.update(flash_attn=0, kv_f32=True)
    draft = "default" if args.model_draft is None and not args.model else args.model_draft
    eng = Engine(args.model, draft=draft, **kw)
    fresh = Engine(args.model, draft=draft, **kw)  # the reference: reset before every check
    session = ChatSession(eng, eng.chat_template, n_predict=args.n_predict)
    dropped = Dropped()
    logging.getLogger("pyeagle.chat").addHandler(dropped)
    rows, checks, stops = [], [], 0
    t0 = time.monotonic()
    for i, msg in enumerate(messages(args.turns)):
        kind = "turn"
        if i % 20 == 19:
            session.reset()
            kind = "reset"
        elif i % 7 == 3:
            with contextlib.closing(session.stream(LONG)) as pieces:
                for j, _ in enumerate(pieces):
                    if j == 2:
                        break
            kind = "interrupted"
        elif i % 5 == 1:
            user = {"role": "user", "content": msg}
            r, kind = None, "skipped"
            # with the session's history, else (too long for the context) the message alone, else skipped
            for conversation in (session.messages + [user], [user]):
                with contextlib.suppress(ContextLengthError):
                    r = eng.create_chat_completion(conversation, max_tokens=args.n_predict, temperature=0,
                                                   stop=args.stop)
                    break
            if r is not None:
                text = r["choices"][0]["message"]["content"]
                if any(s in text for s in args.stop):
                    raise SystemExit(f"turn {i}: a stop string in the reply: {text!r}")
                stops += r["pyeagle"]["stop_reason"] == "stop_string"
                kind = "stop-strings"
        else:
            try:
                out = session.send(msg)
            except ContextFullError:  # the message alone does not fit: skipped, as the chat does
                out, kind = None, "skipped"
            if out is not None and i % 10 == 5:
                reply = out.tokens[:-1] if out.tokens and eng.target.is_eog(out.tokens[-1]) else out.tokens
                prompt = session._kv_tokens[: len(session._kv_tokens) - len(reply)]
                fresh.reset()
                ref = fresh.generate(prompt, max_tokens=args.n_predict).tokens
                div = first_divergence(fresh, prompt, ref, list(out.tokens)) if ref != list(out.tokens) else None
                checks.append({"turn": i, "same": ref == list(out.tokens), "divergence": div,
                               "prompt": len(prompt), "reused": out.stats.n_reused})
                kind = "checked"
        rows.append({"turn": i, "seconds": round(time.monotonic() - t0, 2), "rss_mib": round(rss_mib(), 1),
                     "kind": kind, "history": len(session.messages)})
        if i % 20 == 19:
            log(f"api: {i + 1}/{args.turns} turns, RSS {rows[-1]['rss_mib']:.0f} MiB, {dropped.n} drops")
    return rows, {"checks": checks, "dropped": dropped.n, "stops": stops}


class Pty:
    """A child process on a pseudo-terminal: what a user's terminal would see and send."""

    def __init__(self, argv: list[str], cwd: str):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.chdir(cwd)
            os.execvp(argv[0], argv)
        self.buf = b""

    def read_until(self, pattern: bytes | tuple[bytes, ...], timeout: float) -> bytes:
        """The output up to and including the first of the patterns."""
        patterns = (pattern,) if isinstance(pattern, bytes) else pattern
        end = time.monotonic() + timeout
        while not any(p in self.buf for p in patterns):
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {patterns!r} after {timeout} s; last output: {self.buf[-500:]!r}")
            self.read_more(left)
        i = min(self.buf.index(p) + len(p) for p in patterns if p in self.buf)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_more(self, timeout: float) -> None:
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            raise TimeoutError(f"no output after {timeout:.0f} s; last output: {self.buf[-500:]!r}")
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            chunk = b""
        if not chunk:
            raise EOFError(f"the chat exited; last output: {self.buf[-500:]!r}")
        self.buf += chunk

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def wait(self, timeout: float) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with contextlib.suppress(OSError):
                os.read(self.fd, 65536)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.05)
        os.kill(self.pid, signal.SIGKILL)
        raise TimeoutError("the chat did not exit")


def cli_soak(args, log) -> tuple[list[dict], dict]:
    argv = [sys.executable, "-m", "pyeagle.chat", "-c", str(args.ctx_size), "-n", str(args.n_predict), "-t",
            str(args.threads), "--seed", "0"]
    if args.model:
        argv += ["-m", str(Path(args.model).resolve())]
    if args.model_draft:
        argv += ["-md", str(Path(args.model_draft).resolve())]
    p = Pty(argv, cwd="/tmp")  # not the repository root: `-m pyeagle.chat` would find the uncompiled tree
    # the line before each prompt tells how the turn ended (a reply's text can hold "> " itself)
    end_reply, end_reset = b" reused]\r\n> ", b"[conversation cleared]\r\n> "
    end_ctrl_c = (b"dropped]\r\n> ", b"kept]\r\n> ", end_reply)
    end_any = (end_reply, b"message skipped\r\n> ")
    p.read_until(b"Ctrl-D exits\r\n> ", 120)
    rows, interrupted, late, replies, dropped = [], 0, 0, 0, 0  # (a message too long for the context is skipped, as in the API)
    t0 = time.monotonic()
    for i, msg in enumerate(messages(args.cli_turns)):
        kind = "turn"
        if i % 10 == 9:
            p.send("/reset\r")
            p.read_until(end_reset, 60)
            kind = "reset"
        else:
            if i % 7 == 3:
                p.send(LONG + "\r")
                p.read_until(LONG.encode()[-8:] + b"\r\n", 60)  # the terminal's echo of the message
                # the reply's first bytes: the chat is past input() and generating (a Ctrl-C at the
                # prompt would quit it, status 130)
                while not p.buf:
                    p.read_more(300)
                if b" tok/s, tau " in p.buf:  # the whole reply came at once: too late for a Ctrl-C
                    p.read_until(end_reply, 120)
                    replies += 1
                else:
                    p.send("\x03")  # Ctrl-C: the terminal sends SIGINT to the chat
                    out = p.read_until(end_ctrl_c, 120)
                    interrupted += b"[interrupted: the reply is dropped]" in out
                    late += b"[interrupted: the reply was complete" in out or b" tok/s, tau " in out
                    kind = "ctrl-c"
            else:
                p.send(msg + "\r")
                out = p.read_until(end_any, 300)
                dropped += b"context full: dropped" in out
                if b" tok/s, tau " in out:
                    replies += 1
                elif b"message too long" in out:
                    kind = "skipped"
                else:
                    raise RuntimeError(f"turn {i}: neither a reply nor a skipped message: {out[-500:]!r}")
        if i % 7 == 3 and kind != "ctrl-c":
            kind = "reply (too fast to interrupt)"
        rows.append({"turn": i, "seconds": round(time.monotonic() - t0, 2), "rss_mib": round(rss_mib(p.pid), 1),
                     "kind": kind})
        if i % 20 == 19:
            log(f"cli: {i + 1}/{args.cli_turns} turns, RSS {rows[-1]['rss_mib']:.0f} MiB")
    p.send("/exit\r")
    code = p.wait(60)
    return rows, {"exit": code, "interrupted": interrupted, "late": late, "dropped": dropped,
                  "ctrl_c": sum(r["kind"] == "ctrl-c" for r in rows), "replies": replies}


def plot(api: list[dict], cli: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for rows, name in ((api, "Python API (ChatSession)"), (cli, "python -m pyeagle.chat in a pty")):
        if rows:
            ax.plot([r["turn"] for r in rows], [r["rss_mib"] for r in rows], label=name)
    ax.set_xlabel("turn")
    ax.set_ylabel("RSS, MiB")
    ax.set_title("RSS over a long session")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", help="target GGUF (default: the embedded default)")
    ap.add_argument("-md", "--model-draft", help="head GGUF (default: the shipped head of the default model)")
    ap.add_argument("--turns", type=int, default=220, help="API turns (default 220)")
    ap.add_argument("--cli-turns", type=int, default=60, help="CLI turns (default 60; 0: none)")
    ap.add_argument("-c", "--ctx-size", type=int, default=768, help="context: small, so that it overflows (default 768)")
    ap.add_argument("-n", "--n-predict", type=int, default=96)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--exact", action="store_true", help="f32 KV, no flash attention: checked replies must be identical")
    ap.add_argument("--tie-tol", type=float, default=0.5, help="largest logit gap counted as a near-tie (default 0.5)")
    ap.add_argument("--stop", action="append", help=f"a stop string of the side requests (default: {STOPS})")
    ap.add_argument("--out", default=".", help="directory for the CSV files and the plot")
    args = ap.parse_args(argv)
    args.stop = args.stop or STOPS
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(m: str) -> None:
        print(f"soak: {m}", file=sys.stderr, flush=True)

    def save(rows: list[dict], name: str) -> None:
        if rows:
            with open(out / f"soak-{name}.csv", "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)

    failures = []
    api, facts = api_soak(args, log)
    save(api, "api")  # kept if the CLI run fails
    cli, cfacts = (cli_soak(args, log) if args.cli_turns else ([], {}))
    save(cli, "cli")
    has_plot = plot(api, cli, out / "soak-rss.png")

    print(f"# pyeagle soak\n\n- command: `python benchmarks/soak.py {' '.join(argv or sys.argv[1:])}`\n")
    print("| session | turns | seconds | RSS after warm-up MiB | most after MiB | growth | bar (<= 5%) |")
    print("|---|---|---|---|---|---|---|")
    for rows, name in ((api, "Python API"), (cli, "CLI in a pty")):
        if not rows:
            continue
        warm = min(max(30, len(rows) // 10), len(rows) // 2)  # allocator pools and caches fill in the first turns
        base, top, g = growth([r["rss_mib"] for r in rows], max(warm, 1))
        ok = g <= 0.05
        failures += [] if ok else [f"{name}: RSS grew {100 * g:.1f}%"]
        print(f"| {name} | {len(rows)} | {rows[-1]['seconds']:.0f} | {base:.0f} | {top:.0f} | {100 * g:+.1f}% | "
              f"{'met' if ok else 'NOT met'} |")
    if not facts["dropped"]:
        failures.append("the API session never overflowed its context: use a smaller -c")
    checks = facts["checks"]
    same = sum(c["same"] for c in checks)
    gaps = [c["divergence"][1] for c in checks if c["divergence"]]
    # a reply that differs but has no differing token is a prefix of the other: not a near-tie
    ties = all(g <= args.tie_tol for g in gaps) and all(c["same"] or c["divergence"] for c in checks)
    print(f"\n- API: {len(api)} turns, {sum(r['kind'] == 'reset' for r in api)} resets, "
          f"{sum(r['kind'] == 'interrupted' for r in api)} interrupted replies, "
          f"{sum(r['kind'] == 'stop-strings' for r in api)} stop-string requests ({facts['stops']} cut at one), "
          f"{facts['dropped']} context overflows (oldest exchanges dropped).")
    print(f"- Checked replies equal to a fresh engine's: {same}/{len(checks)}"
          + (f"; the others diverge at near-ties (logit gaps {', '.join(f'{g:.3f}' for g in gaps)})" if gaps else "")
          + ".")
    if args.exact and same != len(checks):
        failures.append(f"{len(checks) - same} checked replies differ from a fresh engine's (exact kernels)")
    elif not ties:
        failures.append(f"a checked reply diverges beyond a near-tie (gaps {gaps})")
    if cli:
        print(f"- CLI: {len(cli)} turns, {cfacts['replies']} replies, {cfacts['ctrl_c']} Ctrl-C "
              f"({cfacts['interrupted']} reported the reply dropped, {cfacts['late']} came as the reply ended: "
              f"kept), {cfacts['dropped']} context overflows, exit status {cfacts['exit']} on /exit.")
        if cfacts["exit"] != 0:
            failures.append(f"the CLI exited with {cfacts['exit']}")
        if cfacts["interrupted"] + cfacts["late"] != cfacts["ctrl_c"] or not cfacts["interrupted"]:
            failures.append(f"{cfacts['ctrl_c']} Ctrl-C sent, {cfacts['interrupted']} reported as a dropped reply, "
                            f"{cfacts['late']} as a kept one")
    if has_plot:
        print(f"- RSS over time: {out / 'soak-rss.png'}")
    for f in failures:
        print(f"\nFAILED: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
