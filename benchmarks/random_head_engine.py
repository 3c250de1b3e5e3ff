"""Plain decoding vs the EAGLE round loop with a random SmolLM2-sized head (every draft rejected):
tokens/s, tau, and the loop's own cost per round, in one run. Needs /tmp/pyeagle-bench/full.gguf
from benchmarks/draft_forward.py. Run from the repository root."""
from pyeagle import Engine, models

P = "<|im_start|>user\nWrite a short poem about the sea.<|im_end|>\n<|im_start|>assistant\n"
eng = Engine(str(models.default_target()), draft="/tmp/pyeagle-bench/full.gguf", n_threads=2)
rows = []
for name, kw in [("plain", dict(draft=False)), ("eagle tree=1 depth=1 top_k=1", dict(n_tree=1, n_depth=1, n_top_k=1)),
                 ("eagle default (tree=8 depth=8 top_k=4)", {}), ("plain (again)", dict(draft=False))]:
    o = eng.generate(P, max_tokens=96, **kw)
    s = o.stats
    per = max(s.n_passes, 1)
    rows.append((name, s.n_tokens, s.tokens_per_s, s.tau, s.n_passes, (s.t_total - s.t_prefill) / per * 1000,
                 s.t_draft / per * 1000, s.t_verify / per * 1000, o.tokens))
print("| mode | tokens | tok/s | tau | passes | ms/round | draft ms/round | verify ms/round |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    print("| %s | %d | %.1f | %.2f | %d | %.2f | %.2f | %.2f |" % r[:8])
print("identical to plain:", [r[8] == rows[0][8] for r in rows])
