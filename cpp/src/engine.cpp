// The round loop: plan -> verify -> accept -> commit -> emit (docs/ARCHITECTURE.md, "One round").
//
// State between rounds: the target's KV holds the committed tokens (n_past); `root` is the last
// produced token, emitted but not yet in the KV; features_ holds the target feature of every
// committed position; the head's KV holds the pairs (feature t, token t+1) for t < head.n_committed.
#include "pyeagle/engine.h"

#include "accept.h"
#include "common.h"
#include "budget.h"
#include "draft_head.h"
#include "lookup.h"
#include "sampling.h"
#include "target.h"
#include "tree.h"

#include <algorithm>
#include <chrono>
#include <cstring>

namespace pyeagle {

namespace {
using clock_t_ = std::chrono::steady_clock;

// One caller at a time: llama.cpp's context is not thread-safe, and a second generation started
// while the first still runs (a caller that stopped waiting for it) would corrupt it.
class busy_guard {
public:
    busy_guard(std::atomic<bool> & busy, const char * what) : busy_(busy) {
        if (busy_.exchange(true)) throw std::logic_error(format("%s: the engine is busy with a generation on another thread", what));
    }
    ~busy_guard() { busy_.store(false); }
    busy_guard(const busy_guard &) = delete;
    busy_guard & operator=(const busy_guard &) = delete;

private:
    std::atomic<bool> & busy_;
};
double since(clock_t_::time_point t0) { return std::chrono::duration<double>(clock_t_::now() - t0).count(); }
constexpr int32_t lookup_n_chains = 4;  // most prompt-lookup chains in one tree

// the candidates' estimates exp(score) at or above min_score, best first (the policy's best_size input)
std::vector<double> estimates_desc(const tree_builder & tb, float min_score = -INFINITY) {
    std::vector<double> a;
    for (const auto & c : tb.candidates()) if (c.score >= min_score) a.push_back(std::exp((double) c.score));
    std::sort(a.begin(), a.end(), std::greater<double>());
    return a;
}
}  // namespace


engine::engine(const engine_params & params) : params_(params), rs_(std::make_unique<round_state>()) {
    target_params tp;
    tp.path = params.target_path;
    tp.n_ctx = params.n_ctx;
    tp.n_threads = params.n_threads;
    tp.n_gpu_layers = params.n_gpu_layers;
    tp.n_batch = params.n_batch;
    tp.n_seq_max = std::min(params.n_batch, 256);
    tp.flash_attn = params.flash_attn;
    tp.kv_f32 = params.kv_f32;
    if (!params.draft_path.empty()) {
        // EAGLE-3 heads need the target's layer taps: read them from the head file first, so that
        // the target loads once, with them
        tp.tap_layers = draft_head::read_tap_layers(params.draft_path);
        tp.taps_for = params.draft_path;
    }
    target_ = std::make_unique<target>(tp);
    if (!params.draft_path.empty()) {
        head_ = std::make_unique<draft_head>(params.draft_path, *target_, target_->n_ctx() + 512, 128);
    }
}

engine::~engine() = default;

// Both flags change together (cancel_ for the round loop, the target's abort flag for a running
// llama_decode): a cancel() racing a clear_cancel() leaves both set or both clear, never an abort
// that the loop does not know is a cancel.
void engine::cancel() {
    std::lock_guard<std::mutex> lock(cancel_mutex_);
    cancel_.store(true);
    target_->request_abort();
}

void engine::clear_cancel() {
    std::lock_guard<std::mutex> lock(cancel_mutex_);
    cancel_.store(false);
    target_->clear_abort();
}

void engine::reset() {
    busy_guard guard(busy_, "reset");
    target_->clear();
    features_.clear();
    if (head_) head_->truncate(0);
}

namespace {
llama_token choose(const float * logits, int32_t n_vocab, const sampling_params & sp, std::mt19937_64 & rng,
                   std::vector<float> & scratch) {
    if (sp.temperature <= 0.0f) return argmax(logits, n_vocab);
    target_probs(logits, n_vocab, sp, scratch);
    return sample(scratch, rng);
}
}  // namespace

// Head prefix pass: the pairs (feature t, token t+1) for t in [head.n_committed, n_past), where
// token n_past is the root. After rounds the head sat out this catches up in one batched pass.
void engine::sync_head(int32_t root) {
    const int32_t n_past = target_->n_past(), t0 = head_->n_committed(), nf = head_->n_feature();
    std::vector<llama_token> next(n_past - t0);
    for (int32_t t = t0; t < n_past; ++t) next[t - t0] = t + 1 < n_past ? target_->tokens()[t + 1] : root;
    head_->rollback();
    head_->prefix(next.data(), features_.data() + (size_t) t0 * nf, t0, n_past - t0);
}

// EAGLE-2 expansion (docs/ARCHITECTURE.md, "The algorithm") into the candidates of `tb`. Scores are the head's path
// log-probabilities, each step's weighted by the head file's power for its depth (sum of a_d log q_d:
// the probability a draft at depth d is right, as the head's held-out data calibrated it; a_d = 1
// without that calibration) or, `calibrated`, the log of each path's estimated acceptance (the policy's
// table, by depth and the head's probability); then expansion also stops where a frontier node is
// too unlikely for any child of it to pay for its place in the verify pass.
void engine::grow_head_tree(int32_t root, const gen_params & gp, bool calibrated, tree_builder & tb) {
    round_state & rs = *rs_;
    const int32_t n_past = target_->n_past(), k = gp.n_top_k;
    const float min_score = gp.p_min > 0.0f ? std::log(gp.p_min) : -INFINITY;
    std::vector<std::pair<float, int32_t>> top;
    std::vector<float> q;
    auto cand_context = [&](int32_t c) {  // oracle hook: committed tokens + root + path to c
        std::vector<int32_t> path;
        for (; c >= 0; c = tb.candidates()[c].parent) path.push_back(tb.candidates()[c].token);
        std::vector<int32_t> ctx(target_->tokens().begin(), target_->tokens().end());
        ctx.push_back(root);
        ctx.insert(ctx.end(), path.rbegin(), path.rend());
        return ctx;
    };
    auto add = [&](int32_t parent, const float * logits) {
        if (oracle_) {
            oracle_(cand_context(parent), top, k);
        } else {
            top_k_logprobs(logits, head_->n_draft_vocab(), k, top);
            for (auto & e : top) e.second = head_->to_target(e.second);
        }
        const int32_t depth = parent < 0 ? 1 : tb.candidates()[parent].depth + 1;
        q.resize(top.size());
        for (size_t i = 0; i < top.size(); ++i) {
            q[i] = std::exp(top[i].first);
            if (calibrated) top[i].first = (float) std::log(rs.acc.head(depth, q[i]));
            else if (head_ && !oracle_) top[i].first *= head_->depth_power(depth);  // the file's calibration
        }
        tb.add_children(parent, top, &q);
    };

    auto t0 = clock_t_::now();
    std::vector<float> y;          // [expanded candidates, n_embd]: each expanded candidate's head output
    std::vector<int32_t> y_row;    // candidate -> row in y (-1: none)
    std::vector<int32_t> cell;     // candidate -> head KV cell
    std::vector<float> y_root;
    if (head_ && !oracle_) {
        sync_head(root);
        y_root.assign(head_->y(head_->n_out() - 1), head_->y(head_->n_out() - 1) + head_->n_embd());
        add(-1, head_->last_logits());
    } else {
        add(-1, nullptr);
    }
    rs.cost.observe_probe(since(t0));
    for (int32_t depth = 1; depth < gp.n_depth; ++depth) {
        // children of a candidate never outscore it: stop once no frontier node can enter the best n_tree
        std::vector<int32_t> frontier = tb.best_at_depth(depth, k);
        // below the floor a node's children are too: they are never verified, so never expanded
        while (!frontier.empty() && tb.candidates()[frontier.back()].score < min_score) frontier.pop_back();
        const auto & cands = tb.candidates();
        const std::vector<double> scores = estimates_desc(tb);
        if (calibrated && rs.cost.has_curve()) {
            // a child (estimate <= its parent's) is worth its place only if its estimate beats the
            // price of the time it adds: its row in the expansion and one more node in the verify
            const double rate = rs.speed.rate();
            const size_choice now = best_size(scores, since(t0), rs.cost, gp.n_tree, rate);
            const int32_t n_rows = std::min<int32_t>(k, (int32_t) frontier.size());
            const double extra = rs.cost.verify(now.m + 2) - rs.cost.verify(now.m + 1) + rs.cost.step(n_rows) / n_rows;
            const double floor = rate * extra;
            while (!frontier.empty() && std::exp(cands[frontier.back()].score) < floor) frontier.pop_back();
        }
        if (frontier.empty()) break;
        if ((int32_t) scores.size() >= gp.n_tree && std::exp((double) cands[frontier[0]].score) < scores[gp.n_tree - 1]) break;
        if (oracle_) {
            for (int32_t f : frontier) add(f, nullptr);
            continue;
        }
        const auto t_step = clock_t_::now();
        const int32_t n = (int32_t) frontier.size(), h = head_->n_embd();
        std::vector<llama_token> tok(n);
        std::vector<float> in((size_t) n * h);
        // a depth-d candidate sits at position n_past + d; its row pairs it with the feature predicted
        // for position n_past + d - 1 and, like prefix row t = (feature t, token t + 1), takes that position
        std::vector<int32_t> pos(n, n_past + depth - 1), parent_cell(n);
        y_row.resize(cands.size(), -1);
        cell.resize(cands.size(), -1);
        for (int32_t i = 0; i < n; ++i) {
            const candidate & c = cands[frontier[i]];
            tok[i] = c.token;
            const float * src = c.parent < 0 ? y_root.data() : y.data() + (size_t) y_row[c.parent] * h;
            std::memcpy(in.data() + (size_t) i * h, src, sizeof(float) * h);
            parent_cell[i] = c.parent < 0 ? -1 : cell[c.parent];
        }
        const int32_t first = head_->tree(tok.data(), in.data(), pos.data(), parent_cell.data(), n);
        for (int32_t i = 0; i < n; ++i) {
            y_row[frontier[i]] = (int32_t) (y.size() / h);
            cell[frontier[i]] = first + i;
            y.insert(y.end(), head_->y(i), head_->y(i) + h);
        }
        for (int32_t i = 0; i < n; ++i) add(frontier[i], head_->logits(i));
        rs.cost.observe_step(n, since(t_step));
    }
}

// The round policy (budget.h, docs/ARCHITECTURE.md). Copies are proposed first (microseconds); the
// best head-free option is a plain step or the copy cut where its value, expected tokens - price of
// time * seconds, peaks. The head runs only if head_gate finds it has been paying here; its tree
// (with the copies joined) is then cut the same way. Forced kinds (a test hook) override the
// choice. With the policy off (gp.adaptive false) every round verifies the n_tree best drafts.
round_kind engine::plan_round(int32_t root, const gen_params & gp, draft_tree & out, gen_stats & st) {
    round_state & rs = *rs_;
    const auto t0 = clock_t_::now();
    const float min_score = gp.p_min > 0.0f ? std::log(gp.p_min) : -INFINITY;
    const bool policy = gp.adaptive && rs.cost.has_curve();
    const bool has_head = (head_ || oracle_) && !gp.copy_only && gp.n_tree > 0;
    // more chains only in bigger fixed trees: with few places a chain that misses displaces a better
    // draft. The policy takes one: its estimates are for the best match; other continuations are
    // the suffix tree's business, which weighs them by their votes.
    const int32_t n_chains = policy ? 1 : std::clamp(gp.n_tree / 15, 1, lookup_n_chains);
    const int32_t n_len = std::min(gp.n_lookup, gp.n_tree);
    std::vector<llama_token> ctx;
    if (n_len > 0) {
        ctx.assign(target_->tokens().begin(), target_->tokens().end());
        ctx.push_back(root);
    }
    rs.lookup.propose(ctx, n_len, n_chains, gp.suffix, rs.acc, gp.store ? &rs.store : nullptr);

    round_kind kind = has_head ? round_kind::head : round_kind::plain;
    size_choice alone;  // the best head-free option: m = 0 is a plain step
    if (policy) {
        alone = best_size(rs.lookup.accept_alone(), 0.0, rs.cost, n_len, rs.speed.rate());
        const bool lookup_pays = alone.m > 0;
        kind = !has_head || !rs.gate.run(lookup_pays) ? (lookup_pays ? round_kind::lookup : round_kind::plain)
                                                      : round_kind::head;
    }
    if (!forced_.empty()) {
        kind = forced_[n_forced_++ % forced_.size()];
        if (kind == round_kind::head && !has_head) kind = round_kind::plain;
        if (kind == round_kind::lookup) alone.m = (int32_t) rs.lookup.accept_alone().size();
    }

    tree_builder tb;
    tb.reset(root);
    int32_t m = 0;
    if (kind == round_kind::head) {
        grow_head_tree(root, gp, policy, tb);
        rs.lookup.add_to(tb, false);
        m = gp.n_tree;
        if (policy) {
            m = best_size(estimates_desc(tb, min_score), since(t0), rs.cost, gp.n_tree, rs.speed.rate()).m;
            rs.gate.begin(alone.m > 0, alone.value(rs.speed.rate()), rs.speed.rate());
        }
    } else if (kind == round_kind::lookup) {
        rs.lookup.add_to(tb, true);
        m = alone.m;
    }
    out = tb.rerank(m, min_score);
    rs.lookup.place(out, st);
    st.n_drafted += out.size() - 1;
    st.t_draft += since(t0);
    if (trace_on_) trace_.push_back({target_->n_past(), kind, out.token, out.parent});
    return kind;
}

// After acceptance: each verified head draft whose parent was accepted is a try for its depth and
// probability bucket.
void engine::count_head(const draft_tree & t, const std::vector<int32_t> & path) {
    std::vector<char> on_path(t.size(), 0);
    for (int32_t node : path) on_path[node] = 1;
    for (int32_t i = 1; i < t.size(); ++i) {
        if (t.q[i] >= 0 && on_path[t.parent[i]]) rs_->acc.count_head(t.depth[i], t.q[i], on_path[i]);
    }
}

// One verify pass over a chain of n `filler` tokens on the current context, timed; the tree is
// discarded, the committed state untouched.
double engine::time_verify(int32_t n, int32_t filler) {
    std::vector<llama_token> tok(n, filler);
    std::vector<int32_t> parent(n);
    for (int32_t i = 0; i < n; ++i) parent[i] = i - 1;
    const auto t0 = clock_t_::now();
    target_->verify(tok.data(), parent.data(), n);
    const double s = since(t0);
    target_->discard_tree();
    return s;
}

// Verify passes over n = 1, 2, ..., 16, 20, 24, 28, 32, 40, 48, 60, 72, ... tokens after one
// untimed warm-up pass, in two sweeps (up, then down), each size keeping its faster time. Dense
// where trees usually are: the cost is not smooth in n.
void engine::measure_verify_cost(int32_t n_max, int32_t filler) {
    auto pass = [&](int32_t n) { return time_verify(n, filler); };
    pass(1);
    // Every size up to 16 (ggml's kernels make the curve step-shaped there), then sparser. Past 16
    // the grid stops where a token no longer gets >= 10% cheaper with the batch (a CPU, ~20): the
    // cost beyond is then proportional, which verify() assumes past the last point. A GPU's flat
    // curve is measured to n_max. Passes that no round would pay for cost the first reply time,
    // and a row of logits each (n_vocab floats) in memory.
    std::vector<std::pair<int32_t, double>> grid;
    bool linear = false;
    for (int32_t n = 1; n <= n_max && !linear; n = n < 16 ? n + 1 : n + 4 * std::max(1, n / 16)) {
        grid.emplace_back(n, pass(n));
        const auto & [n0, s0] = grid[grid.size() >= 2 ? grid.size() - 2 : 0];
        linear = n > 16 && grid.back().second / n > 0.9 * s0 / n0;
    }
    if (!linear && grid.back().first < n_max) grid.emplace_back(n_max, pass(n_max));
    // again, largest first, keeping each size's faster pass: a moment's load during the first sweep
    // would otherwise price the sizes it hit out of every round, where they are never observed again
    for (auto it = grid.rbegin(); it != grid.rend(); ++it) it->second = std::min(it->second, pass(it->first));
    rs_->cost.set_curve(std::move(grid), target_->n_past(), n_max);
}

// The context has doubled since the curve was measured: passes at 1, 2, 4, 8, 16 tokens and the
// grid's largest size, each the faster of two, rescale it (cost_model::rescale): ~0.4 s against
// ~1.45 s for a whole measurement at 460 tokens on this project's CPU (benchmarks/curve_remeasure.py).
void engine::rescale_verify_cost(int32_t filler) {
    const auto grid = rs_->cost.grid();
    std::vector<std::pair<int32_t, double>> anchors;
    for (const auto & [n, s] : grid) {
        if (n == 1 || n == 2 || n == 4 || n == 8 || n == 16 || n == grid.back().first) {
            anchors.emplace_back(n, std::min(time_verify(n, filler), time_verify(n, filler)));
        }
    }
    rs_->cost.rescale(anchors, target_->n_past());
}

std::vector<std::pair<int32_t, double>> engine::verify_curve() const { return rs_->cost.grid(); }

gen_result engine::generate(const std::vector<int32_t> & prompt, const gen_params & gp, const on_tokens & cb) {
    busy_guard guard(busy_, "generate");
    if (prompt.empty()) throw std::invalid_argument("generate: empty prompt");
    if (gp.n_depth < 1 || gp.n_top_k < 1 || gp.n_top_k > 64 || gp.n_tree < 0 || gp.max_tokens < 0) {
        throw std::invalid_argument(format("generate: bad tree parameters (depth %d >= 1, top_k %d in [1, 64], "
                                           "tree %d >= 0, max_tokens %d >= 0)", gp.n_depth, gp.n_top_k, gp.n_tree, gp.max_tokens));
    }
    if (!(gp.p_min >= 0.0f && gp.p_min < 1.0f)) throw std::invalid_argument("generate: need 0 <= p_min < 1");
    if (gp.temperature < 0 || gp.top_p <= 0 || gp.top_p > 1 || gp.top_k < 0) {
        throw std::invalid_argument("generate: need temperature >= 0, 0 < top_p <= 1, top_k >= 0");
    }
    if (gp.n_lookup < 0) throw std::invalid_argument("generate: need n_lookup >= 0");
    const auto t_start = clock_t_::now();
    // a cancel() from before this call (clear_cancel() on) is honoured; one from during it ends with it
    struct on_exit { engine & e; ~on_exit() { e.clear_cancel(); } } clear_when_done{*this};
    rs_->lookup.clear_streak();
    n_forced_ = 0;
    const bool drafting = gp.draft && gp.n_tree > 0 && (gp.copy_only ? gp.n_lookup > 0 : head_ || oracle_);
    const int32_t nf = head_ ? head_->n_feature() : 0;
    target_->set_features(drafting && head_ && !oracle_ && !gp.copy_only);

    gen_result res;
    gen_stats & st = res.stats;
    st.n_prompt = (int32_t) prompt.size();
    sampling_params sp{gp.temperature, gp.top_p, gp.top_k, gp.seed};
    std::mt19937_64 rng(gp.seed);
    std::vector<float> scratch;

    // reuse the longest common prefix of the KV (only where features exist, when drafting)
    const auto & kv = target_->tokens();
    int32_t n_keep = 0;
    while (n_keep < (int32_t) kv.size() && n_keep < (int32_t) prompt.size() && kv[n_keep] == prompt[n_keep]) ++n_keep;
    n_keep = std::min(n_keep, (int32_t) prompt.size() - 1);  // at least one token to prefill for logits
    if (target_->features() && nf > 0) n_keep = std::min(n_keep, (int32_t) (features_.size() / nf));
    target_->truncate(n_keep);
    if (nf > 0) features_.resize(std::min(features_.size(), (size_t) n_keep * nf));
    if (head_) head_->truncate(std::min(head_->n_committed(), std::max(n_keep - 1, 0)));
    st.n_reused = n_keep;

    auto keep_features = [&](int32_t rows_from, int32_t n) {
        if (!target_->features() || nf == 0) return;
        for (int32_t i = 0; i < n; ++i) {
            const float * f = head_->eagle3() ? target_->taps(rows_from + i) : target_->hidden(rows_from + i);
            features_.insert(features_.end(), f, f + nf);
        }
    };

    auto t0 = clock_t_::now();
    try {
        target_->prefill(prompt.data() + n_keep, (int32_t) prompt.size() - n_keep);
    } catch (const std::runtime_error & e) {
        if (cancel_.load()) { res.stop_reason = "cancelled"; st.t_total = since(t_start); return res; }
        throw;
    }
    keep_features(0, (int32_t) prompt.size() - n_keep);
    st.t_prefill = since(t0);

    // emits tokens one by one; returns false (and the reason) when generation must stop there
    auto emit = [&](llama_token t) {
        res.tokens.push_back(t);
        ++st.n_tokens;
        if (target_->is_eog(t)) { res.stop_reason = "eog"; return false; }
        if (std::find(gp.stop_tokens.begin(), gp.stop_tokens.end(), t) != gp.stop_tokens.end()) {
            res.stop_reason = "stop_token";
            return false;
        }
        if ((int32_t) res.tokens.size() >= gp.max_tokens) { res.stop_reason = "max_tokens"; return false; }
        return true;
    };

    if (gp.max_tokens == 0) { res.stop_reason = "max_tokens"; st.t_total = since(t_start); return res; }
    llama_token root = choose(target_->last_logits(), target_->n_vocab(), sp, rng, scratch);
    if (drafting && gp.adaptive) {
        // the verify cost curve: measured once per engine, again when a tree needs more of it or the
        // context has doubled (attention grows with it); counted as prefill time
        const cost_model & cost = rs_->cost;
        const int32_t room = std::min(target_->n_batch(), target_->n_ctx() - target_->n_past());
        const int32_t n_want = std::min(gp.n_tree + 1, room), n_past = target_->n_past();
        const bool fresh = !cost.has_curve() || cost.n_covered() < n_want;
        const bool grown = n_past >= 2 * cost.measured_at() && n_past - cost.measured_at() >= 256;
        if ((fresh || grown) && room >= 2) {
            t0 = clock_t_::now();
            try {
                if (fresh) measure_verify_cost(n_want, root);
                else rescale_verify_cost(root);
            } catch (const std::runtime_error &) {  // a cancel during the calibration passes (slow devices)
                if (cancel_.load()) { res.stop_reason = "cancelled"; st.t_total = since(t_start); return res; }
                throw;
            }
            st.t_prefill += since(t0);
        }
    }
    rs_->speed.reset(rs_->cost.verify(1));  // until rounds are measured: the price of a plain step
    bool go = emit(root);
    if (go && cb && !cb({root})) { res.stop_reason = "callback"; go = false; }
    draft_tree tree;
    while (go) {
        if (cancel_.load()) { res.stop_reason = "cancelled"; break; }
        const int32_t n_past = target_->n_past();
        if (n_past + 1 > target_->n_ctx()) { res.stop_reason = "context_full"; break; }
        std::vector<int32_t> emitted;
        round_kind kind = round_kind::plain;
        const auto t_round = clock_t_::now();
        try {
            if (!drafting) {
                t0 = clock_t_::now();
                target_->decode(root);
                emitted.push_back(choose(target_->last_logits(), target_->n_vocab(), sp, rng, scratch));
                st.t_verify += since(t0);
                st.accepted_hist.resize(std::max<size_t>(st.accepted_hist.size(), 1));
                st.accepted_hist[0]++;
            } else {
                // a round emits its accepted drafts and one token more: drafts deeper than the tokens
                // still wanted less one are verified for nothing (the last rounds of long copies: ~1%
                // of MT-bench's verify time, benchmarks/budget_waste.py)
                const int32_t left = gp.max_tokens - (int32_t) res.tokens.size();
                gen_params g = gp;
                g.n_tree = left > 1 ? std::min({gp.n_tree, target_->n_batch() - 1, target_->n_ctx() - n_past - 1}) : 0;
                g.n_depth = std::max(1, std::min(gp.n_depth, left - 1));
                g.n_lookup = std::min(gp.n_lookup, left - 1);
                kind = plan_round(root, g, tree, st);
                t0 = clock_t_::now();
                target_->verify(tree.token.data(), tree.parent.data(), tree.size());
                const double t_verify = since(t0);
                st.t_verify += t_verify;
                rs_->cost.observe_verify(tree.size(), t_verify);
                t0 = clock_t_::now();
                auto logits = [&](int32_t i) { return target_->logits(i); };
                accept_result acc = sp.temperature <= 0 ? accept_greedy(tree, logits, target_->n_vocab())
                                                        : accept_sampled(tree, logits, target_->n_vocab(), sp, rng, broken_from_depth_);
                rs_->lookup.score(acc.path, rs_->acc, st);
                count_head(tree, acc.path);
                target_->commit(acc.path);
                for (int32_t node : acc.path) keep_features(node, 1);
                for (size_t j = 1; j < acc.path.size(); ++j) emitted.push_back(tree.token[acc.path[j]]);
                emitted.push_back(acc.bonus);
                st.accepted_hist.resize(std::max(st.accepted_hist.size(), acc.path.size()));
                st.accepted_hist[acc.path.size() - 1]++;
                st.t_accept += since(t0);
                if (kind == round_kind::head) rs_->gate.end((int32_t) emitted.size(), since(t_round));
            }
        } catch (const std::runtime_error & e) {
            if (head_) head_->rollback();
            if (cancel_.load()) { res.stop_reason = "cancelled"; break; }
            throw;
        }
        st.n_passes++;
        st.n_rounds_kind[(int) kind]++;
        st.t_kind[(int) kind] += since(t_round);
        rs_->speed.add((int32_t) emitted.size(), since(t_round));
        // emit; a stop inside the accepted path cuts the KV back so that the last emitted token is the root
        const int32_t n_before = n_past;
        size_t j = 0;
        for (; j < emitted.size(); ++j) {
            if (!emit(emitted[j])) { go = false; break; }
        }
        if (!go && j + 1 < emitted.size()) {
            const int32_t keep = n_before + 1 + (int32_t) j;  // old root + emitted[0..j-1]
            target_->truncate(keep);
            if (nf > 0) features_.resize(std::min(features_.size(), (size_t) keep * nf));
            if (head_) head_->truncate(std::min(head_->n_committed(), keep - 1));
            emitted.resize(j + 1);
        }
        st.n_tokens_kind[(int) kind] += go ? (int32_t) emitted.size() : (int32_t) j + 1;
        root = emitted.back();
        if (cb && !cb(emitted) && go) { res.stop_reason = "callback"; go = false; }
    }
    if (head_) head_->rollback();
    if (gp.store && gp.remember) rs_->store.add(res.tokens);
    st.t_total = since(t_start);
    return res;
}

void engine::remember(const std::vector<int32_t> & tokens) {
    busy_guard guard(busy_, "remember");
    for (int32_t t : tokens) {
        if (t < 0 || t >= target_->n_vocab()) {
            throw std::invalid_argument(format("remember: token %d is outside the vocabulary (0..%d)", t, target_->n_vocab() - 1));
        }
    }
    rs_->store.add(tokens);
}

void engine::forget() {
    busy_guard guard(busy_, "forget");
    rs_->store.clear();
}

size_t engine::n_remembered() const { return rs_->store.size(); }

}  // namespace pyeagle
