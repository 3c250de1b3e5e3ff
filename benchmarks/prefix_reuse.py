"""Does plain greedy decoding give the same text when the prompt's KV is reused? The same engine
answers each MT-bench question twice (the second call reuses the prompt's KV and decodes only its
last token, alone), and a second engine answers it once; counts the questions whose first N tokens
agree. On quantized models a token decoded alone and one decoded inside the prompt's batch get
logits that differ in the last bits (ggml's single-token and batched kernels), so a near-tie can
flip: llama.cpp's server documents the same for `cache_prompt`.

    cd docs && python ../benchmarks/prefix_reuse.py [-n 48] [--limit 40]
"""
from __future__ import annotations

import argparse

from pyeagle import Engine
from pyeagle.bench import load_prompts, mtbench_file


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=48, help="tokens per answer (default 48)")
    ap.add_argument("--limit", type=int, default=40, help="first N questions (default 40)")
    args = ap.parse_args()
    twice, once = Engine(n_threads=2, draft=None), Engine(n_threads=2, draft=None)
    same_reused = same_fresh = 0
    prompts = load_prompts(mtbench_file())[: args.limit]
    for p in prompts:
        ids = twice.tokenize(twice.chat_template.render([{"role": "user", "content": p.question}]))
        first = twice.generate(ids, max_tokens=args.n, draft=False).tokens
        again = twice.generate(ids, max_tokens=args.n, draft=False).tokens  # the prompt's KV reused
        other = once.generate(ids, max_tokens=args.n, draft=False).tokens
        same_reused += first == again
        same_fresh += first == other
    print(f"{len(prompts)} questions, {args.n} tokens: the same text when the prompt's KV is reused "
          f"{same_reused}/{len(prompts)}; from a second engine that saw the same prompts once {same_fresh}/{len(prompts)}")


if __name__ == "__main__":
    main()
