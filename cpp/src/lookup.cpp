#include "lookup.h"

#include "pyeagle/engine.h"

#include <algorithm>
#include <cmath>

namespace pyeagle {

std::vector<lookup_draft> prompt_lookup(const std::vector<llama_token> & ctx, int32_t n_max, int32_t n_len,
                                        int32_t n_chains) {
    std::vector<lookup_draft> out;
    const int32_t N = (int32_t) ctx.size();
    if (N < 2 || n_max < 1 || n_len < 1 || n_chains < 1) return out;
    // (match length, end) of every earlier position e whose token equals the last one, most recent first
    std::vector<std::pair<int32_t, int32_t>> found;
    for (int32_t e = N - 2; e >= 0; --e) {
        if (ctx[e] != ctx[N - 1]) continue;
        int32_t len = 1;
        while (len < n_max && e - len >= 0 && ctx[e - len] == ctx[N - 1 - len]) ++len;
        found.emplace_back(len, e);
    }
    std::stable_sort(found.begin(), found.end(), [](const auto & a, const auto & b) { return a.first > b.first; });
    for (const auto & [len, e] : found) {
        lookup_draft d;
        d.n_match = len;
        for (int32_t i = 0; i < n_len; ++i) {
            const int32_t at = e + 1 + i;
            d.tokens.push_back(at < N ? ctx[at] : d.tokens[at - N]);
        }
        const bool seen = std::any_of(out.begin(), out.end(), [&](const lookup_draft & o) { return o.tokens == d.tokens; });
        if (!seen) out.push_back(std::move(d));
        if ((int32_t) out.size() >= n_chains) break;
    }
    return out;
}

void lookup_source::propose(const std::vector<llama_token> & ctx, int32_t n_len, int32_t n_chains, const acceptance & acc) {
    chains_.clear();
    n_added_ = 0;
    for (auto & d : prompt_lookup(ctx, n_match_max, n_len, n_chains)) {
        d.tokens.resize(std::min<size_t>(d.tokens.size(), n_len_cap(d.n_match)));
        chain c;
        // each accepted step extends the match by one token: step j continues a match of n_match + j
        double a = acc.lookup_first(d.n_match, streak_);
        for (size_t j = 0; j < d.tokens.size(); ++j) {
            if (j > 0) a *= acc.lookup_next(d.n_match + (int32_t) j, streak_);
            c.a.push_back(a);
        }
        c.d = std::move(d);
        chains_.push_back(std::move(c));
    }
}

void lookup_source::add_to(tree_builder & tb, int32_t n_chains, int32_t n_len) {
    n_added_ = std::min(n_chains, (int32_t) chains_.size());
    for (int32_t i = 0; i < n_added_; ++i) {
        chain & c = chains_[i];
        const size_t n = std::min<size_t>(std::max(n_len, 0), c.d.tokens.size());
        std::vector<llama_token> tokens(c.d.tokens.begin(), c.d.tokens.begin() + n);
        std::vector<float> scores(n);
        for (size_t j = 0; j < n; ++j) scores[j] = (float) std::log(c.a[j]);
        c.nodes = tb.add_path(tokens, scores, c.added);
    }
}

void lookup_source::place(const draft_tree & t, gen_stats & st) {
    if (n_added_ == 0) return;
    std::vector<int32_t> node_of;
    for (int32_t i = 1; i < t.size(); ++i) {
        if (t.cand[i] >= (int32_t) node_of.size()) node_of.resize(t.cand[i] + 1, -1);
        node_of[t.cand[i]] = i;
    }
    for (int32_t i = 0; i < n_added_; ++i) {
        chain & c = chains_[i];
        for (size_t j = 0; j < c.nodes.size(); ++j) {
            c.nodes[j] = c.nodes[j] < (int32_t) node_of.size() ? node_of[c.nodes[j]] : -1;
            if (c.nodes[j] >= 0 && c.added[j]) st.n_lookup_drafted++;
        }
    }
}

void lookup_source::score(const std::vector<int32_t> & path, acceptance & acc, gen_stats & st) {
    const bool after = streak_;
    streak_ = false;
    n_run_ = 0;
    for (int32_t i = 0; i < n_added_; ++i) {
        const chain & c = chains_[i];
        for (size_t j = 0; j < c.nodes.size() && c.nodes[j] >= 0; ++j) {
            const bool hit = path.size() > j + 1 && path[j + 1] == c.nodes[j];
            acc.count_lookup(c.d.n_match + (int32_t) j, after, (int32_t) j, hit);
            if (!hit) break;
            streak_ = true;
            n_run_ = std::max(n_run_, (int32_t) j + 1);
            if (c.added[j]) st.n_lookup_accepted++;
        }
    }
    n_added_ = 0;
}

}  // namespace pyeagle
