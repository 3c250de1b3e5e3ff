"""The soak script's short version (benchmarks/soak.py; the long run's figures are in
docs/HARDENING.md): 60 chat turns through the Python API and 30 through `python -m pyeagle.chat` in
a pseudo-terminal, on a tiny f32 model and head with exact kernels, with context overflow, /reset,
Ctrl-C and stop strings. The script exits 1 when RSS grows more than 5% after warm-up, when a checked
reply differs from a fresh engine's, when a stop string is sent, or when the CLI does not exit 0."""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from eagle_checkpoints import target_dims, write_eagle12
from tiny_gguf import TinySpec, write_tiny_llama

from pyeagle.convert import convert

SOAK = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"


@pytest.mark.skipif(sys.platform != "linux", reason="reads RSS from /proc and drives the chat through a Linux pty")
def test_short_soak_keeps_rss_flat_and_replies_exact(tmp_path):
    target = write_tiny_llama(tmp_path / "t.gguf", TinySpec(n_layer=2, weight_type="f32"))
    write_eagle12(tmp_path / "ck", **target_dims(target))
    head = convert(tmp_path / "ck", target, tmp_path / "h.gguf")
    r = subprocess.run([sys.executable, str(SOAK), "--turns", "60", "--cli-turns", "30", "-m", str(target), "-md",
                        str(head), "-c", "512", "-n", "64", "-t", "1", "--exact", "--stop", "e", "--stop", "a",
                        "--out", str(tmp_path / "out")],
                       cwd=tempfile.gettempdir(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    checked = re.search(r"Checked replies equal to a fresh engine's: (\d+)/(\d+)\.", r.stdout)
    assert checked and checked[1] == checked[2] and int(checked[2]) >= 4, r.stdout
    assert "exit status 0 on /exit" in r.stdout and "(0 cut at one)" not in r.stdout, r.stdout
    assert (tmp_path / "out" / "soak-api.csv").read_text().count("\n") == 61
