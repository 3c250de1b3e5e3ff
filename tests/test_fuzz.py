"""The loader fuzzer's quick mode (tests/fuzz/fuzz.py --quick): 300 mutated tiny heads, targets and
checkpoints, each loaded (converted) and generated with in its own process. The bar: no crash, no
hang, and every refusal a typed error (ModelFileError, FileNotFoundError, ConversionError) naming
the mutated file. The long mode's figures are in docs/HARDENING.md."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

FUZZ = Path(__file__).parent / "fuzz" / "fuzz.py"


def test_quick_fuzz_has_no_crash_hang_or_untyped_error(tmp_path):
    out = tmp_path / "quick.jsonl"
    # from outside the repository root, where `import pyeagle` would find the uncompiled tree
    r = subprocess.run([sys.executable, str(FUZZ), "--quick", "--out", str(out), "--work", str(tmp_path / "work")],
                       cwd=tempfile.gettempdir(), capture_output=True, text=True, timeout=600)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 300, r.stdout + r.stderr
    by = {}
    for rec in records:
        by.setdefault((rec["kind"], rec["outcome"]), []).append(rec)
    bad = [rec for rec in records if rec["outcome"] not in ("ok", "refused")]
    assert not bad, "\n".join(f"{b['outcome']}: {b['id']} {b['mutation']} {b.get('error', '')}" for b in bad[:10])
    assert r.returncode == 0, r.stdout + r.stderr
    # the cases reach both ends: files refused, and mutated files that still load and generate
    for kind in ("head", "target", "checkpoint"):
        assert len(by.get((kind, "refused"), [])) >= 10, kind
        assert len(by.get((kind, "ok"), [])) >= 3, kind
    assert all(rec.get("tokens", 0) >= 1 for rec in by.get(("head", "ok"), []))
