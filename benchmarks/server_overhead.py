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


def timed(chunks, text_of) -> tuple[float, float, int, str]:
    """(seconds to the first text, seconds from then to the end, chunks with text, the text)."""
    t0 = time.perf_counter()
    first = None
    parts = []
    for ch in chunks:
        piece = text_of(ch)
        if piece:
            if first is None:
                first = time.perf_counter()
            parts.append(piece)
    end = time.perf_counter()
    first = first or end
    return first - t0, end - first, len(parts), "".join(parts)


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
    args = ap.parse_args()

    port = free_port()
    cmd = [sys.executable, "-m", "pyeagle.server", "--port", str(port), "-t", str(args.threads), "--log-level", "warning"]
    srv = subprocess.Popen(cmd, cwd=tempfile.gettempdir(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
        http = httpx.Client()  # one connection, kept alive, as the openai client keeps its own
        eng = Engine(n_threads=args.threads)  # the embedded default and its head, as the server serves
        prompts = load_prompts(mtbench_file())[: args.limit]
        # one warm-up each (the verify-cost calibration, first allocations), not measured
        warm = [{"role": "user", "content": "Hello"}]
        list(eng.create_chat_completion(warm, max_tokens=8, temperature=0, stream=True))
        list(client.chat.completions.create(model="x", messages=warm, max_tokens=8, temperature=0, stream=True))

        rows, ttft_r, tps_r, same = [], [], [], 0
        for p in prompts:
            msgs = [{"role": "user", "content": p.question}]
            a = timed(eng.create_chat_completion(msgs, max_tokens=args.n, temperature=0, stream=True),
                      lambda c: c["choices"][0]["delta"].get("content") if c["choices"] else None)
            if args.client == "openai":
                b = timed(client.chat.completions.create(model="x", messages=msgs, max_tokens=args.n, temperature=0,
                                                         stream=True),
                          lambda c: c.choices[0].delta.content if c.choices else None)
            else:
                b = timed(raw_stream(http, url, msgs, args.n), lambda c: c["choices"][0]["delta"].get("content")
                          if c["choices"] else None)
            n_a, n_b = len(eng.tokenize(a[3], add_special=False)), len(eng.tokenize(b[3], add_special=False))
            tps_a, tps_b = n_a / max(a[1], 1e-9), n_b / max(b[1], 1e-9)
            same += a[3] == b[3]
            ttft_r.append(b[0] / a[0])
            tps_r.append(tps_b / tps_a)
            rows.append([p.id, p.category, f"{a[0] * 1000:.0f}", f"{b[0] * 1000:.0f}", f"{b[0] / a[0]:.2f}",
                         f"{tps_a:.1f}", f"{tps_b:.1f}", f"{tps_b / tps_a:.2f}", "yes" if a[3] == b[3] else "no"])
    finally:
        srv.terminate()
        srv.wait(10)

    m = machine()
    print(f"# pyeagle server overhead\n\n- command: `python benchmarks/server_overhead.py --limit {args.limit} -n {args.n} "
          f"-t {args.threads} --client {args.client}`\n- machine: {m['cpu']}, {m['cores']} cores; default model and head, greedy, streamed\n")
    print(table(["prompt", "category", "API ttft ms", "server ttft ms", "ttft ratio", "API tok/s", "server tok/s",
                 "tok/s ratio", "same text"], rows))
    print(f"\nGeometric mean over {len(rows)} prompts: time to first token server/API {gmean(ttft_r):.3f}, "
          f"tokens/s server/API {gmean(tps_r):.3f}; same text on {same}/{len(rows)}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
