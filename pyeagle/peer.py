"""Outside baselines for `python -m pyeagle.bench`, each run in its own process.

- llama-cpp-python's own `Llama` greedy loop on the same GGUF (the Python decoding loop most users
  of these models run): a small script run with `python -c`, fed prompts as token ids.
- llama.cpp's own speculative decoding, `llama-speculative-simple` (n-gram drafts by default),
  built on demand from the llama.cpp that the installed llama-cpp-python vendors, so the kernels
  are the same commit as pyeagle's runtime. The sdist is fetched once through pip into
  models.cache_dir(); the build goes to cache_dir()/peer-build/<version>, never into a checkout.
"""
from __future__ import annotations

import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterable, Sequence

from . import models

PEER_TARGET = "llama-speculative-simple"

# One Llama, one completion per input line (a JSON list of prompt token ids); one JSON line out per
# prompt. Generation time excludes the model load and the prompt's prefill (llama.cpp's own
# t_p_eval), but includes llama-cpp-python's per-token Python work, which is what its users get.
LLAMA_CPP_PYTHON_SCRIPT = r"""
import json, sys, time
import llama_cpp
cfg = json.loads(sys.stdin.readline())
llm = llama_cpp.Llama(cfg["model"], n_ctx=cfg["n_ctx"], n_threads=cfg["n_threads"],
                      n_threads_batch=cfg["n_threads"], seed=cfg["seed"], verbose=False)
kw = dict(max_tokens=cfg["n_predict"], temperature=cfg["temperature"], top_p=1.0, min_p=0.0, typical_p=1.0,
          repeat_penalty=1.0, top_k=1 if cfg["temperature"] <= 0 else 0, seed=cfg["seed"])
first = True
for line in sys.stdin:
    ids = json.loads(line)
    if first:  # warm-up, untimed
        llm.reset()
        llm.create_completion(ids, **dict(kw, max_tokens=4))
        first = False
    llm.reset()
    llama_cpp.llama_perf_context_reset(llm.ctx)
    t0 = time.perf_counter()
    out = llm.create_completion(ids, **kw)
    wall = time.perf_counter() - t0
    perf = llama_cpp.llama_perf_context(llm.ctx)
    n = out["usage"]["completion_tokens"]
    t_gen = max(wall - perf.t_p_eval_ms / 1000.0, 1e-9)
    print(json.dumps({"n_tokens": n, "t_gen": t_gen, "t_prefill": perf.t_p_eval_ms / 1000.0,
                      "tokens_per_s": n / t_gen, "text": out["choices"][0]["text"]}), flush=True)
"""


class PeerError(RuntimeError):
    """An outside baseline could not be built or run; the message says why."""


