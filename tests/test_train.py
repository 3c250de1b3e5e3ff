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
from pyeagle.train.prompts import build_conversations, build_prompts, load_conversations  # noqa: E402
from pyeagle.train.varied import build_varied_prompts, shared_runs, vocabulary_words  # noqa: E402


def test_native_bf16_reads_the_cpu_flags():
    flags = "processor\t: 0\nflags\t\t: fpu sse2 avx2 {}\nbogomips\t: 1\n"
    assert tfit.native_bf16(flags.format("avx512f avx512_bf16")) is True
    assert tfit.native_bf16(flags.format("amx_tile amx_bf16")) is True
    assert tfit.native_bf16(flags.format("avx512f avx512bw")) is False
    assert tfit.native_bf16("no flags line here") is None


def test_prompt_set_is_deterministic_diverse_and_unique():
    a, b = build_prompts(700, seed=0), build_prompts(700, seed=0)
    assert a == b and len(a) == 700 and len(set(a)) == 700
    assert build_prompts(700, seed=1) != a
    text = "\n".join(a)
    for marker in ("function", "Summarize", "poem", "What is", "Solve for x", "Pretend you are"):
        assert marker in text


def test_varied_prompt_set_is_deterministic_unique_and_covers_its_kinds():
    words = ["lantern", "harvest", "compass", "meadow"]
    a, b = build_varied_prompts(1500, 3, words), build_varied_prompts(1500, 3, words)
    assert a == b and len(a) == 1500 and len(set(a)) == 1500
    assert build_varied_prompts(1500, 4, words) != a
    text = "\n".join(a)
    for marker in ("Find the bug", "Extract every person", "Pretend you are", "Solve the system", "Write a",
                   "lantern", "What were the causes"):
        assert marker in text


def test_overlap_check_finds_shared_word_runs():
    theirs = ["Compose an engaging essay about the rivers of the north and their many bridges."]
    mine = ["Please compose an engaging essay about the rivers of the north today.", "Write a haiku about tea."]
    assert shared_runs(mine, theirs, k=8) == [(0, "an engaging essay about the rivers of the")]
    assert shared_runs(mine, theirs, k=12) == []


def test_built_in_prompt_sets_share_no_8_word_run_with_mt_bench():
    from pyeagle import bench
    try:
        mt = [t for line in open(bench.mtbench_file()) for t in json.loads(line)["turns"]]
    except Exception as e:  # noqa: BLE001 (no network and no cached copy)
        pytest.skip(f"MT-bench questions not available: {e}")
    words = vocabulary_words(lambda i: ["", " lantern", " harvest", "xy"][i], 4)
    assert words == ["harvest", "lantern"]
    assert shared_runs(build_varied_prompts(3000, 3, words), mt) == []
    assert shared_runs([t for c in build_conversations(3000, 1, 0.5) for t in c], mt) == []


def test_load_conversations_reads_prompts_and_turns(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "hi"}\n\n{"turns": ["a", "b"], "category": "x"}\n')
    assert load_conversations(f) == [["hi"], ["a", "b"]]
    f.write_text('{"prompt": "hi"}\n{"question": "no"}\n')
    with pytest.raises(ValueError, match=":2:"):
        load_conversations(f)
    f.write_text("not json\n")
    with pytest.raises(ValueError, match="not JSON"):
        load_conversations(f)


def test_data_from_a_prompts_file_answers_every_turn(tiny_f32, tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"turns": ["the tree", "and the code"]}\n{"prompt": "the model"}\n{"prompt": "unused"}\n')
    out = tmp_path / "sd"
    assert tdata.generate(out, str(tiny_f32), n_prompts=2, chunk=2, max_new=6, slots=2, prompts=f,
                          progress=False) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["prompts"] == "p.jsonl" and meta["n_prompts"] == 2 and len(meta["prompts_sha256"]) == 64
    c = np.load(out / "chunk-00000.npz")
    runs = [int((np.diff(np.r_[0, c["answer"][a:b].astype(int)]) == 1).sum())
            for a, b in zip(c["offsets"][:-1], c["offsets"][1:])]
    assert runs == [2, 1]
    f.write_text('{"prompt": "changed"}\n')
    with pytest.raises(SystemExit, match="holds data made with"):
        tdata.generate(out, str(tiny_f32), n_prompts=2, chunk=2, max_new=6, slots=2, prompts=f, progress=False)


