"""Training an EAGLE-1/2 or EAGLE-3 head (docs/TRAINING.md) and exporting it.

The head: fc(concat(embed(token t+1), feature t)) -> one Llama decoder layer without input norm
-> y, the predicted feature t+1; logits = W y with W the target's (frozen) output matrix, or the
rows of W for a frequency-ranked draft vocabulary. Loss per row: SmoothL1(y, feature t+1) +
0.1 * soft cross-entropy(target distribution from feature t+1, head distribution from y), on rows
that predict answer tokens; uniform noise U(-0.1, 0.1) on the input features; AdamW (0.9, 0.95),
gradient clip 0.5, linear warm-up then cosine decay. Embedding and output matrix are frozen.
The EAGLE-3 head (Eagle3Head) reads three target layers' inputs (taps) through fc instead, and
is trained on the token loss alone.

Sequences are packed into windows of `seq` rows with a block-diagonal causal mask (RoPE
positions restart at each sequence, as at inference). State (weights, optimizer, step, RNG) is
saved atomically to RUN/state.pt every few minutes and at the end, so Ctrl-C or --minutes loses
at most that much and rerunning continues.

Export writes the published EAGLE layout (config.json + model.safetensors with the official key
names; a reduced vocabulary adds `lm_head.weight` and `d2t`), then converts it with
pyeagle.convert: the project's own head takes the same path as anyone's.
"""
from __future__ import annotations

import json
import math
import signal
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import gguf
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import data_dirs, load, read_meta

P_WEIGHT, V_WEIGHT, NOISE = 0.1, 1.0, 0.1


@dataclass
class HeadConfig:
    hidden: int
    n_head: int
    n_head_kv: int
    ff: int
    eps: float
    rope_theta: float
    vocab: int
    context_length: int
    taps: tuple[int, ...] = ()  # EAGLE-3: the target layers fc reads (inputs; n_layer: the output); () for EAGLE-1/2
    n_layer: int = 0            # the target's layer count (tap n_layer: the last layer's output)
    layers: int = 1             # the head's own decoder layers (EAGLE-1/2; EAGLE-1's cnets.py takes several)
    copy_input: bool = False    # EAGLE-1/2 + the copy input: copy_tokens' guess at the next token (docs/FORMAT.md)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.n_head


def target_config_and_matrices(model: str) -> tuple[HeadConfig, np.ndarray, np.ndarray]:
    """The target's layer shape (the head copies it), its output matrix and its token embedding
    ([V, h] float32 each; the same array when the model ties them)."""
    r = gguf.GGUFReader(model)
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()

    def kv(key: str):
        f = r.fields[f"{arch}.{key}"]
        return f.parts[f.data[0]][0].item()

    tensors = {t.name: t for t in r.tensors}
    out = tensors.get("output.weight", tensors["token_embd.weight"])
    w = gguf.quants.dequantize(out.data, out.tensor_type).astype(np.float32)
    cfg = HeadConfig(hidden=int(kv("embedding_length")), n_head=int(kv("attention.head_count")),
                     n_head_kv=int(kv("attention.head_count_kv")), ff=int(kv("feed_forward_length")),
                     eps=float(kv("attention.layer_norm_rms_epsilon")),
                     rope_theta=float(kv("rope.freq_base")) if f"{arch}.rope.freq_base" in r.fields else 10000.0,
                     vocab=w.shape[0], context_length=int(kv("context_length")), n_layer=int(kv("block_count")))
    emb = tensors["token_embd.weight"]
    e = w if emb is out else gguf.quants.dequantize(emb.data, emb.tensor_type).astype(np.float32)
    return cfg, w, e


def target_output_norm(model: str) -> np.ndarray:
    """The target's final norm weight (output_norm.weight), float32."""
    t = {t.name: t for t in gguf.GGUFReader(model).tensors}["output_norm.weight"]
    return gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


class _Layer(nn.Module):
    """Attention + FFN of one decoder layer (the first layer's parameters live on the head itself,
    so that they keep the names runs have always saved)."""
    cfg: HeadConfig

    def _layer(self, cfg: HeadConfig, attn_in: int) -> None:
        h, d = cfg.hidden, cfg.head_dim
        self.q_proj = nn.Linear(attn_in, cfg.n_head * d, bias=False)
        self.k_proj = nn.Linear(attn_in, cfg.n_head_kv * d, bias=False)
        self.v_proj = nn.Linear(attn_in, cfg.n_head_kv * d, bias=False)
        self.o_proj = nn.Linear(cfg.n_head * d, h, bias=False)
        self.post_attention_layernorm = nn.Parameter(torch.ones(h))
        self.gate_proj = nn.Linear(h, cfg.ff, bias=False)
        self.up_proj = nn.Linear(h, cfg.ff, bias=False)
        self.down_proj = nn.Linear(cfg.ff, h, bias=False)
        for m in (self.q_proj, self.k_proj, self.v_proj, self.o_proj, self.gate_proj, self.up_proj, self.down_proj):
            nn.init.normal_(m.weight, std=0.02)
        self.register_buffer("inv_freq", 1.0 / cfg.rope_theta ** (torch.arange(0, d, 2).double() / d),
                             persistent=False)

    def _qkv(self, a: torch.Tensor, pos: torch.Tensor):
        cfg, (B, L, _) = self.cfg, a.shape
        d = cfg.head_dim
        q = self.q_proj(a).view(B, L, cfg.n_head, d).transpose(1, 2)
        k = self.k_proj(a).view(B, L, cfg.n_head_kv, d).transpose(1, 2)
        v = self.v_proj(a).view(B, L, cfg.n_head_kv, d).transpose(1, 2)
        ang = pos.double()[..., None] * self.inv_freq
        ang = torch.cat([ang, ang], dim=-1)
        cos, sin = ang.cos().float()[:, None], ang.sin().float()[:, None]
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        g = cfg.n_head // cfg.n_head_kv
        return q, k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)

    def _attend(self, r, q, k, v, mask) -> torch.Tensor:
        cfg, (B, L, _) = self.cfg, r.shape
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])
        a = r + self.o_proj(a.transpose(1, 2).reshape(B, L, cfg.n_head * cfg.head_dim))
        n = rms_norm(a, self.post_attention_layernorm, cfg.eps)
        return a + self.down_proj(F.silu(self.gate_proj(n)) * self.up_proj(n))

    def _layer_state(self, p: str) -> dict[str, torch.Tensor]:
        a, m = p + "self_attn.", p + "mlp."
        return {a + "q_proj.weight": self.q_proj.weight, a + "k_proj.weight": self.k_proj.weight,
                a + "v_proj.weight": self.v_proj.weight, a + "o_proj.weight": self.o_proj.weight,
                p + "post_attention_layernorm.weight": self.post_attention_layernorm,
                m + "gate_proj.weight": self.gate_proj.weight, m + "up_proj.weight": self.up_proj.weight,
                m + "down_proj.weight": self.down_proj.weight}


