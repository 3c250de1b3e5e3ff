"""Where the server's overhead goes: the engine's own decode tokens/s (the `pyeagle` field of each
response) through five paths, each against the Python API streamed, per prompt, then the geometric
mean. The arms take turns going first.

    api_stream    Engine.create_chat_completion(stream=True) in this process (the reference)
    api_whole     the same, not streamed
    server_whole  python -m pyeagle.server, not streamed (httpx)
    server_raw    the server, streamed, read by httpx with json.loads per event
    server_openai the server, streamed, read by the official openai client

    cd /tmp && python /path/to/pyeagle/benchmarks/server_decode_arms.py [--limit 16] [-n 128] [-t 2] [-- SERVER ARGS]
"""
from __future__ import annotations

import argparse
import json
import sys

import httpx
import openai

from pyeagle import Engine
from pyeagle.bench import load_prompts, mtbench_file

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from server_overhead import gmean, start_server, wait_up  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("server_args", nargs="*", help="extra arguments for the server (after --)")
    args = ap.parse_args()
    srv, url = start_server(args.threads, args.server_args)
    try:
        wait_up(url)
        eng = Engine(n_threads=args.threads)
        http = httpx.Client()
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
        kw = dict(max_tokens=args.n, temperature=0)

        def body(m, stream):
            return {"model": "x", "messages": m, "stream": stream, **kw}

        def api_stream(m):
            return [c for c in eng.create_chat_completion(m, stream=True, **kw) if c.get("pyeagle")][-1]["pyeagle"]

        def api_whole(m):
            return eng.create_chat_completion(m, **kw)["pyeagle"]

        def server_whole(m):
            return http.post(url + "/v1/chat/completions", json=body(m, False), timeout=600).json()["pyeagle"]

        def server_raw(m):
            ext = None
            with http.stream("POST", url + "/v1/chat/completions", json=body(m, True), timeout=600) as r:
                for line in r.iter_lines():
                    if line.startswith("data: {"):
                        ext = json.loads(line[6:]).get("pyeagle") or ext
            return ext

        def server_openai(m):
            ext = None
            for c in client.chat.completions.create(model="x", messages=m, stream=True, **kw):
                ext = (c.model_extra or {}).get("pyeagle") or ext
            return ext

        arms = [api_stream, api_whole, server_whole, server_raw, server_openai]
        for arm in arms:  # warm-up: the verify-cost calibration, first allocations
            arm([{"role": "user", "content": "Hello"}])
        ratios = [[] for _ in arms]
        order = list(range(len(arms)))
        for p in load_prompts(mtbench_file())[: args.limit]:
            m = [{"role": "user", "content": p.question}]
            tps = [0.0] * len(arms)
            for i in order:
                tps[i] = arms[i](m)["tokens_per_s"]
            order = order[1:] + order[:1]
            for i in range(len(arms)):
                ratios[i].append(tps[i] / tps[0])
    finally:
        srv.terminate()
        srv.wait(10)
    print(f"engine decode tokens/s against api_stream, geometric mean over {len(ratios[0])} prompts "
          f"(-n {args.n} -t {args.threads}{' ' + ' '.join(args.server_args) if args.server_args else ''}):")
    for arm, r in zip(arms, ratios):
        print(f"  {arm.__name__:14s} {gmean(r):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
