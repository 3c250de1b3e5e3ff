// pyeagle's public C++ API: an Engine that generates with EAGLE-2 dynamic draft trees (or plain
// decoding), losslessly: greedy output equals plain greedy decoding, sampling keeps the target's
// distribution.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace pyeagle {

class target;
class draft_head;
struct draft_tree;
class tree_builder;

struct engine_params {
    std::string target_path;
    std::string draft_path;      // "" : plain decoding only
    int32_t n_ctx        = 4096;
    int32_t n_threads    = 0;    // 0: all hardware threads
    int32_t n_gpu_layers = 0;
    int32_t n_batch      = 512;  // prefill chunk; also bounds the tree
    int32_t flash_attn   = -1;   // -1 auto, 0 off, 1 on
    bool    kv_f32       = false;
};

struct gen_params {
    // draft tree (EAGLE-2): n_depth expansion steps of n_top_k per frontier node, n_tree nodes verified
    int32_t  n_depth     = 6;
    int32_t  n_top_k     = 4;
    int32_t  n_tree      = 8;
    // confidence floor: only drafts whose path probability under the head is >= p_min are
    // verified (0: off). The tree then shrinks when the head is unsure and, within n_tree,
    // grows deep when it is sure: a node is worth its verify cost only if likely accepted.
    float    p_min       = 0.0f;
    // cost-aware tree size: each round verifies the number of drafts m <= n_tree that maximises
    // expected tokens per second, (1 + sum of the m best path probabilities) / (draft time +
    // verify time of m + 1 tokens), with the verify cost curve measured once on this machine.
    // m = 0 (a plain step) when no draft is likely enough to pay for its verification.
    bool     adaptive    = false;
    // prompt lookup: chains of up to n_lookup tokens copied from where the context's last 1-4 tokens
    // occurred before join the tree (0: off); one chain per 15 places of n_tree, 1 to 4. They
    // compete for the n_tree places with the head's drafts, scored by the acceptance rates measured
    // so far in this generation; the target verifies them like any draft, so output is unchanged.
    // Catches repeated text, which a one-layer head copies poorly.
    int32_t  n_lookup    = 0;
    bool     draft       = true;  // false: plain decoding through the same target and sampler
    // sampling (shared with plain decoding)
    float    temperature = 0.0f;
    float    top_p       = 1.0f;
    int32_t  top_k       = 0;
    uint64_t seed        = 0;
    int32_t  max_tokens  = 256;
    std::vector<int32_t> stop_tokens;  // besides the model's end-of-generation tokens
};

struct gen_stats {
    int32_t n_prompt = 0, n_reused = 0;     // prompt tokens, of which reused from the KV
    int32_t n_tokens = 0;                   // generated
    int32_t n_passes = 0;                   // target passes after the prefill (rounds)
    std::vector<int32_t> accepted_hist;     // [k]: rounds that accepted k drafts
    int64_t n_drafted = 0;                  // draft nodes verified, all rounds
    int64_t n_lookup_drafted = 0;           // of which only prompt lookup proposed
    int64_t n_lookup_accepted = 0;          // of those, accepted
    double t_prefill = 0, t_draft = 0, t_verify = 0, t_accept = 0, t_total = 0;  // seconds
    // tokens per target pass after the prefill (whose pass produced the first token)
    double tau() const { return n_passes ? (double) (n_tokens - 1) / n_passes : 0.0; }
};

struct gen_result {
    std::vector<int32_t> tokens;  // the new tokens only
    std::string stop_reason;      // "eog", "stop_token", "max_tokens", "context_full", "cancelled", "callback"
    gen_stats stats;
};

// Called once per round with the tokens emitted in it; return false to stop.
using on_tokens = std::function<bool(const std::vector<int32_t> &)>;

class engine {
public:
    explicit engine(const engine_params & params);
    ~engine();

    gen_result generate(const std::vector<int32_t> & prompt, const gen_params & gp, const on_tokens & cb = nullptr);
    void cancel();  // from any thread: the running generate() stops within one round
    void reset();   // forget the conversation (KV)

    target & tgt() { return *target_; }
    draft_head * head() { return head_.get(); }
    // test hook: replace the head's draft log-probs with an oracle's (e.g. the target itself)
    using draft_oracle = std::function<void(const std::vector<int32_t> & context, std::vector<std::pair<float, int32_t>> & out, int32_t k)>;
    void set_draft_oracle(draft_oracle o) { oracle_ = std::move(o); }
    // test hook: a deliberately wrong acceptance rule (no residual), so that the sampling test
    // can show it has the power to catch one
    void set_broken_acceptance(bool broken) { broken_acceptance_ = broken; }

private:
    void sync_head(int32_t root);
    void draft_round(int32_t root, const gen_params & gp, draft_tree & out, gen_stats & st);
    void measure_verify_cost(int32_t n_max, int32_t filler);
    double verify_cost(int32_t n) const;  // seconds of one verify of n tokens (interpolated)
    void add_lookup(int32_t root, int32_t n_len, int32_t n_chains, bool by_streak, tree_builder & tb);
    void score_lookup(const std::vector<int32_t> & path, gen_stats & st);

    engine_params params_;
    std::unique_ptr<target> target_;
    std::unique_ptr<draft_head> head_;
    std::vector<float> features_;  // [target n_past, head n_feature]: target features of committed positions
    std::atomic<bool> cancel_{false};
    draft_oracle oracle_;
    bool broken_acceptance_ = false;
    std::vector<std::pair<int32_t, double>> verify_cost_;  // (tokens, seconds), measured once
    // prompt lookup, per generate(): verified and accepted chain steps by match length (1..4) and
    // rank (the first chain or a later one); first steps also split by whether the round before
    // accepted a copied step (lookup_streak_). Per round, each chain's steps as candidates, then
    // as tree nodes (-1: not kept), whether each step was new (not merged into a head draft or an
    // earlier chain), and the rates it counts toward.
    static constexpr int32_t lookup_n_max = 4, lookup_n_chains = 4;
    struct lookup_count { int64_t tried = 0, hit = 0; };
    struct lookup_rates { lookup_count first, next, first_after[2]; };
    lookup_rates lookup_[lookup_n_max + 1][2];
    bool lookup_streak_ = false;
    struct lookup_chain { std::vector<int32_t> nodes; std::vector<bool> added; lookup_rates * rates; };
    std::vector<lookup_chain> lookup_chains_;
};

}  // namespace pyeagle