class LaterLayer(_Layer):
    """Decoder layer i >= 1 of a multi-layer EAGLE-1/2 head (`layers.i.*`). As in EAGLE-1's
    cnets.py, a later layer normalises its input (input_layernorm); the first does not. It starts
    as the identity (o_proj and down_proj zero), so adding it keeps the head's function."""

    def __init__(self, cfg: HeadConfig):
        super().__init__()
        self.cfg = cfg
        self._layer(cfg, cfg.hidden)
        self.input_layernorm = nn.Parameter(torch.ones(cfg.hidden))
        with torch.no_grad():
            self.o_proj.weight.zero_()
            self.down_proj.weight.zero_()

    def layer_state(self, i: int) -> dict[str, torch.Tensor]:
        return {f"layers.{i}.input_layernorm.weight": self.input_layernorm, **self._layer_state(f"layers.{i}.")}


class EagleHead(_Layer):
    """EAGLE-1/2 head with the official parameter names (fc, layers.0.*, and layers.i.* for a head
    of several layers)."""
    input_key = "f"  # the batch field step 0 reads: the target's feature

    def __init__(self, cfg: HeadConfig):
        super().__init__()
        h = cfg.hidden
        self.cfg = cfg
        self.fc = nn.Linear(2 * h, h, bias=True)
        self._layer(cfg, h)
        self.later = nn.ModuleList(LaterLayer(cfg) for _ in range(cfg.layers - 1))
        # start as "the next feature is the current one": fc passes the feature half through
        with torch.no_grad():
            self.fc.weight.normal_(std=0.02)
            self.fc.weight[:, h:] += torch.eye(h)
            self.fc.bias.zero_()
        if cfg.copy_input:  # starts at zero: the head's function is unchanged until it learns to use the copy
            self.copy_fc = nn.Linear(COPY_KEY * h, h, bias=False)
            nn.init.zeros_(self.copy_fc.weight)

    def embed(self, emb: torch.Tensor, bt: dict) -> torch.Tensor:
        """The token input e of a batch's rows: the input token's embedding, and with copy_input
        beside it the copy input: COPY_KEY blocks of h, the copy's embedding in block k-1 for a
        match of k tokens (copy_tokens), zeros elsewhere and where there is no copy."""
        e = emb[bt["tok"]]
        if not self.cfg.copy_input:
            return e
        c, k = bt["copy"], bt["copy_key"]
        ce = emb[c.clamp(min=0)] * (c >= 0)[..., None]                          # [B, L, h]
        onehot = F.one_hot(k, COPY_KEY + 1)[..., 1:].to(ce.dtype)               # [B, L, K]; k = 0: none
        return torch.cat([e, (onehot[..., :, None] * ce[..., None, :]).flatten(-2)], dim=-1)

    def _inputs(self, e: torch.Tensor, x: torch.Tensor, first: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(attention input, residual) of a row from its token embedding e and its input x (a
        feature, the target's at step 0 and the head's own output after)."""
        h = self.cfg.hidden
        z = self.fc(torch.cat([e[..., :h], x], dim=-1))
        if self.cfg.copy_input:
            z = z + self.copy_fc(e[..., h:])
        return z, z

    def logits(self, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return y @ w.T

    def _step(self, e, x, first: bool, pos, mask, kv: list[list]) -> torch.Tensor:
        """One drafting step of every row through all layers (see _through_layers)."""
        return self._through_layers(*self._inputs(e, x, first), pos, mask, kv)

    def _through_layers(self, a, y, pos, mask, kv: list[list]) -> torch.Tensor:
        """The layers on rows with first-layer attention input a and residual y. kv[l] holds layer
        l's (K, V) of the earlier steps; this step's are appended, and mask covers their concatenation."""
        for i, layer in enumerate([self, *self.later]):
            if i:
                a = rms_norm(y, layer.input_layernorm, self.cfg.eps)
            q, k, v = layer._qkv(a, pos)
            kv[i].append((k, v))
            y = layer._attend(y, q, torch.cat([k for k, _ in kv[i]], dim=2), torch.cat([v for _, v in kv[i]], dim=2),
                              mask)
        return y

    def forward(self, e: torch.Tensor, x: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """e: [B, L, h]; x: [B, L, h] features (EAGLE-3: [B, L, 3h] taps); pos: [B, L];
        mask: [B, L, L] bool (True: may attend). -> y [B, L, h]."""
        return self._step(e, x, True, pos, mask, [[] for _ in range(self.cfg.layers)])

    def unroll(self, e: torch.Tensor, x: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor,
               steps: int) -> list[torch.Tensor]:
        """Drafting as at inference, for every row at once ("training-time test", as in HASS and
        EAGLE-3). Step 0 is forward(). At step s, row t is the depth-(s+1) draft of the chain that
        starts at the true row t-s: its input is step s-1's output at row t-1, and it attends to
        the true rows up to t-s and to the chain's own rows of steps 1..s (rows t-s+1..t). Tokens
        are the true ones: a chain only counts while its drafts are right. Rows with position < s
        have no such chain (they attend to themselves only; mask them out of any loss).
        Returns [y_0, ..., y_{steps-1}], each [B, L, h]."""
        kv = [[] for _ in range(self.cfg.layers)]
        ys = [self._step(e, x, True, pos, mask, kv)]
        L = e.shape[1]
        i = torch.arange(L)
        for s in range(1, steps):
            blocks = [mask & (i[None, :] <= i[:, None] - s)]
            blocks += [mask & (i[None, :] == i[:, None] - (s - j)) for j in range(1, s + 1)]
            ys.append(self._step(e, torch.cat([torch.zeros_like(ys[-1][:, :1]), ys[-1][:, :-1]], dim=1), False, pos,
                                 torch.cat(blocks, dim=-1), kv))
        return ys

    def eagle_state_dict(self) -> dict[str, torch.Tensor]:
        out = {"fc.weight": self.fc.weight, "fc.bias": self.fc.bias, **self._layer_state("layers.0.")}
        if self.cfg.copy_input:
            out["copy_fc.weight"] = self.copy_fc.weight
        for i, layer in enumerate(self.later, 1):
            out.update(layer.layer_state(i))
        return out


class Eagle3Head(EagleHead):
    """EAGLE-3 head with the official parameter names (fc, midlayer.*, norm). Step 0 reads the
    target's taps through fc (3h -> h, no bias); later steps read the head's own pre-norm output
    directly. The layer attends over concat(input_layernorm(embedding), hidden_norm(g)) with g as
    the residual; logits = lm_head(norm(y)), lm_head being the target's output rows (frozen)."""
    input_key = "x"

    def __init__(self, cfg: HeadConfig, out_norm: torch.Tensor | None = None):
        nn.Module.__init__(self)
        h = cfg.hidden
        self.cfg = cfg
        self.fc = nn.Linear(3 * h, h, bias=False)
        nn.init.normal_(self.fc.weight, std=0.02)
        # with the last layer's output among the taps, start as EAGLE-1/2 heads do: fc passes it through
        with torch.no_grad():
            for k, layer in enumerate(cfg.taps):
                if cfg.n_layer and layer == cfg.n_layer:
                    self.fc.weight[:, k * h:(k + 1) * h] += torch.eye(h)
        if cfg.layers != 1:
            raise ValueError("an EAGLE-3 head has one layer (midlayer)")
        self._layer(cfg, 2 * h)
        self.later = nn.ModuleList()
        self.input_layernorm = nn.Parameter(torch.ones(h))
        self.hidden_norm = nn.Parameter(torch.ones(h))
        # the target's final norm: logits start on the target's scale
        self.norm = nn.Parameter(out_norm.clone().float() if out_norm is not None else torch.ones(h))

    def _inputs(self, e, x, first):
        g = self.fc(x) if first else x
        return torch.cat([rms_norm(e, self.input_layernorm, self.cfg.eps),
                          rms_norm(g, self.hidden_norm, self.cfg.eps)], dim=-1), g

    def logits(self, y, w):
        return rms_norm(y, self.norm, self.cfg.eps) @ w.T

    def eagle_state_dict(self) -> dict[str, torch.Tensor]:
        return {"fc.weight": self.fc.weight, "midlayer.input_layernorm.weight": self.input_layernorm,
                "midlayer.hidden_norm.weight": self.hidden_norm, **self._layer_state("midlayer."),
                "norm.weight": self.norm}


def make_head(cfg: HeadConfig, out_norm: torch.Tensor | None = None) -> EagleHead:
    """EAGLE-3 when the config names tapped layers, else EAGLE-1/2."""
    return Eagle3Head(cfg, out_norm) if cfg.taps else EagleHead(cfg)


# --- data -------------------------------------------------------------------------------------
@dataclass
class Rows:
    """Training rows of all sequences, concatenated. Row t of a sequence: (feature t, token t+1)
    at position t; targets: feature t+1 and the token distribution it gives."""
    feat: np.ndarray      # [R + S, h] float16: feature t (inputs) -- with one extra row per sequence
    tok: np.ndarray       # [R] int64: token t+1
    pos: np.ndarray       # [R] int64
    tgt: np.ndarray       # [R] int64: index into feat of feature t+1
    nexttok: np.ndarray   # [R] int64: token t+2 (the token this row's draft should be)
    mask: np.ndarray      # [R] bool: row predicts an answer token
    seq_start: np.ndarray  # [S + 1] row offsets
    taps: np.ndarray | None = None  # [R + S, 3h] float16: EAGLE-3 inputs of token t, indexed as feat
    copy: np.ndarray | None = None  # [R] int64: copy_tokens' copy at token t+1 (-1: none)
    copy_key: np.ndarray | None = None  # [R] int64: its match length (0: none)


COPY_KEY = 4  # longest context matched for a copy (tokens); the copy input has one block per match length


def copy_tokens(toks: np.ndarray, max_key: int = COPY_KEY) -> tuple[np.ndarray, np.ndarray]:
    """The context's own guess at the token after each position: for position i, the longest key
    toks[i-k+1..i] (k = max_key..1) that occurred earlier, ending at some j < i, and the token that
    followed its latest such occurrence, toks[j + 1]. Returns (copy [n] int64, -1 where even the
    token itself never occurred before; k [n] int64, 0 there)."""
    n = len(toks)
    copy = np.full(n, -1, np.int64)
    klen = np.zeros(n, np.int64)
    t = [int(x) for x in toks]
    last: list[dict] = [{} for _ in range(max_key + 1)]
    for i in range(n):
        for k in range(min(max_key, i + 1), 0, -1):
            c = last[k].get(tuple(t[i - k + 1:i + 1]))
            if c is not None:
                copy[i], klen[i] = c, k
                break
        if i + 1 < n:  # the keys ending at i are now followed by toks[i + 1]
            for k in range(1, min(max_key, i + 1) + 1):
                last[k][tuple(t[i - k + 1:i + 1])] = t[i + 1]
    return copy, klen


def build_rows(chunks: list[dict[str, np.ndarray]]) -> Rows:
    feats, taps, tok, pos, tgt, nxt, msk, cpy, ckey, starts = [], [], [], [], [], [], [], [], [], [0]
    with_taps = all("taps" in c for c in chunks)
    f_off = 0
    for c in chunks:
        off, npr = c["offsets"], c["n_prompt"]
        for s in range(len(npr)):
            a, b = int(off[s]), int(off[s + 1])
            n = b - a
            if n < 4:
                continue
            toks = c["tokens"][a:b].astype(np.int64)
            r = np.arange(n - 2)
            feats.append(c["features"][a:b - 1])       # features 0..n-2
            if with_taps:
                taps.append(c["taps"][a:b - 1])
            tok.append(toks[1:n - 1])
            copy, key = copy_tokens(toks[:n - 1])
            cpy.append(copy[1:])
            ckey.append(key[1:])
            pos.append(r)
            tgt.append(f_off + r + 1)
            nxt.append(toks[2:n])
            # rows that predict a token the target chose: after the prompt, or (multi-turn data)
            # wherever the chunk marks an answer token
            msk.append(c["answer"][a + 2:b].astype(bool) if "answer" in c else r + 2 >= int(npr[s]))
            f_off += n - 1
            starts.append(starts[-1] + n - 2)
    return Rows(np.concatenate(feats), np.concatenate(tok), np.concatenate(pos), np.concatenate(tgt),
                np.concatenate(nxt), np.concatenate(msk), np.asarray(starts, np.int64),
                np.concatenate(taps) if with_taps else None, np.concatenate(cpy), np.concatenate(ckey))


def pack(rows: Rows, seqs: np.ndarray, seq_len: int) -> list[list[tuple[int, int]]]:
    """Greedy packing of whole sequences (cut at seq_len) into windows of at most seq_len rows."""
    windows, cur, used = [], [], 0
    for s in seqs:
        a, b = int(rows.seq_start[s]), int(rows.seq_start[s + 1])
        b = min(b, a + seq_len)
        if used + (b - a) > seq_len and cur:
            windows.append(cur)
            cur, used = [], 0
        cur.append((a, b))
        used += b - a
    if cur:
        windows.append(cur)
    return windows


def row_to_feat(rows: Rows, r: np.ndarray) -> np.ndarray:
    """Index into rows.feat of feature t for row r (the feature before tgt)."""
    return rows.tgt[r] - 1


def make_batch(rows: Rows, windows: list[list[tuple[int, int]]], seq_len: int):
    B = len(windows)
    idx = np.full((B, seq_len), -1, np.int64)
    seg = np.full((B, seq_len), -1, np.int64)
    for b, w in enumerate(windows):
        i = 0
        for j, (a, e) in enumerate(w):
            idx[b, i:i + e - a] = np.arange(a, e)
            seg[b, i:i + e - a] = j
            i += e - a
    valid = idx >= 0
    r = np.where(valid, idx, 0)
    segt = torch.from_numpy(seg)
    causal = torch.tril(torch.ones(seq_len, seq_len, dtype=torch.bool))
    mask = (segt[:, :, None] == segt[:, None, :]) & causal
    mask |= torch.eye(seq_len, dtype=torch.bool)  # padding rows attend themselves (no NaN)
    out = dict(
        f=torch.from_numpy(rows.feat[row_to_feat(rows, r)].astype(np.float32)),
        y=torch.from_numpy(rows.feat[rows.tgt[r]].astype(np.float32)),
        tok=torch.from_numpy(rows.tok[r]), pos=torch.from_numpy(rows.pos[r]), copy=torch.from_numpy(rows.copy[r]),
        copy_key=torch.from_numpy(rows.copy_key[r]),
        nexttok=torch.from_numpy(rows.nexttok[r]),
        w=torch.from_numpy(valid & rows.mask[r]).float(), mask=mask)
    if rows.taps is not None:
        out["x"] = torch.from_numpy(rows.taps[row_to_feat(rows, r)].astype(np.float32))
    return out


# --- training ---------------------------------------------------------------------------------
@dataclass
class FitConfig:
    model: str
    draft_vocab: int
    epochs: float
    lr: float
    seq: int
    batch: int
    seed: int
    unroll: int = 1
    init: str = ""
    bf16: bool = False
    token_weight: float = P_WEIGHT
    ff: int = 0
    eagle3: bool = False
    layers: int = 1
    n_rows: int = 0
    n_val_seqs: int = 0


def draft_vocabulary(rows: Rows, vocab: int, size: int) -> np.ndarray:
    """The `size` most frequent answer tokens of the data (all tokens when size is 0 or >= vocab)."""
    if size <= 0 or size >= vocab:
        return np.arange(vocab, dtype=np.int64)
    counts = np.bincount(rows.nexttok[rows.mask], minlength=vocab)
    top = np.argsort(-counts, kind="stable")[:size]
    return np.sort(top).astype(np.int64)


def native_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX-BF16), from the flags in
    /proc/cpuinfo (or the text given); None where they cannot be read (not Linux). Without it,
    torch's bfloat16 matrix products are emulated: `fit --bf16` ran 254 -> 13 answer rows/s on an
    AVX2-only EPYC (docs/TRAINING.md)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), None)
    if flags is None:
        return None
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C during the write leaves the old file
    try:
        torch.save(obj, tmp)
        tmp.replace(path)
    finally:
        signal.signal(signal.SIGINT, old)