def test_data_with_the_varied_prompt_set(tiny_f32, tmp_path):
    out = tmp_path / "sd"
    assert tdata.generate(out, str(tiny_f32), n_prompts=4, chunk=2, max_new=6, slots=4, prompt_set="varied",
                          follow_ups=0.5, progress=False) == 0
    assert json.loads((out / "meta.json").read_text())["prompt_set"] == "varied"
    assert len(list(out.glob("chunk-*.npz"))) == 2


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


def test_several_data_directories_load_in_order_and_must_share_a_target(tiny_data, tmp_path):
    import shutil
    other = tmp_path / "round2"
    other.mkdir()
    shutil.copy(tiny_data / "chunk-00001.npz", other / "chunk-00000.npz")
    shutil.copy(tiny_data / "meta.json", other / "meta.json")
    one, both = tdata.load(tiny_data), tdata.load([tiny_data, other])
    assert len(both) == len(one) + 1
    np.testing.assert_array_equal(both[-1]["tokens"], one[1]["tokens"])
    meta = json.loads((tiny_data / "meta.json").read_text())
    (other / "meta.json").write_text(json.dumps({**meta, "model": "another.gguf"}))
    with pytest.raises(SystemExit, match="do not mix"):
        tdata.load([tiny_data, other])
    with pytest.raises(FileNotFoundError, match="no chunk"):
        tdata.load([tiny_data, tmp_path])


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


@pytest.mark.parametrize("unroll,bf16,eagle3", [(1, False, False), (3, True, False), (3, True, True)])
def test_training_lowers_the_loss(tiny_f32, tiny_data, tiny_taps, tmp_path, unroll, bf16, eagle3):
    kw = fit_kw(tiny_f32) | dict(epochs=8, unroll=unroll, bf16=bf16, eagle3=eagle3)
    res = tfit.fit(tiny_taps if eagle3 else tiny_data, tmp_path / "r", **kw)
    log = torch.load(tmp_path / "r" / "state.pt", weights_only=False)["log"]
    key = "tok" if eagle3 else "feat"  # EAGLE-3 has the token loss only
    assert log and log[-1][key] < log[0][key]
    chain = res["val"]["chain"]
    assert len(chain) == 4 and all(a >= b for a, b in zip(chain, chain[1:]))
    assert res["val"]["tau_chain"] == pytest.approx(1 + sum(chain), abs=1e-3)


def small_head(eagle3: bool, layers: int = 1):
    """A random small head away from its initialisation (so that each drafting step differs)."""
    cfg = tfit.HeadConfig(hidden=32, n_head=4, n_head_kv=2, ff=48, eps=1e-5, rope_theta=10000.0, vocab=50,
                          context_length=64, taps=(0, 1, 1) if eagle3 else (), layers=layers)
    torch.manual_seed(0)
    head = tfit.make_head(cfg)
    for prm in head.parameters():
        prm.data += 0.1 * torch.randn_like(prm)
    return head


