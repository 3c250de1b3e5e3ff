#include "tree.h"

#include <algorithm>
#include <numeric>

namespace pyeagle {

void tree_builder::add_children(int32_t parent, const std::vector<std::pair<float, int32_t>> & logp_token,
                                const std::vector<float> * q) {
    const int32_t depth = parent < 0 ? 1 : cands_[parent].depth + 1;
    const float base = parent < 0 ? 0.0f : cands_[parent].score;
    for (size_t i = 0; i < logp_token.size(); ++i) {
        const auto & [logp, tok] = logp_token[i];
        cands_.push_back({tok, parent, depth, base + logp, -1, q ? (*q)[i] : -1.0f});
    }
}

std::vector<int32_t> tree_builder::best_at_depth(int32_t depth, int32_t k) const {
    std::vector<int32_t> idx;
    for (int32_t i = 0; i < (int32_t) cands_.size(); ++i) {
        if (cands_[i].depth == depth) idx.push_back(i);
    }
    const size_t keep = std::min<size_t>(k, idx.size());
    std::partial_sort(idx.begin(), idx.begin() + keep, idx.end(), [&](int32_t a, int32_t b) {
        return cands_[a].score > cands_[b].score || (cands_[a].score == cands_[b].score && a < b);
    });
    idx.resize(keep);
    return idx;
}

int32_t tree_builder::add_node(int32_t parent, llama_token token, float score, bool & added) {
    int32_t found = -1;
    for (int32_t i = parent + 1; i < (int32_t) cands_.size(); ++i) {  // children come after their parent
        if (cands_[i].parent == parent && cands_[i].token == token) { found = i; break; }
    }
    added = found < 0;
    if (added) {
        cands_.push_back({token, parent, parent < 0 ? 1 : cands_[parent].depth + 1, score});
        return (int32_t) cands_.size() - 1;
    }
    const float delta = score - cands_[found].score;
    if (delta > 0) {  // rebase the subtree: children keep their draft log-probs relative to it
        std::vector<bool> below(cands_.size(), false);
        below[found] = true;
        cands_[found].score += delta;
        for (int32_t i = found + 1; i < (int32_t) cands_.size(); ++i) {
            const int32_t p = cands_[i].parent;
            if (p >= 0 && below[p]) { below[i] = true; cands_[i].score += delta; }
        }
    }
    return found;
}

draft_tree tree_builder::rerank(int32_t m, float min_score) const {
    // a child never outscores its parent, so the candidates above a threshold form a connected tree
    std::vector<int32_t> rank;
    for (int32_t i = 0; i < (int32_t) cands_.size(); ++i) {
        if (cands_[i].score >= min_score) rank.push_back(i);
    }
    auto better = [&](int32_t a, int32_t b) {
        const candidate & x = cands_[a], & y = cands_[b];
        if (x.score != y.score) return x.score > y.score;
        if (x.depth != y.depth) return x.depth < y.depth;
        return a < b;  // a parent was added before its children
    };
    const size_t keep = std::min<size_t>(std::max(m, 0), rank.size());
    std::partial_sort(rank.begin(), rank.begin() + keep, rank.end(), better);
    rank.resize(keep);
    // by depth, then by rank inside a depth: parent before child, siblings best first
    std::stable_sort(rank.begin(), rank.end(), [&](int32_t a, int32_t b) { return cands_[a].depth < cands_[b].depth; });

    draft_tree t;
    t.token = {root_}; t.parent = {-1}; t.depth = {0}; t.score = {0.0f}; t.cand = {-1}; t.q = {-1.0f};
    std::vector<int32_t> node_of(cands_.size(), -1);
    for (int32_t c : rank) {
        const candidate & x = cands_[c];
        const int32_t p = x.parent < 0 ? 0 : node_of[x.parent];
        if (p < 0) continue;  // unreachable: the ranking keeps every kept node's parent
        node_of[c] = t.size();
        t.token.push_back(x.token);
        t.parent.push_back(p);
        t.depth.push_back(x.depth);
        t.score.push_back(x.score);
        t.cand.push_back(c);
        t.q.push_back(x.q);
    }
    return t;
}

}  // namespace pyeagle
