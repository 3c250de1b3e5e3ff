"""Draft-head forward time for a SmolLM2-135M-sized random EAGLE-1/2 head (full 49152 vocabulary
via the target's tied output matrix, and a reduced 8192-row vocabulary), next to one target
decode step. Run from the repository root: python benchmarks/draft_forward.py"""
import statistics
import sys
import time
from pathlib import Path

root = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(root / "tests")]
import numpy as np  # noqa: E402
from eagle_checkpoints import target_dims, write_eagle12  # noqa: E402
from pyeagle.convert import convert  # noqa: E402

from pyeagle import DraftHead, Target, models  # noqa: E402

PROMPT = "<|im_start|>user\nWrite a short poem about the sea.<|im_end|>\n<|im_start|>assistant\n"


def med(f, reps=15):
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return 1000 * statistics.median(ts)


def main(tmp=Path("/tmp/pyeagle-bench")):
    t = str(models.default_target())
    d = target_dims(t)
    heads = {}
    for name, extra in (("full 49152", {}), ("reduced 8192", {"draft_vocab": 8192})):
        ck = tmp / name.split()[0]
        write_eagle12(ck, **d, embed=False, ff=1536, **extra)
        heads[name] = convert(ck, t, tmp / f"{name.split()[0]}.gguf", outtype="f16")
    tgt = Target(t, n_ctx=1024, n_threads=2)
    ids = tgt.tokenize(PROMPT)
    tgt.prefill(ids)
    step = med(lambda: (tgt.decode(100), tgt.truncate(len(ids))))
    print(f"draft head forward (tree rows incl. logits), median ms; one target decode step: {step:.2f} ms")
    print("| draft vocab | 1 | 4 | 8 | 16 |\n|---|---|---|---|---|")
    for name, path in heads.items():
        head = DraftHead(str(path), tgt, n_ctx=1024, n_batch=64)
        rng = np.random.default_rng(0)
        head.prefix(ids[1:] + [100], rng.standard_normal((len(ids), head.n_feature)).astype(np.float32), 0)
        cells = []
        for n in (1, 4, 8, 16):
            inp = rng.standard_normal((n, head.n_embd)).astype(np.float32)

            def f():
                head.tree([100] * n, inp, [len(ids)] * n, [-1] * n)
                head.rollback()
            cells.append(f"{med(f):.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
