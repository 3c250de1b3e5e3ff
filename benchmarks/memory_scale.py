"""Memory at real scale, with no download: peak RSS of plain decoding vs EAGLE-3 on models shaped like
Llama-3.2-1B and Llama-3.1-8B, with random weights written on this machine.

Memory depends on shapes, not on what the weights learned, so random weights in the real layout
are enough to answer the question "what does the head cost in RAM?" at real scale. Nothing is
downloaded. The files are written once under --cache (default ~/.cache/pyeagle/synthetic), each
to a temporary name and then renamed, so an interrupted run never leaves a half-written file, and
later runs reuse them:

  - a Llama-3.2-1B-shaped target GGUF (llama, hidden 2048, 16 layers, 32/8 heads, FFN 8192,
    128256-token SentencePiece-style vocabulary, rope_theta 500000, llama3 RoPE scaling stored as
    llama.cpp's converter stores it (a rope_freqs.weight tensor), tied embeddings, Q8_0). The Q8_0
    blocks are written directly (random int8 quants, one f16 scale per tensor), not quantized from
    floats, so writing takes seconds.
  - an EAGLE-3 head for it in the published SafeAILab/SpecForge layout (config.json +
    model.safetensors, bf16, 32000-row draft vocabulary), converted with pyeagle.convert to Q8_0.
  - for the head-only check: a target with Llama-3.1-8B's outer shape but 1 layer (hidden 4096,
    FFN 14336, untied 128256-row output) and a head shaped like the published Llama-3.1-8B EAGLE-3
    heads.

Measured, each in a fresh child process so that VmHWM (peak resident memory; it counts the target's
mmap'd pages once touched, as the OS does) belongs to one arm only:

  plain    Engine(target, draft=None): construction time, generate -n tokens, peak RSS
  eagle    Engine(target, draft=head): the same, once per head type (--head-types: Q8_0, and Q4_0,
           which halves the head's memory: on a 1B target a Q8_0 head's weights alone are ~9.5% of
           plain decoding's peak)
  loads    _core.Target, then _core.DraftHead as the engine builds it (n_ctx + 512 cells, batch 128):
           each load's time, and the resident and peak memory the head load adds. A head load that
           copies whole tensors through host buffers, or copies the target's 128256-row embedding
           (about 0.5 GB in Q8_0 at hidden 4096), shows here.

The goal (issue 14): EAGLE's peak RSS <= 1.10x plain decoding's, on the 1B-shaped pair.
--no-rope-scaling writes (and measures) variants without RoPE scaling, under other cache names,
for runtimes whose draft head refuses it.

Run it from outside the repository (importing pyeagle from the repository root picks the
uncompiled source tree):  cd /tmp && python /path/to/pyeagle/benchmarks/memory_scale.py
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import shlex
import shutil
import string
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gguf
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "tests"))  # appended: the test helpers must not shadow anything installed
from eagle_checkpoints import write_eagle3  # noqa: E402
from tiny_gguf import add_tokenizer, vocab as tiny_vocab  # noqa: E402

from pyeagle.bench import fmt, machine, table  # noqa: E402
from pyeagle.convert import PlannedTensor, add_llama_shape, convert, llama3_rope_factors, write_gguf  # noqa: E402

Q = gguf.GGMLQuantizationType
Q8_BLOCK = np.dtype([("d", "<f2"), ("qs", "i1", 32)])  # ggml's block_q8_0: 34 bytes for 32 weights
INT8_STD = 73.9  # std of uniform random int8 (bytes): a block's scale is the weight std / this
DRAFT_VOCAB = 32000
BUILDS: set[str] = set()  # the _core builds the probes ran
PROMPT = [1] + [int(x) for x in np.random.default_rng(1).integers(300, 128000, 31)]  # fixed token ids


@dataclass(frozen=True)
class Shape:
    name: str           # cache file stem
    hidden: int
    n_layer: int
    n_head: int
    n_head_kv: int
    ff: int
    tied: bool          # no output.weight: the token embedding is the output matrix too
    rope_factor: float  # llama3 RoPE scaling factor of the published model
    taps: tuple | None = None  # the head's eagle_aux_hidden_state_layer_ids (None: published default)
    vocab: int = 128256

    @property
    def head_dim(self) -> int:
        return self.hidden // self.n_head


LLAMA_1B = Shape("llama3.2-1b-shaped", 2048, 16, 32, 8, 8192, tied=True, rope_factor=32.0)
# 1 layer: the published default taps (2, N/2, N-3) need N >= 5, and layer 0 is all a 1-layer target has
LLAMA_8B = Shape("llama3.1-8b-outer-1layer", 4096, 1, 32, 8, 14336, tied=False, rope_factor=8.0, taps=(0, 0, 0))


def rope_scaling(s: Shape) -> dict:
    return {"rope_type": "llama3", "factor": s.rope_factor, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}


# --- synthetic files ----------------------------------------------------------------------------

def synthetic_vocab(n: int) -> tuple[list[str], list[float], list[int]]:
    """tests/tiny_gguf's SentencePiece vocabulary (control tokens, 256 byte tokens, words) padded to n
    tokens with letter strings, with and without the word-start mark."""
    tokens, scores, types = tiny_vocab()
    seen = set(tokens)
    pieces = ("\u2581" * mark + "".join(p) for k in itertools.count(2)
              for p in itertools.product(string.ascii_lowercase, repeat=k) for mark in (1, 0))
    for p in pieces:
        if len(tokens) == n:
            break
        if p not in seen:
            tokens.append(p)
            scores.append(-100.0 + 10.0 * len(p) - 0.001 * len(tokens))  # as tiny_gguf: longer pieces first
            types.append(int(gguf.TokenType.NORMAL))
    return tokens, scores, types


def q8_0(rng: np.random.Generator, rows: int, cols: int, std: float) -> np.ndarray:
    """Random Q8_0 blocks as raw bytes: uniform int8 quants, one f16 scale giving weights of ~std."""
    blocks = np.empty(rows * cols // 32, Q8_BLOCK)
    blocks["qs"] = np.frombuffer(rng.bytes(blocks.size * 32), np.int8).reshape(-1, 32)
    blocks["d"] = std / INT8_STD
    return blocks.view(np.uint8)


def target_plan(s: Shape, rope: bool, rng: np.random.Generator) -> list[PlannedTensor]:
    """llama.cpp's tensor names and shapes; weights ~ N(0, 1/fan_in) (logits ~ 3 for embeddings and
    output, so a 16-layer pass stays finite); RMSNorm gains ~1."""
    h, kv, ff, V = s.hidden, s.n_head_kv * s.head_dim, s.ff, s.vocab

    def mat(name: str, rows: int, cols: int, gain: float = 1.0) -> PlannedTensor:
        return PlannedTensor(name, "random", (rows, cols), Q.Q8_0,
                             lambda: q8_0(rng, rows, cols, gain / math.sqrt(cols)))

    def norm(name: str) -> PlannedTensor:
        return PlannedTensor(name, "random", (h,), Q.F32,
                             lambda: (1.0 + 0.1 * rng.standard_normal(h)).astype(np.float32))

    plan = [mat("token_embd.weight", V, h, 3.0)]
    if rope:  # how llama.cpp's converter stores llama3 scaling: per-pair frequency divisors
        factors = llama3_rope_factors(s.head_dim, 500000.0, rope_scaling(s))
        plan.append(PlannedTensor("rope_freqs.weight", "config", factors.shape, Q.F32, lambda: factors))
    for i in range(s.n_layer):
        p = f"blk.{i}."
        plan += [norm(p + "attn_norm.weight"), mat(p + "attn_q.weight", h, h), mat(p + "attn_k.weight", kv, h),
                 mat(p + "attn_v.weight", kv, h), mat(p + "attn_output.weight", h, h), norm(p + "ffn_norm.weight"),
                 mat(p + "ffn_gate.weight", ff, h), mat(p + "ffn_up.weight", ff, h), mat(p + "ffn_down.weight", h, ff)]
    plan.append(norm("output_norm.weight"))
    if not s.tied:
        plan.append(mat("output.weight", V, h, 3.0))
    return plan


def write_target(path: Path, s: Shape, rope: bool) -> None:
    tokens, scores, types = synthetic_vocab(s.vocab)

    def metadata(w: gguf.GGUFWriter) -> None:
        w.add_name(path.stem)
        w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
        add_llama_shape(w, n_ctx=131072, n_embd=s.hidden, n_layer=s.n_layer, n_ff=s.ff, n_head=s.n_head,
                        n_head_kv=s.n_head_kv, head_dim=s.head_dim, rope_theta=500000.0, eps=1e-5)
        add_tokenizer(w, tokens, scores, types)

    write_gguf(path, "llama", metadata, target_plan(s, rope, np.random.default_rng(0)), desc=path.name)


def write_head_checkpoint(directory: Path, s: Shape, rope: bool) -> None:
    """Random EAGLE-3 head as SafeAILab/SpecForge publish Llama-3.x heads (bf16 safetensors)."""
    part = directory.with_name(directory.name + ".part")
    shutil.rmtree(part, ignore_errors=True)  # an earlier run's interrupted write
    extra = {"max_position_embeddings": 131072, "rope_scaling": rope_scaling(s) if rope else None}
    write_eagle3(part, hidden=s.hidden, vocab=s.vocab, n_head=s.n_head, n_head_kv=s.n_head_kv, ff=s.ff,
                 draft_vocab=DRAFT_VOCAB, dtype="bf16", rope_theta=500000.0,
                 taps=list(s.taps) if s.taps else None, config_extra=extra)
    os.replace(part, directory)


def cached(path: Path, write: Callable[[Path], None], log: list) -> Path:
    """path, written by write(path) unless present; log gets (file, MiB, seconds or None if cached)."""
    took = None
    if not path.exists():
        print(f"writing {path} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        write(path)
        took = time.perf_counter() - t0
        print(f"  done in {took:.1f} s", file=sys.stderr, flush=True)
    size = sum(f.stat().st_size for f in path.iterdir()) if path.is_dir() else path.stat().st_size
    log.append((path.name, size / (1 << 20), took))
    return path


def model_files(cache: Path, s: Shape, rope: bool, head_types: list[str], log: list) -> tuple[Path, list[Path]]:
    """(target GGUF, [head GGUF per type]) of shape s, written when missing."""
    v = "" if rope else "-norope"
    target = cached(cache / f"{s.name}{v}-q8_0.gguf", lambda p: write_target(p, s, rope), log)
    ckpt = cached(cache / f"{s.name}-eagle3{v}", lambda p: write_head_checkpoint(p, s, rope), log)
    heads = [cached(cache / f"{s.name}-eagle3{v}-{t}.gguf", lambda p, t=t: convert(ckpt, target, p, t), log)
             for t in head_types]
    return target, heads


# --- child processes ----------------------------------------------------------------------------

def status_mib() -> dict[str, float]:
    """This process's resident memory now (VmRSS: anon + file-backed) and at its peak (VmHWM), MiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(line.split()[1]) / 1024
    return out