def llama_cpp_python_runs(model: str, prompts: Sequence[Sequence[int]], n_ctx: int, n_threads: int,
                          n_predict: int, temperature: float = 0.0, seed: int = 0,
                          on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Runs llama-cpp-python's Llama over the prompts (token ids) in one child process; one dict per prompt."""
    cfg = dict(model=str(model), n_ctx=n_ctx, n_threads=n_threads, n_predict=n_predict,
               temperature=temperature, seed=seed)
    stdin = "\n".join([json.dumps(cfg)] + [json.dumps([int(t) for t in p]) for p in prompts]) + "\n"
    proc = subprocess.Popen([sys.executable, "-c", LLAMA_CPP_PYTHON_SCRIPT], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdin and proc.stdout and proc.stderr
    proc.stdin.write(stdin)
    proc.stdin.close()
    results = []
    for line in proc.stdout:
        if line.strip():
            results.append(json.loads(line))
            if on_result:
                on_result(results[-1])
    err = proc.stderr.read()
    if proc.wait() != 0 or len(results) != len(prompts):
        raise PeerError(f"llama-cpp-python baseline failed (exit {proc.returncode}): {err.strip()[-800:]}")
    return results


# --- llama.cpp's own speculative decoding -------------------------------------------------------

# The same choice as scripts/cmake_args.sh (which runs before pyeagle is installed; this copy lets
# an installed pyeagle build the peer, and tests/test_bench.py checks that the two agree): on an x86
# CPU with AMX, GGML_NATIVE off and every other ISA extension the compiler reports named, because
# ggml's AMX path segfaults on the first decode (llama.cpp #20824); elsewhere the native default.
ISA_MACROS = [("AVX", "__AVX__"), ("AVX2", "__AVX2__"), ("FMA", "__FMA__"), ("F16C", "__F16C__"),
              ("BMI2", "__BMI2__"), ("AVX512", "__AVX512F__"), ("AVX512_VBMI", "__AVX512VBMI__"),
              ("AVX512_VNNI", "__AVX512VNNI__"), ("AVX512_BF16", "__AVX512BF16__"), ("AVX_VNNI", "__AVXVNNI__")]


def cmake_isa_args() -> list[str]:
    """CMake flags for ggml on this CPU (the logic of scripts/cmake_args.sh); $CMAKE_ARGS wins."""
    if os.environ.get("CMAKE_ARGS"):
        return shlex.split(os.environ["CMAKE_ARGS"])
    args = ["-DLLAVA_BUILD=OFF"]
    cc = os.environ.get("CC", "cc")
    if platform.machine() == "x86_64" and shutil.which(cc):
        r = subprocess.run([cc, "-march=native", "-dM", "-E", "-"], input="", capture_output=True, text=True)
        defs = set(r.stdout.splitlines()) if r.returncode == 0 else set()
        if any(line.startswith(("#define __AMX_INT8__", "#define __AMX_TILE__")) for line in defs):
            args.append("-DGGML_NATIVE=OFF")
            args += [f"-DGGML_{opt}=ON" for opt, macro in ISA_MACROS if f"#define {macro} 1" in defs]
    return args


def llama_cpp_python_version() -> str:
    return metadata.version("llama-cpp-python")


def fetch_sdist(version: str, log: Callable[[str], None]) -> Path:
    """The llama-cpp-python sdist of `version` in the cache dir, fetched once through pip."""
    dest_dir = models.cache_dir()
    found = sorted(dest_dir.glob(f"llama_cpp_python-{version}.tar.gz"))
    if found:
        return found[0]
    dest_dir.mkdir(parents=True, exist_ok=True)
    log(f"fetching the llama-cpp-python {version} sdist through pip into {dest_dir} (once, ~76 MB) ...")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
           "-d", str(dest_dir), f"llama-cpp-python=={version}"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(dest_dir.glob(f"llama_cpp_python-{version}.tar.gz"))
    if not found:
        raise PeerError(f"could not fetch the llama-cpp-python {version} sdist (pip exit {r.returncode}): "
                        f"{r.stderr.strip()[-500:]}")
    return found[0]


# parts of vendor/llama.cpp a build of the examples does not read (models: 75 MB of test vocabularies)
SKIP_DIRS = ("models/", "docs/", "media/", "benches/", ".github/")


def extract_vendor(sdist: Path, dest: Path) -> Path:
    """Extracts the sdist's vendor/llama.cpp (less models and docs) to dest, once; returns dest."""
    if (dest / "CMakeLists.txt").exists():
        return dest
    tmp = dest.with_name(dest.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(sdist) as tar:
        members = []
        for m in tar.getmembers():
            parts = m.name.split("/", 1)
            if len(parts) < 2 or not parts[1].startswith("vendor/llama.cpp/"):
                continue
            rel = parts[1][len("vendor/llama.cpp/"):]
            if not rel or rel.startswith(SKIP_DIRS):
                continue
            m.name = rel
            members.append(m)
        if not members:
            raise PeerError(f"{sdist} holds no vendor/llama.cpp")
        if hasattr(tarfile, "data_filter"):
            tar.extractall(tmp, members=members, filter="data")
        else:  # Python without extraction filters: refuse paths that leave the destination
            if any(m.name.startswith("/") or ".." in m.name.split("/") or m.issym() or m.islnk() for m in members):
                raise PeerError(f"{sdist}: unsafe member paths")
            tar.extractall(tmp, members=members)
    tmp.replace(dest)
    return dest


def build_speculative(log: Callable[[str], None], jobs: int = 2) -> Path:
    """Path of llama-speculative-simple for the installed llama-cpp-python version, built on first use."""
    version = llama_cpp_python_version()
    root = models.cache_dir() / "peer-build" / version
    exe = root / "build" / "bin" / PEER_TARGET
    if exe.exists():
        return exe
    src = extract_vendor(fetch_sdist(version, log), root / "llama.cpp")
    build = root / "build"
    build.mkdir(parents=True, exist_ok=True)
    build_log = root / "build.log"
    configure = ["cmake", "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF",
                 "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_EXAMPLES=ON", "-DLLAMA_BUILD_TESTS=OFF",
                 "-DLLAMA_BUILD_TOOLS=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF", *cmake_isa_args()]
    if shutil.which("ninja"):
        configure[1:1] = ["-G", "Ninja"]
    compile_ = ["cmake", "--build", str(build), "--target", PEER_TARGET, "-j", str(max(1, jobs))]
    log(f"building {PEER_TARGET} (llama.cpp of llama-cpp-python {version}) into {root}, at low priority; "
        f"a few minutes once; log: {build_log}")
    with open(build_log, "w") as out:
        for cmd in (configure, compile_):
            out.write("$ " + shlex.join(cmd) + "\n")
            out.flush()
            # the build runs at low priority so that a machine in use stays responsive
            r = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=lambda: os.nice(10))
            if r.returncode != 0:
                tail = build_log.read_text(errors="replace").strip().splitlines()[-15:]
                raise PeerError(f"building {PEER_TARGET} failed (exit {r.returncode}); see {build_log}:\n"
                                + "\n".join(tail))
    if not exe.exists():
        raise PeerError(f"the build finished but {exe} is missing; see {build_log}")
    return exe


_DECODED = re.compile(r"decoded\s+(\d+) tokens in\s+([0-9.]+) seconds")
_FIELDS = {"n_drafted": re.compile(r"n_drafted\s*=\s*(\d+)"), "n_accept": re.compile(r"n_accept\s*=\s*(\d+)")}
_MEAN_ACC = re.compile(r"#mean acc len\s*=\s*([0-9.]+)")


def parse_speculative_log(text: str) -> dict:
    """tokens, seconds, tok/s and draft counts from llama-speculative-simple's printed summary."""
    m = _DECODED.search(text)
    if not m:
        raise PeerError(f"{PEER_TARGET} printed no 'decoded N tokens in T seconds' line: {text.strip()[-600:]}")
    n, t = int(m.group(1)), float(m.group(2))
    out: dict = {"n_tokens": n, "t_gen": t, "tokens_per_s": n / t if t > 0 else 0.0}
    for key, rx in _FIELDS.items():
        f = rx.search(text)
        out[key] = int(f.group(1)) if f else None
    acc = _MEAN_ACC.search(text)
    out["mean_accept_len"] = float(acc.group(1)) if acc else None
    return out


def answer_text(stdout: str, prompt_text: str) -> str | None:
    """The text llama-speculative-simple decoded: it prints a blank line, the prompt's token pieces, then
    each accepted token's piece. None where its echo of the prompt is not the prompt."""
    body = stdout[2:] if stdout.startswith("\n\n") else stdout
    if not body.startswith(prompt_text):
        return None
    out = body[len(prompt_text):]
    return out[:-2] if out.endswith("\n\n") else out


def run_speculative(exe: Path, model: str, prompt_text: str, n_predict: int, n_ctx: int, n_threads: int,
                    temperature: float = 0.0, seed: int = 0, spec_type: str = "ngram-mod",
                    extra_args: Sequence[str] = ()) -> dict:
    """One llama-speculative-simple run (prompt passed with -p: -f drops a trailing newline).

    It may decode past n_predict by up to one draft (it checks the budget after accepting a draft)."""
    cmd = [str(exe), "-m", str(model), "-p", prompt_text, "-n", str(n_predict), "-c", str(n_ctx),
           "-t", str(n_threads), "-tb", str(n_threads), "--temp", str(temperature), "--seed", str(seed),
           "--spec-type", spec_type]
    if temperature <= 0:
        cmd += ["--top-k", "1"]
    cmd += list(extra_args)
    r = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if r.returncode != 0:
        raise PeerError(f"{PEER_TARGET} exited {r.returncode}: {(r.stderr or r.stdout).strip()[-600:]}")
    out = parse_speculative_log(r.stderr + "\n" + r.stdout)
    out["text"] = answer_text(r.stdout, prompt_text)
    return out


def speculative_runs(model: str, prompt_texts: Iterable[str], n_predict: int, n_ctx: int, n_threads: int,
                     temperature: float, seed: int, log: Callable[[str], None], spec_type: str = "ngram-mod",
                     extra_args: Sequence[str] = (), progress: Callable[[Iterable], Iterable] = iter) -> list[dict]:
    """Builds (once) and runs the peer over the prompts; PeerError if it cannot be built or run."""
    exe = build_speculative(log)
    return [run_speculative(exe, model, p, n_predict, n_ctx, n_threads, temperature, seed, spec_type, extra_args)
            for p in progress(list(prompt_texts))]
