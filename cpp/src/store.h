// The engine's memory of its own earlier outputs, as a drafting source: when the context's last
// tokens occurred in an earlier answer, what followed there is a copy draft, like prompt lookup but
// across generations (SuffixDecoding's global tree over earlier responses, arXiv 2411.04975,
// section 4). A small model at temperature 0 reuses whole phrases from one answer to the next
// ("Here are some ...", list scaffolding, closing lines), which a lookup within one context never sees.
//
// Storage: the outputs one after the other, each ended by a separator, and a hash index from each
// position's last three tokens to the positions, oldest first. A query looks at the most recent
// occurrences of the context's last three tokens only, so it costs microseconds whatever the size.
// When full it starts over (the newest outputs are what the next ones resemble).
#pragma once

#include "llama.h"

#include <cstdint>
#include <unordered_map>
#include <vector>

namespace pyeagle {

class token_store {
public:
    static constexpr int32_t n_key = 3;        // tokens that index a position
    static constexpr int32_t n_scan = 128;     // most recent occurrences a query looks at
    explicit token_store(size_t capacity = size_t(1) << 20) : capacity_(capacity) {}

    // remember one output (its tokens, in order); too short to index: ignored
    void add(const std::vector<llama_token> & tokens);
    void clear();
    size_t size() const { return buf_.size() - n_outputs_; }  // tokens kept

    // The continuation of the earlier occurrence whose preceding tokens match the context's end
    // longest (at most n_max; ties: the most recent), n_len tokens at most, cut at the end of its
    // output; n_match >= n_key, or an empty result. n_agree: of the occurrences that match as long,
    // how many continue with the same first token (a phrase the target repeats is surer to recur).
    struct match {
        std::vector<llama_token> tokens;
        int32_t n_match = 0, n_same = 0, n_agree = 0;
    };
    match find(const std::vector<llama_token> & context, int32_t n_max, int32_t n_len) const;

private:
    static uint64_t key(const llama_token * last3);
    size_t capacity_;
    std::vector<llama_token> buf_;  // outputs, each followed by -1
    size_t n_outputs_ = 0;
    std::unordered_map<uint64_t, std::vector<int32_t>> index_;  // key of buf_[e-2..e] -> e, ascending
};

}  // namespace pyeagle
