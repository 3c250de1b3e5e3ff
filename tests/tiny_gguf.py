"""Tiny random llama-architecture GGUF models for tests (written with the `gguf` package).

The vocabulary is a real SentencePiece-style (llama) tokenizer section: control tokens with a
ChatML template, all 256 byte-fallback tokens (so any UTF-8 text tokenizes), and a few hundred
scored word pieces. Weights are random but scaled so that next-token distributions are peaked
enough to make greedy decoding meaningful.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from pyeagle.convert import add_llama_shape

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one had by "
    "word but not what all were we when your can said there use an each which she do how their if will up "
    "other about out many then them these so some her would make like him into time has look two more write "
    "go see number no way could people my than first water been call who oil its now find long down day did "
    "get come made may part code def return print import class self value list data model token tree fast"
).split()


@dataclass
class TinySpec:
    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 128
    n_ctx_train: int = 2048
    seed: int = 0
    weight_type: str = "f32"  # f32 | f16 | q8_0
    arch: str = "llama"
    output_scale: float = 3.0  # logit spread: larger values give peakier next-token distributions
    tied: bool = False         # no output.weight: token_embd is the output matrix too (SmolLM2, Llama-3.2-1B)
    extra_tokens: int = 0      # more tokens: another vocabulary size
    renamed: bool = False      # the last token spelled differently: same size, another vocabulary
    duplicate: bool = False    # the last token spelled as the one before it: a corrupt vocabulary


def vocab(extra_tokens: int = 0, renamed: bool = False, duplicate: bool = False) -> tuple[list[str], list[float], list[int]]:
    T = gguf.TokenType
    tokens = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    types = [T.UNKNOWN, T.CONTROL, T.CONTROL, T.CONTROL, T.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [T.BYTE] * 256
    pieces = ["\u2581"] + [c for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?:;'\"()-"]
    pieces += ["\u2581" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    pieces += ["\u2581" + w for w in WORDS]
    pieces += [f"\u2581extra{i}" for i in range(extra_tokens)]
    seen = set(tokens)
    for p in pieces:
        if p not in seen:
            seen.add(p)
            tokens.append(p)
            types.append(T.NORMAL)
    if renamed:
        tokens[-1] = "\u2581renamed"
    if duplicate:
        tokens[-1] = tokens[-2]
    # SentencePiece scores: longer pieces first, so words win over letters
    scores = [0.0] * len(tokens)
    for i, t in enumerate(tokens):
        if types[i] == T.NORMAL:
            scores[i] = -100.0 + 10.0 * len(t) - 0.001 * i
    return tokens, scores, [int(t) for t in types]


def add_tokenizer(w: gguf.GGUFWriter, tokens: list[str], scores: list[float], types: list[int]) -> None:
    """A SentencePiece ("llama") tokenizer with vocab()'s special tokens and the ChatML template."""
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_eot_token_id(4)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template(CHATML)


def write_tiny_llama(path: str | Path, spec: TinySpec = TinySpec()) -> Path:
    """Writes a random llama model with the tiny tokenizer; returns the path."""
    path = Path(path)
    rng = np.random.default_rng(spec.seed)
    tokens, scores, types = vocab(spec.extra_tokens, spec.renamed, spec.duplicate)
    n_vocab, h, ff = len(tokens), spec.n_embd, spec.n_ff
    head_dim = h // spec.n_head
    h_kv = head_dim * spec.n_head_kv

    w = gguf.GGUFWriter(str(path), spec.arch)
    w.add_name("pyeagle-tiny")
    add_llama_shape(w, n_ctx=spec.n_ctx_train, n_embd=h, n_layer=spec.n_layer, n_ff=ff, n_head=spec.n_head,
                    n_head_kv=spec.n_head_kv, head_dim=head_dim, rope_theta=10000.0, eps=1e-5)
    add_tokenizer(w, tokens, scores, types)

    def mat(rows: int, cols: int, scale: float) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * scale).astype(np.float32)

    def norm(n: int) -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    tensors: list[tuple[str, np.ndarray]] = [("token_embd.weight", mat(n_vocab, h, 1.0))]
    for i in range(spec.n_layer):
        p = f"blk.{i}."
        tensors += [
            (p + "attn_norm.weight", norm(h)),
            (p + "attn_q.weight", mat(h, h, 1.5 / np.sqrt(h))),
            (p + "attn_k.weight", mat(h_kv, h, 1.5 / np.sqrt(h))),
            (p + "attn_v.weight", mat(h_kv, h, 1.0 / np.sqrt(h))),
            (p + "attn_output.weight", mat(h, h, 1.0 / np.sqrt(h))),
            (p + "ffn_norm.weight", norm(h)),
            (p + "ffn_gate.weight", mat(ff, h, 1.0 / np.sqrt(h))),
            (p + "ffn_up.weight", mat(ff, h, 1.0 / np.sqrt(h))),
            (p + "ffn_down.weight", mat(h, ff, 1.0 / np.sqrt(ff))),
        ]
    tensors += [("output_norm.weight", norm(h))]
    if not spec.tied:
        tensors += [("output.weight", mat(n_vocab, h, spec.output_scale / np.sqrt(h)))]

    for name, data in tensors:
        if data.ndim == 1 or spec.weight_type == "f32":
            w.add_tensor(name, data)
        elif spec.weight_type == "f16":
            w.add_tensor(name, data.astype(np.float16))
        elif spec.weight_type == "q8_0":
            q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            raise ValueError(f"unknown weight type {spec.weight_type}")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