@pytest.mark.parametrize("eagle3,layers", [(False, 1), (True, 1), (False, 2)])
def test_unroll_drafts_as_inference_does(eagle3, layers):
    """Step s of EagleHead.unroll at row t equals drafting the chain from true row t-s one node
    at a time: the true rows (the target's features, EAGLE-3: taps), then each draft fed back
    with the previous output as its input; with several layers, each attends to its own K/V."""
    head = small_head(eagle3, layers)
    lens = [7, 5]
    L = sum(lens)
    seg = torch.cat([torch.full((n,), i) for i, n in enumerate(lens)])
    pos = torch.cat([torch.arange(n) for n in lens])[None]
    mask = ((seg[:, None] == seg[None, :]) & torch.tril(torch.ones(L, L, dtype=torch.bool)))[None]
    e, x = torch.randn(1, L, 32), torch.randn(1, L, 96 if eagle3 else 32)

    def draft(ee, x_true, fed, p):
        """The head over true rows then chain rows (inputs fed back), causal: its last output."""
        a, r = head._inputs(ee[:, :x_true.shape[1]], x_true, True)
        if fed:
            a2, r2 = head._inputs(ee[:, x_true.shape[1]:], torch.cat(fed, dim=1), False)
            a, r = torch.cat([a, a2], dim=1), torch.cat([r, r2], dim=1)
        n = a.shape[1]
        causal = torch.tril(torch.ones(1, n, n, dtype=torch.bool))
        return head._through_layers(a, r, p[:, :n], causal, [[] for _ in range(layers)])[:, -1:]

    with torch.no_grad():
        ys = head.unroll(e, x, pos, mask, 3)
        torch.testing.assert_close(ys[0], head(e, x, pos, mask))
        checked = 0
        for s in (1, 2):
            for t in range(L):
                if pos[0, t] < s:
                    continue
                a = t - int(pos[0, t])  # the sequence's first row
                x_true, fed = x[:, a:t - s + 1], []
                for j in range(1, s + 1):
                    fed.append(draft(e[:, a:t - s + j], x_true, fed, pos[:, a:]))
                out = draft(e[:, a:t + 1], x_true, fed, pos[:, a:])
                torch.testing.assert_close(ys[s][0, t], out[0, -1], rtol=1e-4, atol=1e-5)
                checked += 1
        assert checked == (7 - 1) + (5 - 1) + (7 - 2) + (5 - 2)


def test_copy_tokens_match_a_brute_force_search():
    """copy_tokens (incremental) against EagleRef.copy_of (brute force over each prefix)."""
    rng = np.random.default_rng(3)
    for n, pool in [(1, 3), (40, 3), (60, 6), (30, 50)]:
        toks = rng.integers(0, pool, n)
        copy, key = tfit.copy_tokens(toks)
        want = [EagleRef.copy_of([int(t) for t in toks[:i + 1]], tfit.COPY_KEY) for i in range(n)]
        assert list(zip(copy.tolist(), key.tolist())) == want
    assert tfit.copy_tokens(np.array([5, 6, 7, 5, 6, 8, 5, 6, 7]))[0].tolist() == [-1, -1, -1, 6, 7, -1, 6, 8, 5]


def test_widening_the_ffn_keeps_the_function():
    cfg = tfit.HeadConfig(hidden=32, n_head=4, n_head_kv=2, ff=48, eps=1e-5, rope_theta=10000.0, vocab=50,
                          context_length=64)
    torch.manual_seed(0)
    narrow = tfit.EagleHead(cfg)
    for prm in narrow.parameters():
        prm.data += 0.1 * torch.randn_like(prm)
    wide = tfit.EagleHead(tfit.replace(cfg, ff=80))
    wide.load_state_dict(tfit.widen_ffn(narrow.state_dict(), 80))
    assert wide.gate_proj.weight.shape == (80, 32) and wide.gate_proj.weight[48:].abs().sum() > 0
    e, f = torch.randn(1, 6, 32), torch.randn(1, 6, 32)
    pos, mask = torch.arange(6)[None], torch.tril(torch.ones(1, 6, 6, dtype=torch.bool))
    with torch.no_grad():
        torch.testing.assert_close(wide(e, f, pos, mask), narrow(e, f, pos, mask))
    with pytest.raises(ValueError, match="narrow"):
        tfit.widen_ffn(wide.state_dict(), 48)


