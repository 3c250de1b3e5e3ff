// The round policy (docs/ARCHITECTURE.md, "The round policy"): before a round pays for any
// drafting, choose what it does, a plain step, a prompt-lookup chain alone, or a head tree (with
// lookup), and how big, to maximise expected tokens per second.
//
// Both inputs are measured by this engine, never assumed:
//   cost_model   the verify cost of every n up to the largest tree (measured once, then moved by
//                the observed passes: plain steps move its level, larger passes their own point;
//                re-measured when the context has doubled), the head's
//                probe (catch-up prefix + root logits) and expansion steps by row count
//   acceptance   how often drafts of each kind were accepted given their parent was: head drafts
//                by depth and the head's own probability, lookup steps by match length and streak
// No output depends on them: the target verifies whatever is drafted, so the policy moves only speed.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace pyeagle {

// Tries and hits of one kind of draft step. p() blends in a prior worth `weight` tries. Past 256
// tries both halve: the rate follows the text rather than the whole history of the engine.
struct rate_count {
    double tried = 0, hit = 0;
    void add(bool h) {
        if (tried >= 256) { tried *= 0.5; hit *= 0.5; }
        tried += 1;
        hit += h ? 1 : 0;
    }
    double p(double prior, double weight = 2.0) const { return (hit + prior * weight) / (tried + weight); }
};

class cost_model {
public:
    // grid of (tokens, seconds), n ascending, measured at a context of n_past tokens; it covers
    // passes up to n_covered tokens (beyond its last point the cost grows in proportion)
    void set_curve(std::vector<std::pair<int32_t, double>> grid, int32_t n_past, int32_t n_covered);
    bool has_curve() const { return !grid_.empty(); }
    int32_t n_covered() const { return grid_.empty() ? 0 : n_covered_; }
    int32_t measured_at() const { return measured_at_; }
    std::vector<std::pair<int32_t, double>> grid() const;  // the curve now: (tokens, seconds), level applied
    double verify(int32_t n) const;  // seconds of one pass over n tokens: the level times the grid's point
    // An observed pass of the smallest grid size (a plain step: most rounds) moves the level of the
    // whole curve, one of a larger grid size that point. A curve measured while the machine was busy
    // for a while then falls back into shape with the plain steps that follow, rather than pricing
    // every draft too high for the engine's lifetime (draft sizes it prices out are never observed).
    void observe_verify(int32_t n, double seconds);
    // The context has grown (attention costs more, by more for bigger passes): passes timed now at a
    // few of the grid's sizes (anchors, ascending) move every point by the ratio now / before,
    // interpolated between anchors in n (flat beyond them). Keeps the kernels' step shape between
    // anchors, which does not depend on the context, at a fraction of a whole measurement.
    void rescale(const std::vector<std::pair<int32_t, double>> & anchors, int32_t n_past);

    double probe() const { return probe_; }  // head catch-up prefix + root logits, seconds
    void observe_probe(double seconds);
    double step(int32_t n_rows) const;       // one head expansion step over n rows, seconds
    void observe_step(int32_t n_rows, double seconds);

private:
    size_t at_or_above(int32_t n) const;  // the first grid point with n or more tokens (or the last)
    std::vector<std::pair<int32_t, double>> grid_;
    int32_t measured_at_ = 0, n_covered_ = 0;
    double level_ = 1.0;                       // the machine's speed now against the measurement's
    double probe_ = 0;                         // 0: never seen
    std::array<double, 65> step_{};            // [rows] EMA seconds, 0: never seen
};

