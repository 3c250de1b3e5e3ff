"""A random Q8_0 target with a real model's shape, to measure verify costs of models this machine
cannot download (a pass's cost does not depend on the weights' values).

    python benchmarks/shaped_target.py smollm2-1.7b /tmp/smollm2-1.7b-random.gguf
    python -m pyeagle.bench --verify-curve -m /tmp/smollm2-1.7b-random.gguf --sizes 1,2,3,4,6,8,16 --reps 5 -t 2

Shapes (from the models' published config.json): smollm2-135m (the embedded default: check the
random file's curve against the real one), smollm2-360m, smollm2-1.7b. Tokenizer: the tests' tiny
one, padded to the model's 49,152 tokens. Output matrix tied to the embedding, like the real ones.
Writing takes about a minute per GB on this machine.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from tiny_gguf import TinySpec, vocab, write_tiny_llama  # noqa: E402

VOCAB = 49152
SHAPES = {  # n_embd, n_layer, n_head, n_head_kv, n_ff
    "smollm2-135m": (576, 30, 9, 3, 1536),
    "smollm2-360m": (960, 32, 15, 5, 2560),
    "smollm2-1.7b": (2048, 24, 32, 32, 8192),
}


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] not in SHAPES:
        print(__doc__)
        return 2
    h, n_layer, n_head, n_head_kv, ff = SHAPES[sys.argv[1]]
    extra = VOCAB - len(vocab()[0])
    spec = TinySpec(n_embd=h, n_layer=n_layer, n_head=n_head, n_head_kv=n_head_kv, n_ff=ff,
                    weight_type="q8_0", tied=True, extra_tokens=extra)
    out = write_tiny_llama(sys.argv[2], spec)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