def core_build() -> str:
    """When the imported pyeagle._core was installed: another install during a run would mix builds."""
    from pyeagle import _core

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.stat(_core.__file__).st_mtime))


def probe_engine(args: argparse.Namespace) -> dict:
    """Child: an Engine (with or without the head), one generate, its memory."""
    from pyeagle import Engine

    t0 = time.perf_counter()
    eng = Engine(args.target, draft=args.head, n_ctx=args.ctx_size, n_threads=args.threads)
    t_load = time.perf_counter() - t0
    loaded = status_mib()
    out = eng.generate(PROMPT, max_tokens=args.n, draft=args.head is not None)
    logits = eng.target.last_logits()
    return {"t_load": t_load, "t_gen": out.stats.t_total, "tokens_per_s": out.stats.tokens_per_s,
            "tokens": out.tokens, "loaded": loaded, "end": status_mib(), "build": core_build(),
            "logits_finite": bool(np.isfinite(logits).all()), "logits_std": float(logits.std())}


def probe_loads(args: argparse.Namespace) -> dict:
    """Child: the target, then the head as the engine builds it, with the memory after each."""
    from pyeagle import _core

    t0 = time.perf_counter()
    tgt = _core.Target(args.target, n_ctx=args.ctx_size, n_threads=args.threads, n_seq_max=256,
                       tap_layers=[int(x) for x in args.taps.split(",") if x])
    t_target = time.perf_counter() - t0
    after_target = status_mib()
    t0 = time.perf_counter()
    head = _core.DraftHead(args.head, tgt, n_ctx=args.ctx_size + 512, n_batch=128)  # as cpp/src/engine.cpp
    t_head = time.perf_counter() - t0
    after_head = status_mib()  # read while `head` is alive
    return {"build": core_build(), "t_target": t_target, "after_target": after_target, "t_head": t_head,
            "after_head": after_head, "n_draft_vocab": head.n_draft_vocab}


