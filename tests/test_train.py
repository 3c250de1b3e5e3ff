"""pyeagle.train on a tiny target: prompt set, resumable data, a few training steps, resumable
training, and the exported head computing exactly what the trainer computed (PyTorch head ==
NumPy reference on the exported checkpoint == the ggml head in the converted GGUF)."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="pyeagle.train needs PyTorch (pip install 'pyeagle[train]')")

from eagle_ref import EagleRef  # noqa: E402

from pyeagle import DraftHead, Target  # noqa: E402
from pyeagle.train import data as tdata  # noqa: E402
from pyeagle.train import fit as tfit  # noqa: E402
from pyeagle.train.prompts import build_prompts  # noqa: E402


def test_prompt_set_is_deterministic_diverse_and_unique():
    a, b = build_prompts(700, seed=0), build_prompts(700, seed=0)
    assert a == b and len(a) == 700 and len(set(a)) == 700
    assert build_prompts(700, seed=1) != a
    text = "\n".join(a)
    for marker in ("function", "Summarize", "poem", "What is", "Solve for x", "Pretend you are"):
        assert marker in text


@pytest.fixture(scope="module")
def tiny_data(tiny_f32, tmp_path_factory):
    out = tmp_path_factory.mktemp("sd")
    left = tdata.generate(out, str(tiny_f32), n_prompts=12, chunk=3, max_new=24, progress=False)
    assert left == 0
    return out


def test_data_chunks_are_resumable_and_deterministic(tiny_f32, tiny_data, tmp_path):
    chunks = sorted(tiny_data.glob("chunk-*.npz"))
    assert len(chunks) == 4
    c = np.load(chunks[1])
    assert len(c["offsets"]) == 4 and c["features"].shape == (len(c["tokens"]), 64)
    assert c["features"].dtype == np.float16 and (c["n_prompt"] > 0).all()
    # the features are the target's: re-scoring sequence 0 gives the same rows
    t = Target(str(tiny_f32), n_ctx=512)
    t.features = True
    seq = [int(x) for x in c["tokens"][c["offsets"][0]:c["offsets"][1]]]
    t.prefill(seq[:-1])
    np.testing.assert_allclose(t.hidden(), c["features"][:len(seq) - 1].astype(np.float32), atol=2e-2, rtol=2e-2)
    # an interrupted run (a chunk missing) continues with exactly that chunk, identical content
    import shutil
    copy = tmp_path / "sd"
    shutil.copytree(tiny_data, copy)
    (copy / chunks[2].name).unlink()
    assert tdata.generate(copy, str(tiny_f32), n_prompts=12, chunk=3, max_new=24, progress=False) == 0
    again = np.load(copy / chunks[2].name)
    ref = np.load(chunks[2])
    for k in ("tokens", "offsets", "n_prompt", "features"):
        np.testing.assert_array_equal(again[k], ref[k])
    # another recipe in the same directory is refused rather than mixed in
    with pytest.raises(SystemExit, match="made with"):
        tdata.generate(copy, str(tiny_f32), n_prompts=12, chunk=3, max_new=99, progress=False)


def fit_kw(tiny_f32):
    return dict(model=str(tiny_f32), draft_vocab=100, epochs=2, lr=1e-3, seq=64, batch=2, seed=3, n_threads=1,
                progress=False)


def test_training_resumes_exactly(tiny_f32, tiny_data, tmp_path):
    whole = tfit.fit(tiny_data, tmp_path / "a", **fit_kw(tiny_f32))
    assert whole["step"] == whole["total"] >= 4
    part = tfit.fit(tiny_data, tmp_path / "b", steps=3, **fit_kw(tiny_f32))
    assert part["step"] == 3 and "val" not in part
    rest = tfit.fit(tiny_data, tmp_path / "b", **fit_kw(tiny_f32))
    assert rest["step"] == whole["step"]
    a = torch.load(tmp_path / "a" / "state.pt", weights_only=False)["head"]
    b = torch.load(tmp_path / "b" / "state.pt", weights_only=False)["head"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


@pytest.mark.parametrize("unroll,bf16", [(1, False), (3, True)])
def test_training_lowers_the_loss(tiny_f32, tiny_data, tmp_path, unroll, bf16):
    kw = fit_kw(tiny_f32) | dict(epochs=8, unroll=unroll, bf16=bf16)
    res = tfit.fit(tiny_data, tmp_path / "r", **kw)
    log = torch.load(tmp_path / "r" / "state.pt", weights_only=False)["log"]
    assert log and log[-1]["feat"] < log[0]["feat"]
    chain = res["val"]["chain"]
    assert len(chain) == 4 and all(a >= b for a, b in zip(chain, chain[1:]))
    assert res["val"]["tau_chain"] == pytest.approx(1 + sum(chain), abs=1e-3)


def test_unroll_drafts_as_inference_does():
    """Step s of EagleHead.unroll at row t equals drafting the chain from true row t-s one node
    at a time: the true rows, then each draft fed back with the previous output as its feature."""
    cfg = tfit.HeadConfig(hidden=32, n_head=4, n_head_kv=2, ff=48, eps=1e-5, rope_theta=10000.0, vocab=50,
                          context_length=64)
    torch.manual_seed(0)
    head = tfit.EagleHead(cfg)
    for prm in head.parameters():  # away from the identity start, so each step differs
        prm.data += 0.1 * torch.randn_like(prm)
    lens = [7, 5]
    L = sum(lens)
    seg = torch.cat([torch.full((n,), i) for i, n in enumerate(lens)])
    pos = torch.cat([torch.arange(n) for n in lens])[None]
    mask = ((seg[:, None] == seg[None, :]) & torch.tril(torch.ones(L, L, dtype=torch.bool)))[None]
    e, f = torch.randn(1, L, 32), torch.randn(1, L, 32)
    with torch.no_grad():
        ys = head.unroll(e, f, pos, mask, 3)
        torch.testing.assert_close(ys[0], head(e, f, pos, mask))
        checked = 0
        for s in (1, 2):
            for t in range(L):
                if pos[0, t] < s:
                    continue
                a = t - int(pos[0, t])  # the sequence's first row
                idx = list(range(a, t - s + 1))
                ee, ff = e[:, idx], f[:, idx]
                for j in range(1, s + 1):
                    n = ee.shape[1]
                    out = head(ee, ff, pos[:, a:a + n], torch.tril(torch.ones(1, n, n, dtype=torch.bool)))
                    ee = torch.cat([ee, e[:, t - s + j:t - s + j + 1]], dim=1)
                    ff = torch.cat([ff, out[:, -1:]], dim=1)
                n = ee.shape[1]
                out = head(ee, ff, pos[:, a:a + n], torch.tril(torch.ones(1, n, n, dtype=torch.bool)))
                torch.testing.assert_close(ys[s][0, t], out[0, -1], rtol=1e-4, atol=1e-5)
                checked += 1
        assert checked == (7 - 1) + (5 - 1) + (7 - 2) + (5 - 2)


def trained_head(run, tiny_f32):
    """The PyTorch head of a run, its draft vocabulary and the target's output / embedding matrices."""
    _, w, e = tfit.target_config_and_matrices(str(tiny_f32))
    return tfit.load_head(run), np.load(run / "draft_vocab.npy"), w, e


