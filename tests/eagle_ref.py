"""NumPy reference of the EAGLE-1/2 and EAGLE-3 head forward, straight from the checkpoint.

Independent of the GGUF conversion: it reads the HF-layout checkpoint tensors (rotate-half RoPE,
no permutation) and takes only the token embedding / output matrix from the target GGUF
(dequantized; tied to the embedding when the target has no output.weight). float64 inside.

    ref = EagleRef(checkpoint_dir, target_gguf)
    y, logits = ref.forward(tokens, inputs, positions, mask)

Rows are the whole sequence the head sees: committed prefix rows, then tree rows. mask[i, j] is
True iff row i may attend row j (causal or tree mask; a row must see itself).
EAGLE-1/2: inputs are features [n, h], always through fc; y is the predicted next feature and
logits = W_out y over the target vocabulary (or the head's reduced LM head).
EAGLE-3: each row of inputs is taps [3*h_t] (through fc) or a fed-back hidden state [h] (no fc),
chosen per row by inputs_are_taps (default all taps; mixed rows: pass a list of 1-D arrays); y is the pre-norm output that the next step feeds
back, logits = lm_head(norm(y)) over the draft vocabulary; ref.d2t maps draft rows to target ids.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import gguf
import numpy as np


from pyeagle.convert import merged_config, read_checkpoint  # noqa: E402  (file parsing only; the math is below)


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def target_matrix(reader: gguf.GGUFReader, name: str) -> np.ndarray | None:
    for t in reader.tensors:
        if t.name == name:
            return gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)
    return None


def rope_inv_freq(head_dim: int, theta: float, scaling: dict | None,
                  max_pos: int = 2048) -> tuple[np.ndarray, float, float]:
    """HF's inverse frequencies [head_dim/2], the position scale (linear scaling) and the factor on
    cos/sin (yarn's attention_factor), as transformers' rope_init_fns compute them."""
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    if not scaling:
        return inv_freq, 1.0, 1.0
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "linear":
        return inv_freq, 1.0 / float(scaling["factor"]), 1.0
    if kind == "llama3":  # transformers' _compute_llama3_parameters
        factor = float(scaling.get("factor", 8.0))
        lo, hi = float(scaling.get("low_freq_factor", 1.0)), float(scaling.get("high_freq_factor", 4.0))
        n_orig = float(scaling.get("original_max_position_embeddings", 8192))
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > n_orig / lo, inv_freq / factor, inv_freq)
        smooth = (n_orig / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < n_orig / hi) & ~(wavelen > n_orig / lo)
        return np.where(medium, smoothed, scaled), 1.0, 1.0
    if kind == "yarn":  # transformers' _compute_yarn_parameters (truncate=True), factor as given
        factor = float(scaling["factor"])
        n_orig = float(scaling.get("original_max_position_embeddings") or max_pos)
        beta_fast, beta_slow = float(scaling.get("beta_fast") or 32), float(scaling.get("beta_slow") or 1)
        attention = scaling.get("attention_factor") or (0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0)

        def correction_dim(rotations: float) -> float:
            return head_dim * math.log(n_orig / (rotations * 2 * math.pi)) / (2 * math.log(theta))

        low = max(math.floor(correction_dim(beta_fast)), 0)
        high = min(math.ceil(correction_dim(beta_slow)), head_dim - 1)
        if low == high:
            high += 0.001
        ramp = np.clip((np.arange(head_dim // 2, dtype=np.float64) - low) / (high - low), 0, 1)
        extrapolation = 1 - ramp
        inv = inv_freq / factor * (1 - extrapolation) + inv_freq * extrapolation
        return inv, 1.0, float(attention)
    raise ValueError(f"rope scaling {kind} not in the reference")


def rotate_half(x: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


class EagleRef:
    def __init__(self, checkpoint_dir: str | Path, target_gguf: str | Path):
        ckpt = read_checkpoint(checkpoint_dir)
        cfg = merged_config(ckpt.config)
        w: dict[str, np.ndarray] = {}
        for name, t in ckpt.tensors.items():
            key = name[len("model."):] if name.startswith("model.") else name
            w[key] = t.load().astype(np.int64 if key in ("d2t", "t2d") else np.float64)
        self.is_eagle3 = any(k.startswith("midlayer.") for k in w) or \
            w.get("layers.0.self_attn.q_proj.weight", np.zeros((1, 0))).shape[1] == 2 * cfg["hidden_size"]
        if self.is_eagle3:  # layers.0.* is another publisher's spelling of midlayer.*
            w = {("midlayer." + k[len("layers.0."):] if k.startswith("layers.0.") else k): v for k, v in w.items()}
        self.w = w
        self.h = cfg["hidden_size"]
        self.n_head = cfg["num_attention_heads"]
        self.n_head_kv = cfg.get("num_key_value_heads") or self.n_head
        self.head_dim = cfg.get("head_dim") or self.h // self.n_head
        self.eps = cfg.get("rms_norm_eps", 1e-6)
        self.norm_before_residual = bool(cfg.get("norm_before_residual", False))
        self.inv_freq, self.pos_scale, self.cos_scale = rope_inv_freq(
            self.head_dim, cfg.get("rope_theta", 10000.0), cfg.get("rope_scaling"), cfg.get("max_position_embeddings", 2048))

        reader = gguf.GGUFReader(target_gguf)
        target_embd = target_matrix(reader, "token_embd.weight")
        self.embd = w.get("embed_tokens.weight", target_embd)
        self.d2t: np.ndarray | None = None
        if "lm_head.weight" in w:
            self.w_out = w["lm_head.weight"]
            if "d2t" in w:
                self.d2t = w["d2t"].reshape(-1) + np.arange(w["d2t"].size)
        else:
            out = target_matrix(reader, "output.weight")
            self.w_out = out if out is not None else target_embd
        self.layer = "midlayer." if self.is_eagle3 else "layers.0."
        self.n_layer = 1 if self.is_eagle3 else int(cfg.get("num_hidden_layers") or 1)
        self.copy_key = int(cfg.get("copy_key_length") or 0)

    @staticmethod
    def copy_of(ctx: list[int], max_key: int) -> tuple[int, int]:
        """(copy, k): the longest key ctx[-k:] (k <= max_key) found earlier in ctx, ending before
        the last token, and the token after its latest occurrence; (-1, 0) if none. Brute force."""
        end = len(ctx) - 1
        for k in range(min(max_key, end + 1), 0, -1):
            for j in range(end - 1, k - 2, -1):
                if ctx[j - k + 1:j + 1] == ctx[end - k + 1:]:
                    return ctx[j + 1], k
        return -1, 0

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        y = x @ self.w[name + ".weight"].T
        return y + self.w[name + ".bias"] if name + ".bias" in self.w else y

    def _attention(self, x: np.ndarray, positions: np.ndarray, mask: np.ndarray, layer: str | None = None) -> np.ndarray:
        n, d = x.shape[0], self.head_dim
        p = (layer or self.layer) + "self_attn."
        q = self._linear(x, p + "q_proj").reshape(n, self.n_head, d)
        k = self._linear(x, p + "k_proj").reshape(n, self.n_head_kv, d)
        v = self._linear(x, p + "v_proj").reshape(n, self.n_head_kv, d)
        angles = (positions.astype(np.float64) * self.pos_scale)[:, None] * self.inv_freq[None, :]
        cos = self.cos_scale * np.cos(np.concatenate([angles, angles], axis=-1))[:, None, :]
        sin = self.cos_scale * np.sin(np.concatenate([angles, angles], axis=-1))[:, None, :]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        group = self.n_head // self.n_head_kv
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        scores = np.einsum("ihd,jhd->hij", q, k) / math.sqrt(d)
        scores = np.where(mask[None], scores, -np.inf)
        scores -= scores.max(axis=-1, keepdims=True)
        prob = np.exp(scores)
        prob /= prob.sum(axis=-1, keepdims=True)
        out = np.einsum("hij,jhd->ihd", prob, v).reshape(n, self.n_head * d)
        return self._linear(out, p + "o_proj")

    def _mlp(self, x: np.ndarray, layer: str | None = None) -> np.ndarray:
        m = (layer or self.layer) + "mlp."
        return self._linear(silu(self._linear(x, m + "gate_proj")) * self._linear(x, m + "up_proj"), m + "down_proj")

    def forward(self, tokens, inputs, positions, mask, inputs_are_taps=None) -> tuple[np.ndarray, np.ndarray]:
        """-> (y [n, h], logits [n, Vd]) as float32."""
        tokens = np.asarray(tokens, dtype=np.int64)
        positions = np.asarray(positions)
        mask = np.asarray(mask, dtype=bool)
        n = tokens.shape[0]
        assert len(inputs) == n and positions.shape == (n,) and mask.shape == (n, n)
        assert mask[np.arange(n), np.arange(n)].all(), "every row must attend itself"
        e = self.embd[tokens]
        L = self.layer
        if not self.is_eagle3:
            y = self._linear(np.concatenate([e, np.asarray(inputs, dtype=np.float64)], axis=-1), "fc")
            if self.copy_key:  # the copy input: each row over the tokens it sees (its mask row), in order
                h = self.h
                for i in range(n):
                    c, k = self.copy_of([int(t) for t in tokens[mask[i]]], self.copy_key)
                    if k:
                        y[i] += self.w["copy_fc.weight"][:, (k - 1) * h:k * h] @ self.embd[c]
            for i in range(self.n_layer):  # EAGLE-1's cnets.py: layers after the first normalise their input
                L = f"layers.{i}."
                x = rms_norm(y, self.w[L + "input_layernorm.weight"], self.eps) if i else y
                a = y + self._attention(x, positions, mask, L)
                y = a + self._mlp(rms_norm(a, self.w[L + "post_attention_layernorm.weight"], self.eps), L)
            logits = y @ self.w_out.T
            return y.astype(np.float32), logits.astype(np.float32)

        taps = np.ones(n, dtype=bool) if inputs_are_taps is None else np.asarray(inputs_are_taps, dtype=bool)
        rows = [np.asarray(r, dtype=np.float64) for r in inputs]
        fc = self.w["fc.weight"]
        for i, r in enumerate(rows):
            assert r.shape == ((fc.shape[1],) if taps[i] else (self.h,)), f"row {i}: width {r.shape}"
        g = np.stack([fc @ r if taps[i] else r for i, r in enumerate(rows)])
        e_n = rms_norm(e, self.w[L + "input_layernorm.weight"], self.eps)
        g_n = rms_norm(g, self.w[L + "hidden_norm.weight"], self.eps)
        residual = g_n if self.norm_before_residual else g
        a = residual + self._attention(np.concatenate([e_n, g_n], axis=-1), positions, mask)
        y = a + self._mlp(rms_norm(a, self.w[L + "post_attention_layernorm.weight"], self.eps))
        logits = rms_norm(y, self.w["norm.weight"], self.eps) @ self.w_out.T
        return y.astype(np.float32), logits.astype(np.float32)