TEMPERATURES = np.exp(np.linspace(np.log(0.5), np.log(4.0), 43))  # calibration grid (holds 1.0)


def evaluate(head: EagleHead, rows: Rows, windows, seq_len: int, emb: torch.Tensor, w_d: torch.Tensor,
             map_full_to_draft: torch.Tensor, depth: int = 4, calibrate: bool = False) -> dict:
    """Agreement of the head with the target on held-out answer rows: top-1 and top-4 of the first
    draft, and chain[d], the fraction of rows from which a greedy chain of drafts is right for d+1
    steps running (drafting on its own features, head.unroll). tau_chain = 1 + sum(chain) is what
    a 1-wide tree of that depth would accept per target pass on this data.

    calibrate: also the logit temperature T that makes the head's probability of its draft an
    honest estimate of "the target agrees": it minimises the negative log-likelihood of the
    target's token under softmax(logits / T) over the rows where a tree would use it (steps
    0..depth-1 whose chain is still right). The tree ranks nodes by summed log-probabilities."""
    head.eval()
    hit4 = n = n_cal = 0.0
    chain = np.zeros(depth)
    nll = np.zeros(len(TEMPERATURES))
    with torch.no_grad():
        for i in range(0, len(windows), 8):
            bt = make_batch(rows, windows[i:i + 8], seq_len)
            ys = head.unroll(head.embed(emb, bt), bt[head.input_key], bt["pos"], bt["mask"], depth)
            want = map_full_to_draft[bt["nexttok"]]
            m = bt["w"] > 0
            top = head.logits(ys[0], w_d).topk(4, dim=-1).indices
            hit4 += ((top == want[..., None]).any(-1) & m).sum().item()
            n += m.sum().item()
            # row t of step s is in use when its chain (from row t - s) was right at steps < s
            use = m.clone()
            next_row = torch.cat([torch.zeros_like(m[:, :1]), bt["pos"][:, 1:] == bt["pos"][:, :-1] + 1], dim=1)
            for s, y in enumerate(ys):
                logits = head.logits(y[use], w_d)
                tgt = want[use]
                if calibrate:
                    for g, T in enumerate(TEMPERATURES):
                        lp = torch.log_softmax(logits / T, dim=-1)
                        nll[g] -= lp.gather(1, tgt.clamp(min=0)[:, None])[tgt >= 0].sum().item()
                    n_cal += int((tgt >= 0).sum())
                ok = torch.zeros_like(m)
                ok[use] = logits.argmax(-1) == tgt
                chain[s] += ok.sum().item()
                use = torch.cat([torch.zeros_like(ok[:, :1]), ok[:, :-1]], dim=1) & next_row & m
    head.train()
    chain /= max(n, 1)
    out = {"top1": float(chain[0]), "top4": hit4 / max(n, 1), "chain": [round(float(c), 4) for c in chain],
           "tau_chain": float(1 + chain.sum()), "rows": n}
    if calibrate:
        g, one = int(np.argmin(nll)), int(np.argmin(np.abs(TEMPERATURES - 1.0)))
        out["calibration"] = {"temperature": float(TEMPERATURES[g]), "nll": float(nll[g] / max(n_cal, 1)),
                              "nll_at_1": float(nll[one] / max(n_cal, 1)), "rows": int(n_cal)}
    return out