def run_probe(kind: str, args: argparse.Namespace, target: Path, head: Path | None = None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_probe", kind, "--_target", str(target),
           "-c", str(args.ctx_size), "-t", str(args.threads), "-n", str(args.n)]
    if head:
        cmd += ["--_head", str(head), "--_taps", ",".join(map(str, head_taps(head)))]
    print(f"probe {kind}: {target.name}" + (f" + {head.name}" if head else ""), file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    # not from the repository root: there `import pyeagle` would find the uncompiled source tree
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tempfile.gettempdir())
    print(f"  {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    if r.returncode != 0:
        lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
        return {"error": lines[-1] if lines else f"exit status {r.returncode}"}
    out = json.loads(r.stdout.strip().splitlines()[-1])
    BUILDS.add(out["build"])
    return out


def head_taps(head: Path) -> list[int]:
    field = gguf.GGUFReader(head).fields.get("eagle3.target_layers")
    return [int(x) for x in field.contents()] if field else []


# --- report -------------------------------------------------------------------------------------

def git_commit() -> str:
    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True).stdout.strip()
    rev = git("rev-parse", "--short", "HEAD")
    if not rev:
        return "unknown (not a git checkout)"
    return rev + (" (uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else "")


def mib(x: float | None) -> str:
    return fmt(x, ".0f")


def error_cell(r: dict) -> str:
    return "failed: " + r["error"].replace("|", "/")


def engine_table(plain: dict, eagles: list[tuple[str, dict, dict]]) -> str:
    """plain, then per head (name, engine probe, loads probe)."""
    rows = []
    for name, r, loads in [("plain", plain, {"error": ""}), *eagles]:
        if "error" in r:
            rows.append([name, error_cell(r)] + [""] * 8)
            continue
        ratio = r["end"]["VmHWM"] / plain["end"]["VmHWM"] if "error" not in plain else None
        split = "error" not in loads
        rows.append([name, fmt(r["t_load"], ".2f"),
                     fmt(loads["t_target"], ".2f") if split else "-",
                     fmt(loads["t_head"], ".2f") if split else "-",
                     f"{r['t_gen']:.1f} ({r['tokens_per_s']:.1f} tok/s)", mib(r["loaded"]["VmRSS"]),
                     f"{mib(r['end']['RssAnon'])} + {mib(r['end']['RssFile'])}", mib(r["end"]["VmHWM"]),
                     fmt(ratio, ".3f")])
    return table(["arm", "Engine() s", "target load s", "head load s", "generate s", "RSS after load MiB",
                  "RSS at end MiB (anon + file)", "peak RSS MiB", "peak / plain"], rows)


def loads_table(rows: list[tuple[str, Path, dict, float]]) -> str:
    out = []
    for name, head, r, embd_mib in rows:
        size = mib(head.stat().st_size / (1 << 20))
        if "error" in r:
            out.append([name, size, error_cell(r)] + [""] * 6)
            continue
        a, b = r["after_target"], r["after_head"]
        out.append([name, size, mib(embd_mib), fmt(r["t_target"], ".2f"), mib(a["VmRSS"]), fmt(r["t_head"], ".2f"),
                    mib(b["VmRSS"] - a["VmRSS"]), mib(b["RssAnon"] - a["RssAnon"]), mib(b["VmHWM"] - a["VmHWM"])])
    return table(["pair", "head GGUF MiB", "target token_embd MiB", "target load s", "RSS after target MiB",
                  "head load s", "RSS added by head MiB", "anon added MiB", "peak added MiB"], out)


def embd_mib(s: Shape) -> float:
    return s.vocab * s.hidden // 32 * Q8_BLOCK.itemsize / (1 << 20)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "pyeagle" / "synthetic",
                    help="where the synthetic models are written once and reused (default %(default)s)")
    ap.add_argument("-c", "--ctx-size", type=int, default=4096, help="n_ctx of both arms (default 4096)")
    ap.add_argument("-t", "--threads", type=int, default=2, help="threads (default 2)")
    ap.add_argument("-n", type=int, default=64, help="tokens to generate in each arm (default 64)")
    ap.add_argument("--no-rope-scaling", action="store_true",
                    help="models without llama3 RoPE scaling (other cache names), for runtimes that refuse it")
    ap.add_argument("--head-types", default="q8_0,q4_0",
                    help="head GGUF types to convert and measure, comma-separated (default %(default)s)")
    ap.add_argument("--skip-1b", action="store_true", help="skip the Llama-3.2-1B-shaped plain vs EAGLE arms")
    ap.add_argument("--skip-8b", action="store_true", help="skip the Llama-3.1-8B-shaped head load")
    for hidden in ("--_probe", "--_target", "--_head", "--_taps"):  # the child processes' arguments
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._probe:
        args.target, args.head, args.taps = args._target, args._head, args._taps or ""
        print(json.dumps(probe_engine(args) if args._probe == "engine" else probe_loads(args)))
        return 0

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    rope = not args.no_rope_scaling
    args.cache.mkdir(parents=True, exist_ok=True)
    files: list = []
    t_start = time.perf_counter()
    sections = []
    load_rows = []
    head_types = [t for t in args.head_types.split(",") if t]
    if not args.skip_1b:
        target, heads = model_files(args.cache, LLAMA_1B, rope, head_types, files)
        plain = run_probe("engine", args, target)
        eagles = []
        for t, head in zip(head_types, heads):
            loads = run_probe("loads", args, target, head)
            eagles.append((f"EAGLE-3, {t.upper()} head", run_probe("engine", args, target, head), loads))
            load_rows.append((f"1B-shaped, {t.upper()}", head, loads, embd_mib(LLAMA_1B)))
        lines = [f"## Llama-3.2-1B-shaped target + EAGLE-3 head, {args.n} tokens, n_ctx {args.ctx_size}, "
                 f"{args.threads} threads", "", engine_table(plain, eagles), ""]
        if "error" not in plain:
            lines.append(f"- plain: logits finite: {plain['logits_finite']} (std {plain['logits_std']:.2f}); "
                         f"{len(set(plain['tokens']))} distinct tokens of {len(plain['tokens'])}")
        for name, eagle, _ in eagles:
            if "error" not in plain and "error" not in eagle:
                ratio = eagle["end"]["VmHWM"] / plain["end"]["VmHWM"]
                lines += [f"- {name}: output identical to plain: {eagle['tokens'] == plain['tokens']}; peak RSS "
                          f"{ratio:.3f}x plain (goal <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'})"]
        sections.append("\n".join(lines))
    if not args.skip_8b:
        target, heads = model_files(args.cache, LLAMA_8B, rope, head_types[:1], files)
        load_rows.append((f"8B-shaped (1 target layer), {head_types[0].upper()}", heads[0],
                          run_probe("loads", args, target, heads[0]), embd_mib(LLAMA_8B)))
    if load_rows:
        sections.append("## Head load alone: _core.Target, then _core.DraftHead (one process)\n\n"
                        + loads_table(load_rows))

    m = machine()
    print(f"# pyeagle memory at real scale (synthetic weights)\n\n"
          f"- command: `python {shlex.join(sys.argv if argv is None else [sys.argv[0], *argv])}`\n"
          f"- machine: {m['cpu']}, {m['cores']} cores, load average {fmt(m['load_avg_1m'], '.2f')} at the end; "
          f"Python {m['python']}\n- commit: {git_commit()}\n"
          f"- pyeagle: {Path(sys.modules['pyeagle'].__file__).parent}, _core installed "
          f"{' and '.join(sorted(BUILDS)) or core_build()}"
          f"{' (reinstalled during the run: the arms ran different builds)' if len(BUILDS) > 1 else ''}\n"
          f"- RoPE scaling: {'llama3 (as published)' if rope else 'none (--no-rope-scaling)'}; "
          f"prompt {len(PROMPT)} fixed token ids, greedy\n- wall time: {time.perf_counter() - t_start:.0f} s\n")
    print(table(["file (in " + str(args.cache) + ")", "MiB", "written this run"],
                [[n, mib(s), f"{t:.1f} s" if t is not None else "cached"] for n, s, t in files]) + "\n")
    print("\n\n".join(sections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
