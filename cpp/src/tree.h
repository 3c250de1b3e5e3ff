// EAGLE-2 dynamic draft tree: candidates grown by expansion, then reranked into the tree that the
// target verifies. No model in here: the engine feeds draft log-probs in.
#pragma once

#include "llama.h"

#include <cmath>
#include <cstdint>
#include <vector>

namespace pyeagle {

// A flat tree in verification order.
//   node 0 is the root (the last produced token, parent -1, depth 0, logp 0)
//   parent[i] < i; depth non-decreasing; position of node i = n_past + depth[i]
struct draft_tree {
    std::vector<llama_token> token;  // [n]
    std::vector<int32_t>     parent; // [n]
    std::vector<int32_t>     depth;  // [n]
    std::vector<float>       score;  // [n] cumulative draft log-prob along the root path
    std::vector<int32_t>     cand;   // [n] index of the candidate each node came from (root: -1)
    std::vector<float>       q;      // [n] the head's probability of the step given its parent (-1: not a head draft)
    int32_t size() const { return (int32_t) token.size(); }
};

// Every candidate that expansion produced: k at depth 1, k*k per further depth.
struct candidate {
    llama_token token;
    int32_t     parent;  // candidate index, -1 for children of the root
    int32_t     depth;   // >= 1
    float       score;   // parent score + draft log-prob of token
    int32_t     row = -1;  // head KV cell of this candidate once expanded (-1: not expanded)
    float       q = -1.0f; // the head's probability of the step given its parent (-1: not a head draft)
};

class tree_builder {
public:
    void reset(llama_token root) { root_ = root; cands_.clear(); }
    // Adds the children (score increment, token) of candidate `parent` (-1: the root); scores
    // accumulate. q: the head's probability of each child (for calibration), if they are head drafts.
    void add_children(int32_t parent, const std::vector<std::pair<float, int32_t>> & logp_token,
                      const std::vector<float> * q = nullptr);
    // The k best candidates at `depth` by score (ties: lower index): the next frontier.
    std::vector<int32_t> best_at_depth(int32_t depth, int32_t k) const;
    // The best m candidates overall (ties toward shallower nodes, which keeps the set connected:
    // a child never outscores its parent), root prepended, ordered by depth: the tree to verify.
    // keeps at most m candidates, each with score >= min_score (log of its path's draft probability)
    draft_tree rerank(int32_t m, float min_score = -INFINITY) const;

    // Adds one drafted node (e.g. a step of a prompt-lookup copy) below candidate `parent` (-1: the
    // root); its score must not exceed its parent's. A node that matches an existing candidate (same
    // parent and token) merges with it: its score becomes the larger of the two and its subtree is
    // rebased by the same amount, so a child still never outscores its parent. Returns the
    // candidate's index and, in `added`, whether it was new.
    int32_t add_node(int32_t parent, llama_token token, float score, bool & added);

    std::vector<candidate> & candidates() { return cands_; }
    const std::vector<candidate> & candidates() const { return cands_; }

private:
    llama_token root_ = 0;
    std::vector<candidate> cands_;
};

}  // namespace pyeagle
