// Prompt lookup as a drafting source: chains copied from what followed earlier occurrences of the
// context's last tokens (n-gram copying). Catches repeated text, which a one-layer head copies
// poorly and small models produce often. Its bookkeeping (which tree nodes each chain became, the
// repeat streak) lives here; its acceptance rates live in the engine's `acceptance` table.
#pragma once

#include "budget.h"
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

class lookup_source {
public:
    static constexpr int32_t n_match_max = 32;
    // Chain length cap, like a slow start: a chain that fails at once costs a whole verify pass of
    // its length, so chains grow only as fast as repeats prove themselves: at most twice the
    // copied tokens the round before accepted or twice the matched suffix, and at least n_len_min.
    static constexpr int32_t n_len_min = 8;
    int32_t n_len_cap(int32_t n_match) const { return std::max({n_len_min, 2 * n_run_, 2 * n_match}); }

    // This round's chains for `context` (committed tokens + root), each step with its estimated
    // acceptance a_j: the chance that it and every step before it are accepted.
    void propose(const std::vector<llama_token> & context, int32_t n_len, int32_t n_chains, const acceptance & acc);
    int32_t n_chains() const { return (int32_t) chains_.size(); }
    const std::vector<double> & accept(int32_t chain) const { return chains_[chain].a; }

    // Joins the first n_chains chains (each cut to n_len steps) to the candidates, scored log(a_j).
    void add_to(tree_builder & tb, int32_t n_chains, int32_t n_len);
    // After the rerank: which tree node each added step became (-1: not kept).
    void place(const draft_tree & t, gen_stats & st);
    // After acceptance: each verified step whose parent was accepted is a try.
    void score(const std::vector<int32_t> & path, acceptance & acc, gen_stats & st);
    void clear_streak() { streak_ = false; n_run_ = 0; }

private:
    struct chain {
        lookup_draft d;
        std::vector<double> a;          // [steps] estimated acceptance, cumulative
        std::vector<int32_t> nodes;     // [steps added] candidate index, then tree node (-1: not kept)
        std::vector<bool> added;        // [steps added] new (not merged into a head draft or an earlier chain)
    };
    std::vector<chain> chains_;
    int32_t n_added_ = 0;  // chains joined to this round's candidates
    bool streak_ = false;  // the round before accepted a copied step
    int32_t n_run_ = 0;    // copied steps the round before accepted
};

// What the engine measures and keeps across generate() calls.
struct round_state {
    cost_model cost;      // what a verify pass and the head cost here
    acceptance acc;       // how often each kind of draft was accepted
    head_gate gate;       // whether the head pays
    throughput speed;     // tokens per second of recent rounds: the price of time
    lookup_source lookup; // this round's prompt-lookup chains
};

}  // namespace pyeagle
