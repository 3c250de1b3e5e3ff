"""python -m pyeagle.bench on the tiny random models: the run, its JSON, and the pieces of the
losslessness check (divergence position, logit gap, batched-vs-single argmax flips).

Exactness settings as in test_engine.py (tiny f32 model, one thread, flash attention off, f32 KV):
there batched and single-token logits agree far below any argmax margin, so EAGLE output must be
identical to plain decoding and the kernel-noise baseline must find no flips.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pyeagle import Engine, bench, peer

EXACT = ["-t", "1", "-fa", "off", "--kv-f32"]


@pytest.fixture(scope="module")
def random_head(tmp_path_factory, tiny_f32) -> Path:
    """A random EAGLE-1/2 head converted for tiny_f32 (almost every draft is rejected)."""
    from eagle_checkpoints import target_dims, write_eagle12
    from pyeagle.convert import convert
    d = tmp_path_factory.mktemp("bench-head")
    write_eagle12(d / "e12", **target_dims(tiny_f32))
    return convert(d / "e12", tiny_f32, d / "e12.gguf")


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("bench-prompts") / "p.jsonl"
    lines = [{"prompt": "write a fast model", "category": "coding"},
             {"turns": ["the tree of code", "and a second turn"], "category": "writing", "question_id": 7},
             {"prompt": "how do you do", "category": "coding"}]
    p.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return p


def test_load_prompts(prompts_file):
    ps = bench.load_prompts(prompts_file)
    assert [(p.id, p.category, p.question) for p in ps] == [
        ("1", "coding", "write a fast model"), ("7", "writing", "the tree of code"), ("3", "coding", "how do you do")]


def test_bench_run_json(tiny_f32, random_head, prompts_file, tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = bench.main(["-m", str(tiny_f32), "-md", str(random_head), "--prompts", str(prompts_file), "--limit", "3",
                     "-n", "8", "-c", "512", *EXACT, "--json", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    for key in ("plain_tps", "eagle_tps", "speedup", "tau", "identical", "llama_cpp_python_tps", "categories",
                "losslessness", "memory_mib", "machine", "commit", "command"):
        assert key in doc, key
    assert doc["identical"] == 1.0
    assert doc["tau"] >= 1.0 and doc["plain_tps"] > 0 and doc["eagle_tps"] > 0
    assert set(doc["categories"]) == {"coding", "writing"} and doc["categories"]["coding"]["prompts"] == 2
    lo = doc["losslessness"]
    assert lo["n_diverged"] == 0 and lo["kernel_noise"]["flips"] == 0 and lo["within_noise"]
    assert lo["kernel_noise"]["tokens_scored"] > 0
    assert doc["llama_cpp_python_tps"] > 0
    mem = doc["memory_mib"]
    assert 0 < mem["plain"] < mem["eagle"]  # the head (weights, KV, buffers) costs something
    assert len(doc["prompts_detail"]) == 3 and all(p["plain"]["n_tokens"] >= 1 for p in doc["prompts_detail"])
    text = capsys.readouterr().out
    assert "| **overall** |" in text and "## Greedy losslessness" in text and "peak RSS" in text


def test_bench_without_head_and_limit(tiny_f32, prompts_file, tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = bench.main(["-m", str(tiny_f32), "--prompts", str(prompts_file), "--limit", "1", "-n", "4", "-c", "256",
                     *EXACT, "--json", str(out), "--no-llama-cpp-python", "--no-memory"])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["eagle_tps"] is None and doc["identical"] is None and doc["plain_tps"] > 0
    assert len(doc["prompts_detail"]) == 1
    assert "No EAGLE head" in capsys.readouterr().out


def test_tree_sweep(tiny_f32, random_head, prompts_file, tmp_path):
    out = tmp_path / "s.json"
    rc = bench.main(["-m", str(tiny_f32), "-md", str(random_head), "--prompts", str(prompts_file), "--limit", "1",
                     "-n", "6", "-c", "256", *EXACT, "--tree-sweep", "--sizes", "1,4", "--reps", "1",
                     "--json", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert [p["n_tree"] for p in doc["tree_sweep"]] == [1, 4]
    assert all(p["verify_ms"] > 0 and p["tau"] >= 1.0 for p in doc["tree_sweep"])


def test_first_divergence_and_logit_gap():
    assert bench.first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert bench.first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert bench.first_divergence([1, 2], [1, 2, 3]) == 2
    logits = np.array([0.0, 2.5, 2.25, -1.0], dtype=np.float32)
    assert bench.logit_gap(logits, 1, 2) == pytest.approx(0.25)
    assert bench.logit_gap(logits, 1, 3) == pytest.approx(3.5)


def test_argmax_flips():
    rows = np.array([[0.0, 1.0, 0.9],    # argmax 1 == chosen: no flip
                     [0.5, 0.2, 0.45],   # argmax 0, chosen 2: flip with gap 0.05
                     [3.0, 0.0, 0.0]], dtype=np.float32)
    flips = bench.argmax_flips(rows, [1, 2, 1])
    assert [i for i, _ in flips] == [1, 2]
    assert flips[0][1] == pytest.approx(0.05) and flips[1][1] == pytest.approx(3.0)


def test_single_step_logits_reproduce_plain_decoding(tiny_f32):
    eng = Engine(str(tiny_f32), draft=None, n_ctx=256, n_threads=1, flash_attn=0, kv_f32=True)
    ids = eng.tokenize("the tree of code")
    out = eng.generate(ids, max_tokens=6)
    eng.reset()
    for d in (0, 3):
        logits = bench.single_step_logits(eng.target, ids, out.tokens[:d])
        assert int(np.argmax(logits)) == out.tokens[d]
    n_scored, flips = bench.batched_flips(eng.target, ids, out.tokens, chunk=3)
    assert n_scored == len(out.tokens) - 1 and flips == []


class R:  # the fields losslessness_summary reads
    def __init__(self, plain, div, n_scored, flips):
        self.plain = type("O", (), {"tokens": plain})
        self.prompt = bench.BenchPrompt("x", "c", "q")
        self.divergence, self.noise = div, {"n_scored": n_scored, "flips": flips}


def test_losslessness_summary_counts():
    runs = [R([1] * 10, None, 9, [(4, 0.1)]),
            R([1] * 10, {"pos": 4, "plain_token": 1, "eagle_token": 2, "gap": 0.2, "reproduced": True}, 9, [])]
    s = bench.losslessness_summary(runs, tie_tol=0.5)
    assert s["tokens_compared"] == 15 and s["n_diverged"] == 1
    assert s["divergence_rate"] == pytest.approx(1 / 15) and s["kernel_noise"]["flip_rate"] == pytest.approx(1 / 18)
    assert not s["within_noise"]  # 1/15 > 1/18
    assert bench.losslessness_summary(runs[:1], 0.5)["within_noise"]


def test_losslessness_gap_rule_follows_measured_noise():
    div = {"pos": 40, "plain_token": 1, "eagle_token": 2, "gap": 0.648, "reproduced": True}
    quiet = [R([1] * 100, div, 99, [(3, 0.2)]), R([1] * 100, None, 99, [(5, 0.3)])]
    s = bench.losslessness_summary(quiet, tie_tol=0.5)
    assert s["gap_tol"] == 0.5 and not s["within_noise"]  # rate is fine, but 0.648 is beyond any flip seen
    noisy = [R([1] * 100, div, 99, [(3, 0.2)]), R([1] * 100, None, 99, [(5, 0.763)])]
    s = bench.losslessness_summary(noisy, tie_tol=0.5)
    assert s["gap_tol"] == pytest.approx(0.763) and s["within_noise"]
    far = [R([1] * 100, {**div, "gap": 0.9}, 99, [(3, 0.2)]), R([1] * 100, None, 99, [(5, 0.763)])]
    assert not bench.losslessness_summary(far, tie_tol=0.5)["within_noise"]


def test_lossless_report_lists_divergences(tiny_f32):
    eng = Engine(str(tiny_f32), draft=None, n_ctx=128, n_threads=1)
    a, b = eng.tokenize("tree code", add_special=False)[:2]
    summary = {"n_prompts": 2, "n_diverged": 1, "tokens_compared": 20, "divergence_rate": 0.05,
               "max_divergence_gap": 0.125, "tie_tol": 0.5, "within_noise": False,
               "kernel_noise": {"tokens_scored": 18, "flips": 1, "flip_rate": 1 / 18, "max_flip_gap": 0.25,
                                "median_flip_gap": 0.25},
               "divergences": [{"id": "7", "category": "c", "pos": 3, "plain_token": a, "eagle_token": b,
                                "gap": 0.125, "reproduced": True}]}
    text = bench.lossless_report(eng, summary)
    assert "1/2 prompts" in text and "| 7 | c | 3 |" in text and "0.125" in text and "NO" in text


def test_parse_speculative_log():
    text = ("encoded  120 tokens in    0.210 seconds, speed:  571.429 t/s\n"
            "decoded  260 tokens in    1.300 seconds, speed:  200.000 t/s\n\nn_draft   = 16\nn_predict = 260\n"
            "n_drafted = 300\nn_accept  = 180\naccept    = 60.000%\n")
    r = peer.parse_speculative_log(text)
    assert r["n_tokens"] == 260 and r["tokens_per_s"] == pytest.approx(200.0)
    assert r["n_drafted"] == 300 and r["n_accept"] == 180
    with pytest.raises(peer.PeerError):
        peer.parse_speculative_log("error: model not found")


def test_peer_answer_text_and_agreement():
    prompt = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert peer.answer_text("\n\n" + prompt + "Hello there.\n\n", prompt) == "Hello there."
    assert peer.answer_text("\n\n<s>" + prompt + "Hello", prompt) is None  # an echo that is not the prompt
    q = bench.BenchPrompt("1", "writing", "Hi")
    run = lambda plain, text: bench.PromptRun(q, [1], SimpleNamespace(text=plain), peer={"text": text})  # noqa: E731
    runs = [run("Hello there.", "Hello there. And more"),  # the peer decoded past -n: same over the shorter
            run("Hello there.", "Hello where."), run("abc", "abc"), bench.PromptRun(q, [1], SimpleNamespace(text="x"))]
    assert bench.peer_text_agreement(runs) == (2, 3, [6])


def test_peer_draft_split():
    q = bench.BenchPrompt("1", "writing", "Hi")
    out = lambda tps: SimpleNamespace(stats=SimpleNamespace(tokens_per_s=tps))  # noqa: E731
    run = lambda plain, eagle, spec, drafted: bench.PromptRun(  # noqa: E731
        q, [1], out(plain), eagle=out(eagle), peer={"tokens_per_s": spec, "n_drafted": drafted})
    runs = [run(100, 110, 98, 0), run(100, 121, 98, 0), run(100, 150, 200, 64)]
    line = bench.peer_draft_split(runs)
    # drafted nothing: spec / plain 0.98, EAGLE / plain sqrt(1.1 * 1.21) = 1.15, EAGLE / spec 1.15 / 0.98
    assert "the 2 prompts where it drafted nothing, spec / plain 0.98, EAGLE / plain 1.15, EAGLE / spec 1.18" in line
    assert "the 1 prompt where it drafted, spec / plain 2.00, EAGLE / plain 1.50, EAGLE / spec 0.75" in line
    assert bench.peer_draft_split([bench.PromptRun(q, [1], out(100))]) == ""


def test_cmake_isa_args_match_setup_script(monkeypatch):
    script = Path(__file__).parent.parent / "scripts" / "cmake_args.sh"
    if not script.exists():
        pytest.skip("no scripts/cmake_args.sh (not a checkout)")
    monkeypatch.delenv("CMAKE_ARGS", raising=False)
    expected = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=True).stdout.split()
    assert peer.cmake_isa_args() == expected


def test_plot_needs_matplotlib_or_writes(tiny_f32, prompts_file, tmp_path):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with pytest.raises(SystemExit, match="pip install matplotlib"):
            bench.main(["-m", str(tiny_f32), "--prompts", str(prompts_file), "--plot", str(tmp_path / "p.png")])
        return
    pytest.skip("matplotlib installed: the plot path runs in the full bench")


@pytest.mark.model
def test_mtbench_questions():
    try:
        path = bench.mtbench_file()
    except SystemExit as e:  # offline without a cache
        pytest.skip(str(e))
    ps = bench.load_prompts(path)
    assert len(ps) == 80 and len({p.category for p in ps}) == 8


def test_verify_curve_mode(tiny_f32, capsys):
    assert bench.main(["--verify-curve", "-m", str(tiny_f32), "-t", "1", "--reps", "1", "--sizes", "1,4"]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("| ") and x[2].isdigit()]
    assert [x.split("|")[1].strip() for x in lines] == ["1", "4"]
