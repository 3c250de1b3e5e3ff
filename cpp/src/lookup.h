// Copy drafts: continuations of earlier occurrences of the context's last tokens, as a drafting
// source beside the head. Two kinds:
//   prompt lookup  up to a few chains, each what followed one earlier occurrence (longest match
//                  first, then most recent): n-gram copying
//   suffix tree    every earlier occurrence of the matched suffix votes for its continuation; the
//                  continuations form a tree scored by how many occurrences pass through each node
//                  (SuffixDecoding, arXiv 2411.04975, over this conversation's context)
// They catch repeated text, which a one-layer head copies poorly and small models produce often.
// The bookkeeping of a round (which tree node each proposed node became, the repeat streak) lives
// here; acceptance rates live in the engine's `acceptance` table.
#pragma once

#include "budget.h"
#include "store.h"
#include "tree.h"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace pyeagle {

struct gen_stats;

// The tokens that followed earlier occurrences of the context's last n_max..1 tokens, up to n_len
// of them, for at most n_chains distinct continuations: longest match first, then most recent.
// Past the end of the context a copy goes on through its own output, so a repeating cycle
// shorter than n_len is unrolled. One backward pass over the context.
struct lookup_draft {
    std::vector<llama_token> tokens;
    int32_t n_match = 0;  // length of the matched suffix
};
std::vector<lookup_draft> prompt_lookup(const std::vector<llama_token> & context, int32_t n_max, int32_t n_len,
                                        int32_t n_chains);

// The continuations (up to `depth` tokens, unrolled past the end as above) of every earlier occurrence
// of the context's longest matched suffix, at most n_max long; occurrences that match at least
// min(longest, 8) tokens count, the 64 most recent. As a flat tree, parents first, at most n_nodes
// nodes: those that the most occurrences pass through (ties: shallower first). parent -1: below the
// root. A linear scan per call (a suffix tree would make it independent of the context's length).
struct suffix_draft {
    std::vector<llama_token> token;
    std::vector<int32_t> parent, depth, count;  // depth >= 1; count: occurrences through the node
    int32_t n_occ = 0, n_match = 0;             // occurrences used; the longest match
};
suffix_draft suffix_lookup(const std::vector<llama_token> & context, int32_t n_max, int32_t depth, int32_t n_nodes);

class lookup_source {
public:
    static constexpr int32_t n_match_max = 128;
    // Depth cap, like a slow start: a copy that fails at once costs a whole verify pass of its
    // length, so copies grow only as fast as repeats prove themselves: at most twice the copied
    // tokens the round before accepted or twice the matched suffix, and at least n_len_min.
    static constexpr int32_t n_len_min = 8;
    int32_t n_len_cap(int32_t n_match) const { return std::max({n_len_min, 2 * n_run_, 2 * n_match}); }

    // This round's proposal for `context` (committed tokens + root), at most n_len deep: n_chains
    // prompt-lookup chains, or (suffix) one suffix tree of at most n_len nodes. With a `store` (which
    // overrides `suffix`), the continuation of the context's longest match in the engine's earlier
    // outputs competes with the chains: the chain whose first step is likeliest comes first (a round without the head verifies
    // only that one). Each node gets its estimated acceptance a: the chance that it and its
    // ancestors are accepted.
    void propose(const std::vector<llama_token> & context, int32_t n_len, int32_t n_chains, bool suffix,
                 const acceptance & acc, const token_store * store = nullptr);
    bool empty() const { return nodes_.empty(); }
    // the estimates of the nodes that a round without the head would verify (the first chain, or the
    // whole suffix tree), descending
    std::vector<double> accept_alone() const;
    // Joins the proposal to the candidates (alone: only what accept_alone() counts), scored log(a).
    void add_to(tree_builder & tb, bool alone);
    // After the rerank: which tree node each joined node became (-1: not kept).
    void place(const draft_tree & t, gen_stats & st);
    // After acceptance: count the tries and hits of the proposal's main path (each verified node
    // whose parent was accepted), the copied tokens accepted, the streak.
    void score(const std::vector<int32_t> & path, acceptance & acc, gen_stats & st);
    // a new generation: no streak, and the estimates at half until copies prove themselves in this
    // text (a slow start: the rates are the engine's, pooled over earlier texts, and one copy that
    // fails early costs a short answer a large share of its time; rounds without copies bring the
    // scale back toward 1, 5% of the way a round)
    void clear_streak() { streak_ = false; n_run_ = 0; n_hit_ = bias_start; n_expect_ = 1.0; }
    static constexpr double bias_start = 0.5;

private:
    struct node {
        llama_token token;
        int32_t parent;      // index in nodes_, -1: below the root
        int32_t depth;       // 1..
        int32_t n_match;     // the match the node's chain or tree continues
        double a;            // estimated acceptance (cumulative)
        bool main;           // on the first chain / the tree's most travelled path: counted for calibration
        bool alone;          // verified in a round without the head
        bool stored;         // copied from an earlier output (the store), not from this context
        int32_t cand = -1;   // candidate index once joined, then tree node (-1: not kept)
        bool added = false;  // new when joined (not merged into a head draft or another copy)
    };
    std::vector<node> nodes_;  // parents first
    bool joined_ = false;
    bool streak_ = false;  // the round before accepted a copied step
    int32_t n_run_ = 0;    // copied steps the round before accepted
    // Recent main-path copies: accepted steps and the steps the estimates expected (EMAs). Their ratio
    // scales the estimates, so that text where copies keep failing (a long match, then a different
    // continuation) stops being bet on within a few rounds, whatever the rates say. Rounds that
    // verify no copy relax it back toward 1, or a low ratio would keep copies from ever being tried.
    double n_hit_ = 1.0, n_expect_ = 1.0;
    double bias() const { return std::clamp(n_hit_ / n_expect_, 0.25, 1.5); }
};

// What the engine measures and keeps across generate() calls.
struct round_state {
    cost_model cost;      // what a verify pass and the head cost here
    acceptance acc;       // how often each kind of draft was accepted
    head_gate gate;       // whether the head pays
    throughput speed;     // tokens per second of recent rounds: the price of time
    lookup_source lookup; // this round's copy drafts
    token_store store;    // this engine's earlier outputs, a copy source across generations
};

}  // namespace pyeagle