// Calibrated acceptance: the chance that a draft step is accepted given that its parent was.
class acceptance {
public:
    static constexpr int32_t n_depth = 8, n_q = 10, n_match = 10;
    // head drafts: by depth (1.., the last bucket holds deeper ones) and the head's probability q of
    // the step; the prior is q itself (EAGLE-2's observation that the head is roughly calibrated)
    double head(int32_t depth, double q) const;
    void count_head(int32_t depth, double q, bool hit);
    // copy steps, each by its source (this context, or the engine's earlier outputs: `stored`) and
    // by whether the round before accepted a copied step (inside a repeat or not): the first step of
    // a chain by match length, further steps by the match length they continue (the chain's match
    // plus the steps before them: a repeat grows more certain as it goes). Buckets up to 128+ so
    // that a loop (its last 64 or 128 tokens seen before) learns its own near-certain rate, not that
    // of every copy past 32 tokens: 1.012x (s.e. 0.009), 1.05x on the prompts that loop
    // (docs/BENCHMARKS.md, "How the policy was tuned")
    static int32_t match_bucket(int32_t n_match);  // 1, 2, 3, 4, 5-7, 8-15, 16-31, 32-63, 64-127, 128+ -> 0..9
    double lookup_first(int32_t n_match, bool streak, bool stored = false) const;
    double lookup_next(int32_t n_match, bool streak, bool stored = false) const;
    void count_lookup(int32_t n_match, bool streak, int32_t step, bool hit, bool stored = false);

    // the raw counts, for reports: [depth][q bucket], [source][match bucket][streak]
    const auto & head_counts() const { return head_; }
    const auto & first_counts() const { return first_; }
    const auto & next_counts() const { return next_; }

private:
    static int32_t q_bucket(double q);
    using by_match = std::array<std::array<rate_count, 2>, n_match>;
    std::array<std::array<rate_count, n_q>, n_depth> head_{};
    std::array<by_match, 2> first_{};
    std::array<by_match, 2> next_{};
};

// Tokens per second over the recent rounds of this generation (EMAs of tokens and of time): the
// price of a second. A generation should take the least time for its tokens, so a round option is
// worth its expected tokens minus rate * its seconds (what that time yields on average here).
class throughput {
public:
    void reset(double plain_seconds) { tokens_ = 1.0; seconds_ = plain_seconds; }
    void add(int32_t tokens, double seconds);
    double rate() const { return seconds_ > 0 ? tokens_ / seconds_ : 0.0; }

private:
    double tokens_ = 1.0, seconds_ = 0.0;
};

// The best prefix of a list of drafts sorted by estimated acceptance a (each the chance that the
// draft and all its ancestors are accepted): m maximising the value (1 + a_1 + ... + a_m) -
// rate * (sunk + verify(m + 1)). m = 0 is a plain step.
struct size_choice {
    int32_t m = 0;
    double expect = 1, seconds = 0;
    double value(double rate) const { return expect - rate * seconds; }
};
size_choice best_size(const std::vector<double> & a_desc, double sunk, const cost_model & cost, int32_t m_max,
                      double rate);

// Whether to pay for the head this round. The head's worth is learnt from the rounds it ran: the
// value each such round realised (tokens - rate * seconds) beyond the value the best head-free
// option (plain or lookup) was expected to have, averaged per situation (a lookup chain worth
// verifying or not).
// Realised tokens, not estimates, so that a miscalibrated head cannot keep itself running. While
// the average is negative the head sits out, except every few rounds (8, doubling while those
// explorations keep failing, up to 256), to notice when it pays again. An exploration pays the
// head's catch-up over every token since it last ran and a whole tree: on a CPU where the head does
// not pay, 256 measured 1.016x a cap of 64 (s.e. 0.009; docs/BENCHMARKS.md, "How the policy was tuned").
class head_gate {
public:
    bool run(bool lookup_pays);
    // a head round starts: the value of the head-free option (expected tokens - rate * seconds)
    void begin(bool lookup_pays, double alone_value, double rate);
    // ... and ends: what it gave, and the whole round's time (drafting and verification)
    void end(int32_t tokens, double seconds);

private:
    static constexpr int32_t explore_min = 8, explore_max = 256;
    std::array<double, 2> gain_{{1.0, 1.0}};  // EMA of the gain in tokens; optimistic until measured
    std::array<int32_t, 2> skipped_{};
    std::array<int32_t, 2> explore_{{explore_min, explore_min}};  // doubles while explorations fail
    bool exploring_ = false;
    bool open_ = false, lookup_pays_ = false;
    double alone_value_ = 0, rate_ = 0;
};

}  // namespace pyeagle