def test_exported_head_computes_what_was_trained(tiny_f32, tiny_data, tmp_path):
    run = tmp_path / "run"
    tfit.fit(tiny_data, run, **fit_kw(tiny_f32))
    ckpt, out = tmp_path / "eagle", tmp_path / "head.gguf"
    tfit.export(run, str(tiny_f32), ckpt, out, outtype="f32")
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["hidden_size"] == 64 and cfg["num_hidden_layers"] == 1

    head, ids, w, e = trained_head(run, tiny_f32)

    rng = np.random.default_rng(0)
    n = 9
    toks = rng.integers(5, 400, n)
    feats = rng.standard_normal((n, 64)).astype(np.float32)
    pos = np.arange(n)
    mask = np.tril(np.ones((n, n), dtype=bool))
    with torch.no_grad():
        y_t = head(torch.from_numpy(e[toks])[None], torch.from_numpy(feats)[None], torch.from_numpy(pos)[None],
                   torch.from_numpy(mask)[None])[0].numpy()
    logits_t = y_t @ w[ids].T

    y_ref, logits_ref = EagleRef(ckpt, tiny_f32).forward(toks, feats, pos, mask)
    np.testing.assert_allclose(y_t, y_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits_t, logits_ref, rtol=1e-4, atol=1e-3)

    tgt = Target(str(tiny_f32), n_ctx=256)
    d = DraftHead(str(out), tgt, n_ctx=256, n_batch=64)
    assert d.n_draft_vocab == len(ids)
    d.prefix([int(x) for x in toks], feats, 0)
    np.testing.assert_allclose(d.y(), y_t, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(d.logits()[-1], logits_t[-1], rtol=1e-3, atol=1e-3)
    assert [d.to_target(i) for i in (0, len(ids) - 1)] == [int(ids[0]), int(ids[-1])]


def test_calibrated_temperature_is_exported(tiny_f32, tiny_data, tmp_path):
    run = tmp_path / "run"
    tfit.fit(tiny_data, run, **fit_kw(tiny_f32))
    res = tfit.evaluate_run(run, tiny_data, str(tiny_f32), depth=3, seq=64, all_seqs=True, calibrate_too=True)
    cal = json.loads((run / "calibration.json").read_text())
    assert cal == res["calibration"] and cal["rows"] > 0
    assert 0.5 <= cal["temperature"] <= 4.0 and cal["nll"] <= cal["nll_at_1"]
    assert res["tau_chain"] == pytest.approx(1 + sum(res["chain"]), abs=1e-3)

    (run / "calibration.json").write_text(json.dumps({"temperature": 2.0}))
    ckpt, out = tmp_path / "eagle", tmp_path / "head.gguf"
    tfit.export(run, str(tiny_f32), ckpt, out, outtype="f32")
    head, ids, w, e = trained_head(run, tiny_f32)
    rng = np.random.default_rng(1)
    toks, feats = rng.integers(5, 400, 6), rng.standard_normal((6, 64)).astype(np.float32)
    with torch.no_grad():
        y = head(torch.from_numpy(e[toks])[None], torch.from_numpy(feats)[None], torch.arange(6)[None],
                 torch.tril(torch.ones(1, 6, 6, dtype=torch.bool)))[0].numpy()
    tgt = Target(str(tiny_f32), n_ctx=256)
    d = DraftHead(str(out), tgt, n_ctx=256, n_batch=64)
    d.prefix([int(x) for x in toks], feats, 0)
    np.testing.assert_allclose(d.logits()[-1], (y @ w[ids].T)[-1] / 2.0, rtol=1e-3, atol=1e-3)
