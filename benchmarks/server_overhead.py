"""What the HTTP server costs: time to first token and tokens/s through `python -m pyeagle.server`
(the official openai client, streamed, on loopback) against the same requests through the Python
API (`Engine.create_chat_completion(stream=True)`) in this process.

Each prompt runs through both back to back (the API first, then the server; each engine keeps the
previous conversation in its KV, so both reuse the chat template's common prefix), greedy, same
max_tokens; ratios are per prompt, then their geometric mean. The server runs in its own
process with the same thread count; this process's engine is loaded after the server is up, and
the two never decode at the same time.

    cd /tmp && python /path/to/pyeagle/benchmarks/server_overhead.py [--limit 10] [-n 128] [-t 2]
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import socket
import subprocess
import sys
import tempfile
import time

import httpx
import openai

from pyeagle import Engine
from pyeagle.bench import load_prompts, machine, mtbench_file, table


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(threads: int, extra: list[str]) -> tuple[subprocess.Popen, str]:
    """python -m pyeagle.server (the embedded default) on a free loopback port: (process, base URL)."""
    port = free_port()
    cmd = [sys.executable, "-m", "pyeagle.server", "--port", str(port), "-t", str(threads), "--log-level", "warning",
           *extra]
    # not from the repository root: there `-m pyeagle.server` would import the uncompiled tree
    srv = subprocess.Popen(cmd, cwd=tempfile.gettempdir(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return srv, f"http://127.0.0.1:{port}"


def wait_up(url: str, seconds: float = 60) -> None:
    """Until the server answers /health (it loads the model first)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url}: the server did not come up in {seconds:.0f} s")


def timed(chunks, text_of) -> tuple[float, float, int, str, float]:
    """(seconds to the first text, seconds from then to the end, chunks with text, the text, the
    engine's own decode tokens/s from the last chunk's pyeagle field)."""
    t0 = time.perf_counter()
    first = None
    parts = []
    engine_tps = math.nan
    for ch in chunks:
        if ch.get("pyeagle"):
            engine_tps = ch["pyeagle"]["tokens_per_s"]
        piece = text_of(ch)
        if piece:
            if first is None:
                first = time.perf_counter()
            parts.append(piece)
    end = time.perf_counter()
    first = first or end
    return first - t0, end - first, len(parts), "".join(parts), engine_tps


def raw_stream(http: httpx.Client, url: str, msgs: list, n: int):
    body = {"model": "x", "messages": msgs, "max_tokens": n, "temperature": 0, "stream": True}
    with http.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                yield json.loads(line[6:])


def gmean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=10, help="MT-bench first turns (default 10)")
    ap.add_argument("-n", type=int, default=128, help="max_tokens per request (default 128)")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--client", choices=("openai", "raw"), default="openai",
                    help="openai: the official client (pydantic objects per chunk); raw: httpx reading the SSE "
                         "lines with json.loads, which separates the server's cost from the client's")
    ap.add_argument("--also", metavar="ARGS",
                    help="a second server with these extra arguments, in the same run, e.g. '--stream-interval 0'")
    args = ap.parse_args()

    arms = [("server", [])] + ([(f"server {args.also}", shlex.split(args.also))] if args.also else [])
    servers = []
    try:
        for _, extra in arms:
            servers.append(start_server(args.threads, extra))
        for _, url in servers:
            wait_up(url)
        eng = Engine(n_threads=args.threads)  # the embedded default and its head, as the server serves
        prompts = load_prompts(mtbench_file())[: args.limit]
        warm = [{"role": "user", "content": "Hello"}]

        def api(msgs, n):
            return eng.create_chat_completion(msgs, max_tokens=n, temperature=0, stream=True)

        def via(url):  # streams a request through one server with the chosen client
            client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
            http = httpx.Client()  # one connection, kept alive, as the openai client keeps its own
            if args.client == "openai":
                return lambda msgs, n: ({"choices": [{"delta": {"content": c.choices[0].delta.content}}]
                                         if c.choices else [], "pyeagle": (c.model_extra or {}).get("pyeagle")}
                                        for c in client.chat.completions.create(model="x", messages=msgs,
                                                                                max_tokens=n, temperature=0,
                                                                                stream=True))
            return lambda msgs, n: raw_stream(http, url, msgs, n)

        runners = [api] + [via(url) for _, url in servers]
        for run in runners:  # one warm-up each (the verify-cost calibration, first allocations), not measured
            list(run(warm, 8))

        text_of = lambda c: c["choices"][0]["delta"].get("content") if c["choices"] else None  # noqa: E731
        order = list(range(len(runners)))
        rows, ttft_r, tps_r, same = [], [[] for _ in arms], [[] for _ in arms], [0] * len(arms)
        eng_r = [[] for _ in arms]  # the engines' own decode tok/s, server / API
        for p in prompts:
            msgs = [{"role": "user", "content": p.question}]
            res = [None] * len(runners)
            for i in order:  # the arms take turns going first: no arm always follows another process's run
                res[i] = timed(runners[i](msgs, args.n), text_of)
            order = order[1:] + order[:1]
            n_tok = [len(eng.tokenize(r[3], add_special=False)) for r in res]
            tps = [n / max(r[1], 1e-9) for n, r in zip(n_tok, res)]
            row = [p.id, p.category, f"{res[0][0] * 1000:.0f}", f"{tps[0]:.1f}"]
            for k in range(len(arms)):
                b = res[k + 1]
                same[k] += b[3] == res[0][3]
                ttft_r[k].append(b[0] / res[0][0])
                tps_r[k].append(tps[k + 1] / tps[0])
                eng_r[k].append(b[4] / res[0][4])
                row += [f"{b[0] * 1000:.0f}", f"{b[0] / res[0][0]:.2f}", f"{tps[k + 1]:.1f}",
                        f"{tps[k + 1] / tps[0]:.2f}", "yes" if b[3] == res[0][3] else "no"]
            rows.append(row)
    finally:
        for srv, _ in servers:
            srv.terminate()
            srv.wait(10)

    m = machine()
    also = f" --also '{args.also}'" if args.also else ""
    print(f"# pyeagle server overhead\n\n- command: `python benchmarks/server_overhead.py --limit {args.limit} -n {args.n} "
          f"-t {args.threads} --client {args.client}{also}`\n- machine: {m['cpu']}, {m['cores']} cores; default model and "
          "head, greedy, streamed\n")
    head = ["prompt", "category", "API ttft ms", "API tok/s"]
    for name, _ in arms:
        head += [f"{name} ttft ms", "ttft ratio", f"{name} tok/s", "tok/s ratio", "same text"]
    print(table(head, rows))
    print()
    for k, (name, _) in enumerate(arms):
        print(f"- {name}: geometric mean over {len(rows)} prompts: time to first token server/API "
              f"{gmean(ttft_r[k]):.3f}, tokens/s server/API {gmean(tps_r[k]):.3f} (the engines' own decode tokens/s: "
              f"{gmean(eng_r[k]):.3f}); same text on {same[k]}/{len(rows)}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