def test_added_layers_keep_the_function():
    """A head grown to more layers (fit --layers with --init) computes what it did; its state
    names the layers as EAGLE-1's cnets.py does."""
    one = small_head(False)
    two = tfit.EagleHead(tfit.replace(one.cfg, layers=2))
    tfit.load_grown(two, one.state_dict())
    e, f = torch.randn(1, 6, 32), torch.randn(1, 6, 32)
    pos, mask = torch.arange(6)[None], torch.tril(torch.ones(1, 6, 6, dtype=torch.bool))
    with torch.no_grad():
        torch.testing.assert_close(two(e, f, pos, mask), one(e, f, pos, mask))
        torch.testing.assert_close(two.unroll(e, f, pos, mask, 3)[2], one.unroll(e, f, pos, mask, 3)[2])
    names = set(two.eagle_state_dict())
    assert {"layers.1.input_layernorm.weight", "layers.1.self_attn.q_proj.weight",
            "layers.1.mlp.down_proj.weight"} <= names and len(names) == len(one.eagle_state_dict()) + 9
    with pytest.raises(SystemExit, match="does not fit"):
        tfit.load_grown(one, two.state_dict())
    for prm in two.later.parameters():  # a trained second layer
        prm.data += 0.1 * torch.randn_like(prm)
    wide = tfit.EagleHead(tfit.replace(two.cfg, ff=80))  # both layers widened, the function kept
    wide.load_state_dict(tfit.widen_ffn(two.state_dict(), 80))
    assert wide.later[0].gate_proj.weight.shape == (80, 32)
    with torch.no_grad():
        torch.testing.assert_close(wide(e, f, pos, mask), two(e, f, pos, mask))
        assert not torch.allclose(two(e, f, pos, mask), one(e, f, pos, mask))


def test_eagle3_head_starts_by_passing_the_last_layer_output_through():
    """With tap n_layer (the last layer's output, the EAGLE-1/2 feature) fc starts as that tap's
    identity plus noise, as the EAGLE-1/2 head's fc starts on the feature; other taps start as noise."""
    cfg = tfit.HeadConfig(hidden=32, n_head=4, n_head_kv=2, ff=48, eps=1e-5, rope_theta=10000.0, vocab=50,
                          context_length=64, taps=(0, 1, 2), n_layer=2)
    torch.manual_seed(0)
    fc = tfit.Eagle3Head(cfg).fc.weight.detach()
    assert (fc[:, 64:] - torch.eye(32)).abs().max() < 0.15 and fc[:, :64].abs().max() < 0.15
    plain = tfit.Eagle3Head(tfit.replace(cfg, taps=(0, 1, 1))).fc.weight.detach()
    assert plain.abs().max() < 0.15


def trained_head(run, tiny_f32):
    """The PyTorch head of a run, its draft vocabulary and the target's output / embedding matrices."""
    _, w, e = tfit.target_config_and_matrices(str(tiny_f32))
    return tfit.load_head(run), np.load(run / "draft_vocab.npy"), w, e