def fit(data_dir: Path | list[Path], run: Path, model: str, draft_vocab: int = 8192, epochs: float = 4, lr: float = 3e-4,
        seq: int = 512, batch: int = 4, seed: int = 0, n_threads: int = 0, minutes: float = 0,
        steps: int = 0, save_every_s: float = 300, progress: bool = True, unroll: int = 1,
        init: Path | None = None, bf16: bool = False, token_weight: float = P_WEIGHT, ff: int = 0,
        eagle3: bool = False, layers: int = 1, copy_input: bool = False) -> dict:
    """Trains (or continues training) the head in `run`; stops at the end, after `minutes` or
    after `steps` more steps (0: no limit). Returns a summary (with held-out accuracy at the end).

    unroll > 1 adds the training-time test: the loss is summed over drafting steps 0..unroll-1,
    each step drafting on the previous step's predicted features (EagleHead.unroll). init starts
    from another run's weights (e.g. a plain run, then a few unrolled epochs). bf16 runs the
    matrix products in bfloat16 (torch autocast; weights, optimizer and losses stay float32):
    about 2x faster on CPUs with AVX512-BF16 or AMX, slow on others. token_weight is the weight of
    the token loss against the feature loss (1). ff > 0 sets the head's FFN width (default: the
    target's); with init from a narrower head, widen_ffn keeps its function. layers > 1 gives an
    EAGLE-1/2 head several decoder layers; with init from a head of fewer, the added layers start
    as the identity (LaterLayer), so it too keeps the head's function.

    eagle3 trains an EAGLE-3 head instead (Eagle3Head): the data must have taps (`add_taps`);
    the loss is the token loss alone, as in EAGLE-3 (its output is not the target's feature)."""
    if n_threads:
        torch.set_num_threads(n_threads)
    if bf16 and native_bf16() is False:
        print("warning: --bf16 on a CPU without AVX512-BF16 or AMX: bfloat16 products are emulated here, "
              "about 20x slower than float32; leave --bf16 off", file=sys.stderr)
    run.mkdir(parents=True, exist_ok=True)
    cfg, w_full, e_full = target_config_and_matrices(model)
    if ff:
        cfg = replace(cfg, ff=ff)
    if layers != 1:
        if eagle3:
            raise SystemExit("--layers: an EAGLE-3 head has one layer")
        cfg = replace(cfg, layers=layers)
    if copy_input:
        if eagle3:
            raise SystemExit("--copy-input takes an EAGLE-1/2 head")
        cfg = replace(cfg, copy_input=True)
    rows = build_rows(load(data_dir))
    if eagle3:
        taps = read_meta(data_dirs(data_dir)[0]).get("taps")  # load() checked that every directory agrees
        if rows.taps is None or not taps:
            raise SystemExit(f"{data_dir} has no EAGLE-3 taps: run `python -m pyeagle.train taps` on it first")
        cfg = replace(cfg, taps=tuple(taps))
    n_seqs = len(rows.seq_start) - 1
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_seqs)
    n_val = max(1, n_seqs // 50)
    val_seqs, train_seqs = np.sort(order[:n_val]), order[n_val:]
    fc = FitConfig(model=str(model), draft_vocab=draft_vocab, epochs=epochs, lr=lr, seq=seq, batch=batch, seed=seed,
                   unroll=unroll, init=str(init or ""), bf16=bf16, token_weight=token_weight, ff=ff, eagle3=eagle3, layers=layers, n_rows=int(rows.mask.sum()), n_val_seqs=int(n_val))

    vocab_file = run / "draft_vocab.npy"
    if vocab_file.exists():
        ids = np.load(vocab_file)
    else:
        ids = draft_vocabulary(rows, cfg.vocab, draft_vocab)
        np.save(vocab_file, ids)
    (run / "config.json").write_text(json.dumps({"head": asdict(cfg), "fit": asdict(fc)}, indent=1))
    coverage = float(np.isin(rows.nexttok[rows.mask], ids).mean())
    cut = sum(int(rows.mask[a + seq:b].sum()) for a, b in zip(rows.seq_start[:-1], rows.seq_start[1:]))
    if cut:  # pack() keeps the first `seq` rows of a sequence
        print(f"note: {cut} of {int(rows.mask.sum())} answer rows ({cut / rows.mask.sum():.0%}) lie beyond --seq {seq} "
              f"rows into their sequence and are not trained on; the longest sequence has "
              f"{np.diff(rows.seq_start).max()} rows",
              file=sys.stderr)

    torch.manual_seed(seed)
    emb = torch.from_numpy(e_full)
    w_d = torch.from_numpy(w_full[ids])                    # frozen draft LM head
    to_draft = torch.full((cfg.vocab,), -1, dtype=torch.long)
    to_draft[torch.from_numpy(ids)] = torch.arange(len(ids))
    head = make_head(cfg, torch.from_numpy(target_output_norm(model)) if eagle3 else None)
    if init is not None and Path(init).suffix == ".gguf":
        load_gguf_weights(head, Path(init))
    elif init is not None:
        load_grown(head, widen_ffn(torch.load(Path(init) / "state.pt", weights_only=False)["head"], cfg.ff))
    steps_per_epoch = math.ceil(len(pack(rows, train_seqs, seq)) / batch)
    total = max(1, int(steps_per_epoch * epochs))
    warm = min(200, total // 10 + 1)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    step, log = 0, []
    state_file = run / "state.pt"
    if state_file.exists():
        st = torch.load(state_file, weights_only=False)
        head.load_state_dict(st["head"])
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        step, log = st["step"], st["log"]
        print(f"resuming {run} at step {step}/{total}")
    val_windows = pack(rows, val_seqs, seq)

    def save():
        _save_atomic({"head": head.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                      "step": step, "log": log}, state_file)

    from tqdm import tqdm
    bar = tqdm(total=total, initial=step, unit="step", disable=not progress, smoothing=0.05)
    t_end = time.monotonic() + minutes * 60 if minutes > 0 else float("inf")
    stop_step = min(total, step + steps) if steps > 0 else total
    log_every = max(1, min(50, total // 20))
    t_save = time.monotonic()
    t0, tokens_seen = time.monotonic(), 0
    try:
        while step < stop_step and time.monotonic() < t_end:
            epoch = step // steps_per_epoch
            windows = pack(rows, np.random.default_rng(seed + 1 + epoch).permutation(train_seqs), seq)
            np.random.default_rng(seed + 1000 + epoch).shuffle(windows)
            # an epoch is steps_per_epoch steps whatever this order's packing gives (wrapping around)
            for j in range(step % steps_per_epoch, steps_per_epoch):
                if step >= stop_step or time.monotonic() >= t_end:
                    break
                bt = make_batch(rows, [windows[(j * batch + b) % len(windows)] for b in range(batch)], seq)
                g = torch.Generator().manual_seed(seed * 1_000_003 + step)
                x = bt[head.input_key]
                if not eagle3:  # EAGLE-1/2: noise on the input features
                    x = x + (torch.rand(x.shape, generator=g) * 2 - 1) * NOISE
                sel = bt["w"] > 0  # the loss rows (answer tokens); the vocabulary projection only there
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    ys = head.unroll(head.embed(emb, bt), x, bt["pos"], bt["mask"], unroll)
                    y_true = bt["y"][sel]
                    with torch.no_grad():
                        p_t = torch.softmax((y_true @ w_d.T).float(), dim=-1)
                    loss = 0.0
                    for k, y in enumerate(ys):
                        m = (bt["pos"][sel] >= k).float()
                        n = m.sum().clamp(min=1)
                        logp = torch.log_softmax(head.logits(y[sel], w_d).float(), dim=-1)
                        l_tok = (-(p_t * logp).sum(-1) * m).sum() / n
                        if eagle3:
                            l_feat = torch.zeros(())
                            loss = loss + l_tok
                        else:
                            l_feat = (F.smooth_l1_loss(y[sel].float(), y_true, reduction="none").mean(-1) * m).sum() / n
                            loss = loss + V_WEIGHT * l_feat + token_weight * l_tok
                        if k == 0:
                            first = (l_feat, l_tok, logp, m, n)
                l_feat, l_tok, logp, m, n = first
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(head.parameters(), 0.5)
                opt.step()
                sched.step()
                step += 1
                tokens_seen += int(m.sum().item())
                acc = ((logp.argmax(-1) == p_t.argmax(-1)).float() * m).sum().item() / n.item()
                bar.update(1)
                bar.set_postfix(feat=f"{l_feat.item():.3f}", tok=f"{l_tok.item():.2f}", acc=f"{acc:.2f}",
                                tok_s=f"{tokens_seen / (time.monotonic() - t0):.0f}")
                if step % log_every == 0 or step == 1:
                    log.append({"step": step, "feat": l_feat.item(), "tok": l_tok.item(), "acc": acc})
                if time.monotonic() - t_save > save_every_s:
                    save()
                    t_save = time.monotonic()
    finally:
        bar.close()
        save()
    result = {"step": step, "total": total, "draft_vocab": len(ids), "coverage": coverage,
              "train_rows_per_s": tokens_seen / max(time.monotonic() - t0, 1e-9)}
    if step >= total:
        result["val"] = evaluate(head, rows, val_windows, seq, emb, w_d, to_draft)
        (run / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return result


def widen_ffn(state: dict[str, torch.Tensor], ff: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A head's state with its FFN widened to `ff` units and the same function: the new units'
    gate/up rows are initialised as usual (std 0.02), their down-projection columns are zero.
    Every layer's FFN is widened (the first layer's keys have no prefix, later ones `later.i.`)."""
    old = state["gate_proj.weight"].shape[0]
    if ff <= old:
        if ff < old:
            raise ValueError(f"cannot narrow the FFN from {old} to {ff}")
        return state
    g = torch.Generator().manual_seed(seed)
    out = dict(state)
    for p in [k[:-len("gate_proj.weight")] for k in state if k.endswith("gate_proj.weight")]:
        for k in ("gate_proj.weight", "up_proj.weight"):
            w = state[p + k]
            out[p + k] = torch.cat([w, torch.randn(ff - old, w.shape[1], generator=g, dtype=w.dtype) * 0.02])
        w = state[p + "down_proj.weight"]
        out[p + "down_proj.weight"] = torch.cat([w, torch.zeros(w.shape[0], ff - old, dtype=w.dtype)], dim=1)
    return out


def load_grown(head: EagleHead, state: dict[str, torch.Tensor]) -> None:
    """Loads a head's state into `head`, which may have more layers than the state: those keep
    their identity start (LaterLayer)."""
    missing, unexpected = head.load_state_dict(state, strict=False)
    have = {k.split(".")[1] for k in state if k.startswith("later.")}  # later layers the state has
    missing = [k for k in missing if k != "copy_fc.weight"]  # a copy input starts at zero
    if unexpected or any(not k.startswith("later.") or k.split(".")[1] in have for k in missing):
        raise SystemExit(f"--init does not fit this head: missing {missing}, unexpected {unexpected}")


def load_gguf_weights(head: EagleHead, path: Path) -> None:
    """Sets head's trained weights from an EAGLE-1/2 head GGUF (e.g. the shipped head, to continue
    training it): dequantised, q/k rows permuted back to HF's rotate-half order. The head's LM
    head is not read (training uses the target's output rows)."""
    import gguf

    from ..convert import gguf_tensor_name, unpermute_rows

    if head.cfg.taps:
        raise SystemExit("--init from a GGUF file takes EAGLE-1/2 heads only")
    r = gguf.GGUFReader(str(path))
    tensors = {t.name: t for t in r.tensors}
    cfg = head.cfg
    for name, param in head.eagle_state_dict().items():
        layer = int(name.split(".")[1]) if name.startswith("layers.") else 0
        gname = gguf_tensor_name(name)
        if layer and f"blk.{layer}.attn_q.weight" not in tensors:
            continue  # a head with fewer layers: the added ones keep their identity start
        t = tensors.get(gname)
        if t is None and name == "copy_fc.weight":
            continue  # a head without a copy input: the copy's weights keep their zero start
        if t is None:
            raise SystemExit(f"{path}: no tensor {gname} ({name}): not an EAGLE-1/2 head GGUF")
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(tuple(reversed(t.shape.tolist())))
        if w.shape != tuple(param.shape):
            raise SystemExit(f"{path}: {name} has shape {w.shape}, this head {tuple(param.shape)} (another target or --ff?)")
        n_perm = cfg.n_head if name.endswith("q_proj.weight") else cfg.n_head_kv if name.endswith("k_proj.weight") else 0
        if n_perm:
            w = unpermute_rows(w, n_perm)
        with torch.no_grad():
            param.copy_(torch.from_numpy(np.ascontiguousarray(w)))


def load_head(run: Path) -> EagleHead:
    """The trained head of a run directory (RUN/config.json + RUN/state.pt)."""
    cfg = json.loads((run / "config.json").read_text())["head"]
    head = make_head(HeadConfig(**{**cfg, "taps": tuple(cfg.get("taps", ()))}))
    head.load_state_dict(torch.load(run / "state.pt", weights_only=False)["head"])
    return head


def _held_out(run: Path, data_dir: Path | list[Path], model: str, seq: int, all_seqs: bool):
    """The head of `run` and packed windows of held-out data: the run's own held-out split when
    data_dir is its data, or every sequence with all_seqs (data it never saw)."""
    cfg, w_full, e_full = target_config_and_matrices(model)
    if run.suffix == ".gguf":  # a head file (e.g. the shipped one): its weights and draft vocabulary
        import gguf

        reader = gguf.GGUFReader(str(run))
        names = {t.name for t in reader.tensors}
        head = make_head(replace(cfg, copy_input="copy_fc.weight" in names))
        load_gguf_weights(head, run)
        d2t = next((t for t in reader.tensors if t.name == "d2t"), None)
        ids = np.arange(cfg.vocab) if d2t is None else np.array(d2t.data, np.int64)  # GGUF: target ids
        all_seqs = True
    else:
        head = load_head(run)
        ids = np.load(run / "draft_vocab.npy")
    rows = build_rows(load(data_dir))
    n_seqs = len(rows.seq_start) - 1
    if all_seqs:
        seqs = np.arange(n_seqs)
    else:
        seed = json.loads((run / "config.json").read_text())["fit"]["seed"]
        order = np.random.default_rng(seed).permutation(n_seqs)
        seqs = np.sort(order[:max(1, n_seqs // 50)])
    to_draft = torch.full((head.cfg.vocab,), -1, dtype=torch.long)
    to_draft[torch.from_numpy(ids)] = torch.arange(len(ids))
    return head, rows, pack(rows, seqs, seq), torch.from_numpy(e_full), torch.from_numpy(w_full[ids]), to_draft


def evaluate_run(run: Path, data_dir: Path | list[Path], model: str, depth: int = 4, seq: int = 512, n_threads: int = 0,
                 all_seqs: bool = False, calibrate_too: bool = False) -> dict:
    """Held-out agreement (see evaluate) of the head in `run` on `data_dir`. With calibrate_too,
    also the logit temperature (see evaluate), saved to RUN/calibration.json for export."""
    if n_threads:
        torch.set_num_threads(n_threads)
    head, rows, windows, emb, w_d, to_draft = _held_out(run, data_dir, model, seq, all_seqs)
    out = evaluate(head, rows, windows, seq, emb, w_d, to_draft, depth, calibrate=calibrate_too)
    if calibrate_too and run.suffix != ".gguf":
        (run / "calibration.json").write_text(json.dumps(out["calibration"], indent=1))
    return out


def export(run: Path, model: str, checkpoint_dir: Path, gguf_out: Path, outtype: str = "f16") -> Path:
    """RUN/state.pt -> EAGLE layout (config.json + model.safetensors) -> GGUF."""
    from safetensors.numpy import save_file

    from ..convert import convert

    head = load_head(run)
    cfg = head.cfg
    tensors = {k: v.detach().float().numpy().copy() for k, v in head.eagle_state_dict().items()}
    ids = np.load(run / "draft_vocab.npy")
    cal = run / "calibration.json"
    temp = json.loads(cal.read_text())["temperature"] if cal.exists() else 1.0
    if len(ids) < cfg.vocab or temp != 1.0 or cfg.taps:
        # the draft LM head: the target's output rows of the draft vocabulary, divided by the
        # calibrated temperature (argmax unchanged; the tree's probabilities become honest)
        _, w, _ = target_config_and_matrices(model)
        tensors["lm_head.weight"] = np.ascontiguousarray(w[ids] / np.float32(temp))
        tensors["d2t"] = (ids - np.arange(len(ids))).astype(np.int64)  # EAGLE-3's convention: offsets
    config = {
        "architectures": ["LlamaForCausalLMEagle3" if cfg.taps else "LlamaForCausalLM"], "model_type": "llama",
        "hidden_act": "silu",
        "hidden_size": cfg.hidden, "intermediate_size": cfg.ff, "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_head_kv, "num_hidden_layers": cfg.layers, "rms_norm_eps": cfg.eps,
        "rope_theta": cfg.rope_theta, "rope_scaling": None, "max_position_embeddings": cfg.context_length,
        "vocab_size": cfg.vocab, "bias": True, "torch_dtype": "float32",
    }
    if cfg.copy_input:
        config["copy_key_length"] = COPY_KEY
    if cfg.taps:  # EAGLE-3's own keys
        config.update(bias=False, draft_vocab_size=len(ids), target_hidden_size=cfg.hidden,
                      eagle_aux_hidden_state_layer_ids=list(cfg.taps))
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    (checkpoint_dir / "config.json").write_text(json.dumps(config, indent=2))
    save_file(tensors, str(checkpoint_dir / "model.safetensors"), metadata={"format": "pt"})
    convert(checkpoint_dir, model, gguf_out, outtype)
    if temp != 1.0:
        print(f"logits scaled by 1/{temp:.3f} (RUN/calibration.json)")
    print(f"wrote {checkpoint_dir}/ and {gguf_out} ({gguf_out.stat().st_size / 1e6:.1f} MB)")
    return gguf_out
