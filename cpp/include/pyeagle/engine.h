// pyeagle's public C++ API: an Engine that generates with EAGLE-2 dynamic draft trees (or plain
// decoding), losslessly: greedy output equals plain greedy decoding, sampling keeps the target's
// distribution.
#pragma once

#include <atomic>
#include <mutex>
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
struct round_state;

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

// How one generate() call decodes. The Python API builds one of these (pyeagle.GenParams).
struct gen_params {
    // draft tree caps (EAGLE-2): n_depth expansion steps of n_top_k per frontier node, n_tree nodes verified
    int32_t  n_depth     = 8;
    int32_t  n_top_k     = 8;
    int32_t  n_tree      = 64;
    // confidence floor: only drafts whose estimated acceptance is >= p_min are verified (0: off)
    float    p_min       = 0.0f;
    // the round policy (budget.h): each round, before paying for drafting, choose a plain step, a
    // prompt-lookup chain alone, or a head tree, and its size and depth within the caps above, to
    // maximise expected tokens per second from this engine's measured verify cost curve, head cost
    // and calibrated acceptance rates. false: every round drafts the head's n_tree best nodes.
    bool     adaptive    = true;
    // prompt lookup: chains of up to n_lookup tokens copied from where the context's last 1-128 tokens
    // occurred before join the tree (0: off); with the policy off, one chain per 15 places of n_tree,
    // 1 to 4. They compete for the tree's places with the head's drafts by their measured acceptance;
    // the target verifies them like any draft, so output is unchanged.
    int32_t  n_lookup    = 64;
    // copy drafts from a suffix tree (every earlier occurrence of the matched suffix votes for its
    // continuation; a tree of up to n_lookup nodes scored by votes, SuffixDecoding-style); false:
    // prompt-lookup chains. On by default: about 1.01x prompt lookup under the round policy on this
    // project's CPU (docs/BENCHMARKS.md, "How the policy was tuned")
    bool     suffix      = true;
    // draft only copies (prompt lookup or the suffix tree), never the head; also without a head
    bool     copy_only   = false;
    // copy drafts also from this engine's earlier outputs (engine::remember): the continuation of the
    // context's longest match there competes with the prompt-lookup chain, so copies are prompt-lookup
    // chains with it on, whatever `suffix`.
    // Off by default: on this project's CPU it measured no faster (docs/BENCHMARKS.md)
    bool     store       = false;
    // with the store on, keep this generation's output for later ones (engine::remember)
    bool     remember    = true;
    bool     draft       = true;  // false: plain decoding through the same target and sampler
    // sampling (shared with plain decoding)
    float    temperature = 0.0f;
    float    top_p       = 1.0f;
    int32_t  top_k       = 0;
    uint64_t seed        = 0;
    int32_t  max_tokens  = 256;
    std::vector<int32_t> stop_tokens;  // besides the model's end-of-generation tokens
};

// What a round did: a plain step, a prompt-lookup chain alone (the head sat out), or a head tree.
enum class round_kind : int32_t { plain = 0, lookup = 1, head = 2 };

struct gen_stats {
    int32_t n_prompt = 0, n_reused = 0;     // prompt tokens, of which reused from the KV
    int32_t n_tokens = 0;                   // generated
    int32_t n_passes = 0;                   // target passes after the prefill (rounds)
    std::vector<int32_t> accepted_hist;     // [k]: rounds that accepted k drafts
    int64_t n_drafted = 0;                  // draft nodes verified, all rounds
    int64_t n_lookup_drafted = 0;           // of which only prompt lookup proposed
    int64_t n_lookup_accepted = 0;          // of those, accepted
    int32_t n_rounds_kind[3] = {0, 0, 0};   // [round_kind] rounds
    int32_t n_tokens_kind[3] = {0, 0, 0};   // [round_kind] tokens those rounds emitted
    double t_kind[3] = {0, 0, 0};           // [round_kind] seconds those rounds took (draft, verify, accept)
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
    // forget an earlier cancel(): a caller about to start generate() on another thread calls this
    // first, so that a cancel() between it and the start of generate() is not lost
    void clear_cancel();
    void reset();   // forget the conversation (KV); what engine::remember keeps stays
    // Keep `tokens` (an output of this target, or text like what it will write) as a copy source for
    // later generations (gen_params::store); a generate() with the store on does so with its output
    // unless gen_params::remember is false. forget() drops them all; n_remembered() counts the tokens kept.
    void remember(const std::vector<int32_t> & tokens);
    void forget();
    size_t n_remembered() const;

    target & tgt() { return *target_; }
    draft_head * head() { return head_.get(); }
    // test hook: replace the head's draft log-probs with an oracle's (e.g. the target itself)
    using draft_oracle = std::function<void(const std::vector<int32_t> & context, std::vector<std::pair<float, int32_t>> & out, int32_t k)>;
    void set_draft_oracle(draft_oracle o) { oracle_ = std::move(o); }
    // test hook: a deliberately wrong acceptance rule (no residual) when choosing among drafts at
    // depth >= from_depth (0: the correct rule), so that the sampling test can show it has the
    // power to catch one, at the first level and deeper
    void set_broken_acceptance(int32_t from_depth) { broken_from_depth_ = from_depth; }

    // test hooks: force the kinds of the coming rounds (cycled; empty: the policy decides), and
    // record each round's (n_past, kind, drafted tokens, their parents)
    void set_forced_kinds(std::vector<round_kind> kinds) { forced_ = std::move(kinds); }
    struct round_trace { int32_t n_past; round_kind kind; std::vector<int32_t> token, parent; };
    void set_trace(bool on) { trace_on_ = on; trace_.clear(); }
    const std::vector<round_trace> & trace() const { return trace_; }
    // the policy's verify cost curve as it stands: (tokens, seconds) at the measured grid points
    std::vector<std::pair<int32_t, double>> verify_curve() const;
    const round_state & policy_state() const { return *rs_; }

private:
    void sync_head(int32_t root);
    // one round's draft tree into `out`; returns what kind of round it is
    round_kind plan_round(int32_t root, const gen_params & gp, draft_tree & out, gen_stats & st);
    void grow_head_tree(int32_t root, const gen_params & gp, bool calibrated, tree_builder & tb);
    void count_head(const draft_tree & t, const std::vector<int32_t> & path);
    double time_verify(int32_t n, int32_t filler);  // seconds of one verify pass over a chain of n, discarded
    void measure_verify_cost(int32_t n_max, int32_t filler);
    void rescale_verify_cost(int32_t filler);

    engine_params params_;
    std::unique_ptr<target> target_;
    std::unique_ptr<draft_head> head_;
    std::vector<float> features_;  // [target n_past, head n_feature]: target features of committed positions
    std::atomic<bool> cancel_{false};
    std::mutex cancel_mutex_;  // cancel() / clear_cancel(): cancel_ and the target's abort flag together
    std::atomic<bool> busy_{false};  // generate() or reset() running: a second caller gets an error, not a corrupt context
    draft_oracle oracle_;
    int32_t broken_from_depth_ = 0;
    // measured by this engine and kept across generate() calls: what a round costs here, how
    // often each kind of draft is accepted, whether the head pays
    std::unique_ptr<round_state> rs_;  // cost_model, acceptance, head_gate, lookup_source (budget.h, lookup.h)
    std::vector<round_kind> forced_;
    size_t n_forced_ = 0;
    bool trace_on_ = false;
    std::vector<round_trace> trace_;
};

}  // namespace pyeagle