@pytest.fixture(scope="module")
def tiny_taps(tiny_f32, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("sd3")
    assert tdata.add_taps(tiny_data, out, str(tiny_f32), layers=[0, 1, 2], progress=False) == 0
    return out


def test_taps_are_the_targets_layer_inputs(tiny_f32, tiny_data, tiny_taps):
    src, c = np.load(sorted(tiny_data.glob("chunk-*.npz"))[2]), np.load(sorted(tiny_taps.glob("chunk-*.npz"))[2])
    for k in ("tokens", "features", "offsets", "n_prompt"):
        np.testing.assert_array_equal(c[k], src[k])
    assert c["taps"].shape == (len(c["tokens"]), 3 * 64) and c["taps"].dtype == np.float16
    t = Target(str(tiny_f32), n_ctx=512, tap_layers=[0, 1, 2])
    t.features = True
    a, b = int(c["offsets"][1]), int(c["offsets"][2])
    t.prefill([int(x) for x in c["tokens"][a:b - 1]])
    np.testing.assert_allclose(t.taps(), c["taps"][a:b - 1].astype(np.float32), atol=2e-2, rtol=2e-2)
    assert json.loads((tiny_taps / "meta.json").read_text())["taps"] == [0, 1, 2]
    # data without taps cannot train an EAGLE-3 head
    with pytest.raises(SystemExit, match="taps"):
        tfit.fit(tiny_data, tiny_taps.parent / "no-taps", eagle3=True, **fit_kw(tiny_f32))


@pytest.mark.parametrize("kind", ["eagle", "wide", "eagle3", "two_layers", "copy"])
def test_exported_head_computes_what_was_trained(tiny_f32, tiny_data, tiny_taps, tmp_path, kind):
    """Also for a head whose FFN is wider than the target's (--ff, from a narrower --init run),
    for an EAGLE-3 head (taps in, midlayer/norm/lm_head out), for a head of two layers
    (--layers, grown from a one-layer --init run, then trained), and for a copy-input head
    (--copy-input, from a plain --init run) on tokens that repeat."""
    run = tmp_path / "run"
    if kind == "wide":
        tfit.fit(tiny_data, tmp_path / "narrow", **fit_kw(tiny_f32))
        tfit.fit(tiny_data, run, init=tmp_path / "narrow", ff=200, **fit_kw(tiny_f32))
    elif kind == "two_layers":
        tfit.fit(tiny_data, tmp_path / "one", **fit_kw(tiny_f32))
        tfit.fit(tiny_data, run, init=tmp_path / "one", layers=2, **fit_kw(tiny_f32))
        st = torch.load(run / "state.pt", weights_only=False)  # a second layer far from the identity
        g = torch.Generator().manual_seed(0)
        for k, v in st["head"].items():
            if k.startswith("later."):
                v += 0.1 * torch.randn(v.shape, generator=g)
        torch.save(st, run / "state.pt")
    elif kind == "eagle3":
        res = tfit.fit(tiny_taps, run, eagle3=True, unroll=2, **fit_kw(tiny_f32))
        assert res["val"]["top1"] >= 0
    elif kind == "copy":
        tfit.fit(tiny_data, tmp_path / "plain", **fit_kw(tiny_f32))
        tfit.fit(tiny_data, run, init=tmp_path / "plain", copy_input=True, **fit_kw(tiny_f32))
        st = torch.load(run / "state.pt", weights_only=False)  # copy weights far from their zero start
        st["head"]["copy_fc.weight"] += 0.1 * torch.randn(st["head"]["copy_fc.weight"].shape,
                                                          generator=torch.Generator().manual_seed(0))
        torch.save(st, run / "state.pt")
    else:
        tfit.fit(tiny_data, run, **fit_kw(tiny_f32))
    ckpt, out = tmp_path / "eagle", tmp_path / "head.gguf"
    tfit.export(run, str(tiny_f32), ckpt, out, outtype="f32")
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["hidden_size"] == 64 and cfg["num_hidden_layers"] == (2 if kind == "two_layers" else 1)
    assert cfg["intermediate_size"] == (200 if kind == "wide" else tfit.target_config_and_matrices(str(tiny_f32))[0].ff)

    head, ids, w, e = trained_head(run, tiny_f32)
    assert isinstance(head, tfit.Eagle3Head) == (kind == "eagle3")

    rng = np.random.default_rng(0)
    n = 9
    toks = rng.integers(5, 9 if kind == "copy" else 400, n)
    feats = rng.standard_normal((n, 3 * 64 if kind == "eagle3" else 64)).astype(np.float32)
    pos = np.arange(n)
    mask = np.tril(np.ones((n, n), dtype=bool))
    copy, key = tfit.copy_tokens(toks)
    if kind == "copy":
        assert cfg["copy_key_length"] == tfit.COPY_KEY and (key >= 2).any()
    bt = {k: torch.from_numpy(v)[None] for k, v in dict(tok=toks, copy=copy, copy_key=key).items()}
    with torch.no_grad():
        y_t = head(head.embed(torch.from_numpy(e), bt), torch.from_numpy(feats)[None], torch.from_numpy(pos)[None],
                   torch.from_numpy(mask)[None])[0]
        logits_t = head.logits(y_t, torch.from_numpy(w[ids])).numpy()
        y_t = y_t.numpy()

    y_ref, logits_ref = EagleRef(ckpt, tiny_f32).forward(toks, feats, pos, mask)
    np.testing.assert_allclose(y_t, y_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits_t, logits_ref, rtol=1e-4, atol=1e-3)

    tgt = Target(str(tiny_f32), n_ctx=256)
    d = DraftHead(str(out), tgt, n_ctx=256, n_batch=64)
    assert d.n_draft_vocab == len(ids)
    assert d.copy_key == (tfit.COPY_KEY if kind == "copy" else 0)
    if kind == "eagle3":
        assert list(d.tap_layers) == [0, 1, 2]
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


def test_multi_turn_data_marks_the_answers_and_holds_the_targets_features(tiny_f32, tmp_path):
    """Conversations with a second turn, several decoded at once: every token marked as an answer
    is the target's greedy choice after what precedes it (first turn, second turn), and the
    features are the target's own rows for the whole conversation, as one sequence."""
    out = tmp_path / "sd"
    assert tdata.generate(out, str(tiny_f32), n_prompts=6, chunk=3, max_new=12, follow_ups=1.0, slots=4,
                          progress=False) == 0
    t = Target(str(tiny_f32), n_ctx=512)
    t.features = True
    n_runs = []
    for f in sorted(out.glob("chunk-*.npz")):
        c = np.load(f)
        assert c["answer"].shape == c["tokens"].shape
        for s in range(len(c["offsets"]) - 1):
            a, b = int(c["offsets"][s]), int(c["offsets"][s + 1])
            seq, ans = [int(x) for x in c["tokens"][a:b]], c["answer"][a:b]
            assert not ans[:int(c["n_prompt"][s])].any() and ans[-1] == 1
            n_runs.append(int((np.diff(ans.astype(int)) == 1).sum()))
            t.truncate(0)
            t.prefill(seq[:-1])
            np.testing.assert_allclose(t.hidden(), c["features"][a:b - 1].astype(np.float32), atol=2e-2, rtol=2e-2)
            t.truncate(0)
            for i, tok in enumerate(seq[:-1]):
                t.decode(tok)
                if ans[i + 1]:
                    assert int(np.argmax(t.last_logits())) == seq[i + 1]
    assert len(n_runs) == 6 and max(n_runs) == 2  # second turns were answered


def test_data_can_record_eagle3_taps_in_the_same_pass(tiny_f32, tmp_path):
    """taps=[0, 1, n_layer]: two layer inputs and the last layer's output, as a target with those
    taps computes them for the whole sequence."""
    n_layer = Target(str(tiny_f32), n_ctx=64).n_layer
    layers = [0, 1, n_layer]
    out = tmp_path / "sd"
    assert tdata.generate(out, str(tiny_f32), n_prompts=4, chunk=2, max_new=10, follow_ups=0.5, slots=3,
                          taps=layers, progress=False) == 0
    assert json.loads((out / "meta.json").read_text())["taps"] == layers
    t = Target(str(tiny_f32), n_ctx=512, tap_layers=layers)
    t.features = True
    for f in sorted(out.glob("chunk-*.npz")):
        c = np.load(f)
        assert c["taps"].shape == (len(c["tokens"]), 3 * 64)
        for s in range(len(c["offsets"]) - 1):
            a, b = int(c["offsets"][s]), int(c["offsets"][s + 1])
            t.truncate(0)
            t.prefill([int(x) for x in c["tokens"][a:b - 1]])
            np.testing.assert_allclose(t.taps(), c["taps"][a:b - 1].astype(np.float32), atol=2e-2, rtol=2e-2)
            assert not c["taps"][b - 1].any()


def test_training_can_start_from_a_head_gguf(tiny_f32, tiny_data, tmp_path):
    """--init HEAD.gguf reads back exactly the weights that were exported (q/k rows permuted back)."""
    run = tmp_path / "run"
    tfit.fit(tiny_data, run, **fit_kw(tiny_f32))
    out = tmp_path / "head.gguf"
    tfit.export(run, str(tiny_f32), tmp_path / "eagle", out, outtype="f32")
    trained = tfit.load_head(run)
    fresh = tfit.make_head(trained.cfg)
    tfit.load_gguf_weights(fresh, out)
    for name, p in trained.eagle_state_dict().items():
        np.testing.assert_array_equal(fresh.eagle_state_dict()[name].detach().numpy(), p.detach().numpy(), err_msg=name)
    res = tfit.fit(tiny_data, tmp_path / "again", init=out, **{**fit_kw(tiny_f32), "epochs": 0.5})
    assert res["val"]["top1"] >= 0
    # `eval --run HEAD.gguf` scores the file as `eval --run RUN --all` scores the run
    kw = dict(depth=3, seq=64, all_seqs=True)
    assert tfit.evaluate_run(out, tiny_data, str(tiny_f32), **kw) == tfit.evaluate_run(run, tiny_data, str(tiny_f32), **kw)
