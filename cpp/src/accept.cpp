#include "accept.h"

namespace pyeagle {

namespace {
// children[i]: the children of node i in tree order (siblings best first, as rerank emits them)
std::vector<std::vector<int32_t>> children_of(const draft_tree & t) {
    std::vector<std::vector<int32_t>> ch(t.size());
    for (int32_t i = 1; i < t.size(); ++i) ch[t.parent[i]].push_back(i);
    return ch;
}
}  // namespace

accept_result accept_greedy(const draft_tree & t, const node_logits & logits, int32_t n_vocab) {
    const auto ch = children_of(t);
    accept_result r;
    int32_t cur = 0;
    r.path.push_back(0);
    for (;;) {
        const llama_token best = argmax(logits(cur), n_vocab);
        int32_t next = -1;
        for (int32_t c : ch[cur]) {
            if (t.token[c] == best) { next = c; break; }
        }
        if (next < 0) { r.bonus = best; return r; }
        cur = next;
        r.path.push_back(cur);
    }
}

accept_result accept_sampled(const draft_tree & t, const node_logits & logits, int32_t n_vocab,
                             const sampling_params & sp, std::mt19937_64 & rng, int32_t broken_from_depth) {
    const auto ch = children_of(t);
    accept_result r;
    std::vector<float> p;
    std::uniform_real_distribution<double> uni(0.0, 1.0);
    int32_t cur = 0;
    r.path.push_back(0);
    for (;;) {
        target_probs(logits(cur), n_vocab, sp, p);
        const int32_t depth = (int32_t) r.path.size();  // of cur's children
        const bool residual = broken_from_depth <= 0 || depth < broken_from_depth;
        double mass = 1.0;  // sum of p (renormalisation is implicit: compare against p(x) / mass)
        int32_t next = -1;
        for (int32_t c : ch[cur]) {
            const llama_token x = t.token[c];
            const double px = p[x] / mass;
            if (uni(rng) < px) { next = c; break; }
            if (!residual) continue;
            mass -= p[x];
            p[x] = 0.0f;
            if (mass <= 0) break;
        }
        if (next < 0) { r.bonus = sample(p, rng); return r; }
        cur = next;
        r.path.push_back(cur);
    }
}

}  // namespace pyeagle
