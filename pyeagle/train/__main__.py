"""python -m pyeagle.train {prompts,data,taps,fit,eval,tree,export}: train an EAGLE head for a GGUF target.

  prompts Magpie-style prompts: the target writes user requests itself (JSONL for `data --prompts`)
  data    self-distillation: the target answers the built-in prompt set; features are recorded
  taps    adds EAGLE-3 inputs (three target layers) to that data, one batched pass per sequence
  fit     trains the head on that data (PyTorch, CPU is enough for small targets); resumable
  eval    held-out agreement of a trained head: top-1/top-4 and how long greedy chains stay right
  tree    the tau of a head's draft trees on recorded answers (fixed text: no kernel noise between
          heads or tree rules); --fit-powers calibrates the tree's scores by depth on held-out data
  export  writes the head in the published EAGLE layout (config.json + model.safetensors) and
          converts it to GGUF with convert/eagle_to_gguf.py's code

Every stage is resumable: rerun the same command after Ctrl-C or --minutes and it continues.
See docs/TRAINING.md for the recipe and the numbers of the shipped head.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pyeagle.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("prompts", help="the target writes user requests (Magpie); JSONL for `data --prompts`")
    pr.add_argument("--out", required=True, type=Path, help="JSONL file; a stopped run continues it")
    pr.add_argument("-m", "--model", help="target GGUF (default: the embedded default target)")
    pr.add_argument("-n", "--n-prompts", type=int, default=2000)
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--temperature", type=float, default=1.0)
    pr.add_argument("--top-p", type=float, default=0.95)
    pr.add_argument("--max-len", type=int, default=160, help="tokens; a request not ended by then is dropped")
    pr.add_argument("--follow-ups", type=float, default=0.5, help="share of requests given a built-in second turn")
    pr.add_argument("--slots", type=int, default=48, help="requests sampled at once, in one batch")
    pr.add_argument("--openings", type=float, default=0.0,
                    help="share of requests begun from a built-in opening (\"Write a\", \"Imagine you are\", ...) "
                         "that the target continues (default 0: the target begins every request itself)")
    pr.add_argument("-t", "--threads", type=int, default=0)
    pr.add_argument("--minutes", type=float, default=0, help="stop after this many minutes (0: run to the end)")
    pr.add_argument("--exclude", type=Path, nargs="*",
                    help="JSONL prompt files no request may share an 8-word run with (default: MT-bench's "
                         "questions and benchmarks/prompts/coding.jsonl)")

    d = sub.add_parser("data", help="generate self-distillation data")
    d.add_argument("--out", required=True, type=Path)
    d.add_argument("-m", "--model", help="target GGUF (default: the embedded default target)")
    d.add_argument("--n-prompts", type=int, default=4000)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--chunk", type=int, default=40, help="prompts per chunk file")
    d.add_argument("--max-new", type=int, default=256)
    d.add_argument("--shard", default="0/1", help="i/n: this process takes chunks c with c %% n == i")
    d.add_argument("-t", "--threads", type=int, default=0, help="CPU threads (default 0: all)")
    d.add_argument("--minutes", type=float, default=0, help="stop after this many minutes (0: run to the end)")
    d.add_argument("--follow-ups", type=float, default=0.0,
                   help="share of conversations with a second user turn (answered with the first answer as context)")
    d.add_argument("--slots", type=int, default=16, help="conversations decoded at once, in one batch")
    d.add_argument("--taps", help="also record EAGLE-3 inputs of three layers, low,mid,high (n_layer: the last "
                                  "layer's output); 'default': 2, n_layer/2, n_layer")
    d.add_argument("--prompts", type=Path, help="JSONL conversations instead of the built-in prompt set: "
                                                "{\"turns\": [...]} or {\"prompt\": ...} a line (--seed and "
                                                "--follow-ups then do not apply)")
    d.add_argument("--prompt-set", choices=["templates", "varied"], default="templates",
                   help="built-in prompts: the first set's templates, or the varied set (docs/TRAINING.md)")

    tp = sub.add_parser("taps", help="add EAGLE-3 layer taps to self-distillation data")
    tp.add_argument("--data", required=True, type=Path, help="data directory made by `data`")
    tp.add_argument("--out", required=True, type=Path, help="new data directory (chunks with taps)")
    tp.add_argument("-m", "--model", help="target GGUF the data was made with")
    tp.add_argument("--layers", help="three layer ids, low,mid,high (default 2, n_layer/2, n_layer: the last layer's output)")
    tp.add_argument("--shard", default="0/1", help="i/n: this process takes every n-th chunk from the i-th")
    tp.add_argument("-t", "--threads", type=int, default=1)
    tp.add_argument("--minutes", type=float, default=0, help="stop after this many minutes (0: run to the end)")

    f = sub.add_parser("fit", help="train the head")
    f.add_argument("--data", required=True, type=Path, nargs="+",
                   help="data directory, or several (their chunks in the order given)")
    f.add_argument("--out", required=True, type=Path, help="run directory (checkpoints, log)")
    f.add_argument("-m", "--model", help="target GGUF the data was made with")
    f.add_argument("--draft-vocab", type=int, default=8192, help="reduced draft vocabulary (0: full)")
    f.add_argument("--epochs", type=float, default=4)
    f.add_argument("--lr", type=float, default=3e-4)
    f.add_argument("--seq", type=int, default=512)
    f.add_argument("--batch", type=int, default=4)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("-t", "--threads", type=int, default=0)
    f.add_argument("--minutes", type=float, default=0)
    f.add_argument("--unroll", type=int, default=1,
                   help="drafting steps in the loss (training-time test; 1: the plain EAGLE-1/2 loss)")
    f.add_argument("--init", type=Path,
                   help="start from this run's weights, or from an EAGLE-1/2 head GGUF (e.g. the shipped head)")
    f.add_argument("--bf16", action="store_true",
                   help="bfloat16 matrix products (about 2x faster where the CPU has AVX512-BF16 or AMX, about 20x slower where it has neither)")
    f.add_argument("--token-weight", type=float, default=0.1,
                   help="weight of the token loss against the feature loss (1); EAGLE-1/2 use 0.1")
    f.add_argument("--eagle3", action="store_true",
                   help="train an EAGLE-3 head (the data needs taps: `python -m pyeagle.train taps`)")
    f.add_argument("--ff", type=int, default=0,
                   help="FFN width of the head (0: the target's); with --init from a narrower head it is widened")
    f.add_argument("--layers", type=int, default=1,
                   help="decoder layers of an EAGLE-1/2 head; with --init from a head of fewer, the new ones "
                        "start as the identity")
    f.add_argument("--copy-input", action="store_true",
                   help="EAGLE-1/2 head that also reads the one-token copy of its input token (the token that "
                        "followed its latest earlier occurrence); the copy's weights start at zero")

    v = sub.add_parser("eval", help="held-out agreement of a trained head (top-1, chains of drafts)")
    v.add_argument("--run", required=True, type=Path, help="run directory, or an EAGLE-1/2 head GGUF (data it never saw)")
    v.add_argument("--data", required=True, type=Path, nargs="+",
                   help="data directory, or several; give a run the --data it was fitted on for its held-out split")
    v.add_argument("-m", "--model", help="target GGUF")
    v.add_argument("--depth", type=int, default=4)
    v.add_argument("--all", action="store_true", help="every sequence of --data (data the run never saw)")
    v.add_argument("--calibrate", action="store_true",
                   help="also fit the head's logit temperature on this data; export applies it")
    v.add_argument("-t", "--threads", type=int, default=0)

    tr = sub.add_parser("tree", help="tau of a head's draft trees on recorded answers (fixed text)")
    tr.add_argument("--head", required=True, type=Path, help="head GGUF")
    tr.add_argument("--data", required=True, type=Path, nargs="+", help="data directories (`train data`)")
    tr.add_argument("-m", "--model", help="target GGUF (default: the embedded default target)")
    tr.add_argument("--sizes", default="8", help="tree sizes (n_tree), comma-separated")
    tr.add_argument("--depth", type=int, default=6)
    tr.add_argument("--topk", type=int, default=10)
    tr.add_argument("--max-answer", type=int, default=256, help="answer tokens per turn, at most")
    tr.add_argument("--limit", type=int, default=0, help="the first N sequences (0: all)")
    tr.add_argument("--powers", help="tree calibration a_d per depth, comma-separated, instead of the head's own "
                                     "(1: none)")
    tr.add_argument("--fit-powers", action="store_true",
                    help="search the tree calibration that maximises tau on --data (held-out data, never the "
                         "evaluation set), at the first --sizes")
    tr.add_argument("--write", type=Path, help="with --fit-powers: a copy of --head with the fitted calibration "
                                               "(may be --head itself)")
    tr.add_argument("--json", type=Path, help="per-answer results")
    tr.add_argument("-t", "--threads", type=int, default=0)

    e = sub.add_parser("export", help="export the trained head (EAGLE layout, then GGUF)")
    e.add_argument("--run", required=True, type=Path)
    e.add_argument("--checkpoint-dir", type=Path, help="where to write config.json + model.safetensors")
    e.add_argument("--gguf", type=Path, help="GGUF output")
    e.add_argument("-m", "--model", help="target GGUF")
    e.add_argument("--outtype", default="f16")
    args = ap.parse_args(argv)

    if args.cmd == "data":
        from .. import models
        from .data import generate
        model = args.model or str(models.default_target())
        i, n = (int(x) for x in args.shard.split("/"))
        taps = None
        if args.taps == "default":
            from .._core import Target
            from .data import default_taps
            taps = default_taps(Target(model, n_ctx=64).n_layer)
        elif args.taps:
            taps = [int(x) for x in args.taps.split(",")]
            if len(taps) != 3:
                ap.error("--taps takes three layer ids")
        left = generate(args.out, model, n_prompts=args.n_prompts, seed=args.seed, chunk=args.chunk,
                        max_new=args.max_new, shard=(i, n), n_threads=args.threads, minutes=args.minutes,
                        follow_ups=args.follow_ups, slots=args.slots, taps=taps, prompts=args.prompts,
                        prompt_set=args.prompt_set)
        print(f"shard {i}/{n}: {left} chunks left" if left else f"shard {i}/{n}: complete")
        return 0
    if args.cmd == "prompts":
        from .. import models
        from .magpie import evaluation_prompts, synthesize
        left = synthesize(args.out, args.model or str(models.default_target()), args.n_prompts, seed=args.seed,
                          temperature=args.temperature, top_p=args.top_p, max_len=args.max_len, slots=args.slots,
                          n_threads=args.threads, follow_ups=args.follow_ups, minutes=args.minutes,
                          exclude=evaluation_prompts(args.exclude), openings=args.openings)
        print(f"{left} prompts left" if left else f"complete: {args.out}")
        return 0
    if args.cmd == "taps":
        from .. import models
        from .data import add_taps
        layers = [int(x) for x in args.layers.split(",")] if args.layers else None
        if layers is not None and len(layers) != 3:
            ap.error("--layers takes three layer ids")
        i, n = (int(x) for x in args.shard.split("/"))
        left = add_taps(args.data, args.out, args.model or str(models.default_target()), layers,
                        n_threads=args.threads, minutes=args.minutes, shard=(i, n))
        print(f"{left} chunks left" if left else "complete")
        return 0
    if args.cmd == "tree":
        from .treetau import main_tree
        return main_tree(args, ap)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("pyeagle.train needs PyTorch: pip install 'pyeagle[train]'", file=sys.stderr)
        return 2
    from .. import models
    model = args.model or str(models.default_target())
    if args.cmd == "fit":
        from .fit import fit
        fit(args.data, args.out, model, draft_vocab=args.draft_vocab, epochs=args.epochs, lr=args.lr, seq=args.seq,
            batch=args.batch, seed=args.seed, n_threads=args.threads, minutes=args.minutes, unroll=args.unroll,
            init=args.init, bf16=args.bf16, token_weight=args.token_weight, ff=args.ff,
            eagle3=args.eagle3, layers=args.layers, copy_input=args.copy_input)
        return 0
    if args.cmd == "eval":
        import json

        from .fit import evaluate_run
        print(json.dumps(evaluate_run(args.run, args.data, model, depth=args.depth, n_threads=args.threads,
                                      all_seqs=args.all, calibrate_too=args.calibrate)))
        return 0
    from .fit import export
    export(args.run, model, args.checkpoint_dir or args.run / "eagle", args.gguf or args.run / "head.gguf",
           outtype=args.outtype)
    return 0


if __name__ == "__main__":
    sys.exit(main())
