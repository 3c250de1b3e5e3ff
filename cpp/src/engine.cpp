// The round loop: draft -> verify -> accept -> commit (ARCHITECTURE.md, "One round").
//
// State between rounds: the target's KV holds the committed tokens (n_past); `root` is the last
// produced token, emitted but not yet in the KV; features_ holds the target feature of every
// committed position; the head's KV holds the pairs (feature t, token t+1) for t < head.n_committed.
#include "pyeagle/engine.h"

#include "accept.h"
#include "common.h"
#include "draft_head.h"
#include "sampling.h"
#include "target.h"
#include "tree.h"

#include <algorithm>
#include <chrono>
#include <cstring>

namespace pyeagle {

namespace {
using clock_t_ = std::chrono::steady_clock;
double since(clock_t_::time_point t0) { return std::chrono::duration<double>(clock_t_::now() - t0).count(); }
}  // namespace

engine::engine(const engine_params & params) : params_(params) {
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
        // EAGLE-3 heads need the target's layer taps: read them from the head before loading the target
        target_ = std::make_unique<target>(tp);
        head_ = std::make_unique<draft_head>(params.draft_path, *target_, target_->n_ctx() + 512, 128);
        if (head_->eagle3()) {
            tp.tap_layers = head_->tap_layers();
            head_.reset();
            target_.reset();
            target_ = std::make_unique<target>(tp);
            head_ = std::make_unique<draft_head>(params.draft_path, *target_, target_->n_ctx() + 512, 128);
        }
    } else {
        target_ = std::make_unique<target>(tp);
    }
}

engine::~engine() = default;

void engine::cancel() {
    cancel_.store(true);
    target_->request_abort();
}

void engine::reset() {
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
// token n_past is the root.
void engine::sync_head(int32_t root) {
    const int32_t n_past = target_->n_past(), t0 = head_->n_committed(), nf = head_->n_feature();
    std::vector<llama_token> next(n_past - t0);
    for (int32_t t = t0; t < n_past; ++t) next[t - t0] = t + 1 < n_past ? target_->tokens()[t + 1] : root;
    head_->rollback();
    head_->prefix(next.data(), features_.data() + (size_t) t0 * nf, t0, n_past - t0);
}

// EAGLE-2 expansion + rerank (REFERENCE.md section 2) into `out`, with at most gp.n_tree drafts.
void engine::draft_round(int32_t root, const gen_params & gp, draft_tree & out, gen_stats & st) {
    const auto t0 = clock_t_::now();
    const int32_t n_past = target_->n_past(), k = gp.n_top_k;
    const float min_score = gp.p_min > 0.0f ? std::log(gp.p_min) : -INFINITY;
    tree_builder tb;
    tb.reset(root);
    std::vector<std::pair<float, int32_t>> top;
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
        tb.add_children(parent, top);
    };

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
    for (int32_t depth = 1; depth < gp.n_depth; ++depth) {
        // children of a candidate never outscore it: stop once no frontier node can enter the best n_tree
        std::vector<int32_t> frontier = tb.best_at_depth(depth, k);
        // below the floor a node's children are too: they are never verified, so never expanded
        while (!frontier.empty() && tb.candidates()[frontier.back()].score < min_score) frontier.pop_back();
        if (frontier.empty()) break;
        const auto & cands = tb.candidates();
        if ((int32_t) cands.size() >= gp.n_tree) {
            std::vector<float> scores;
            for (const auto & c : cands) scores.push_back(c.score);
            std::nth_element(scores.begin(), scores.begin() + (gp.n_tree - 1), scores.end(), std::greater<float>());
            if (cands[frontier[0]].score < scores[gp.n_tree - 1]) break;
        }
        if (oracle_) {
            for (int32_t f : frontier) add(f, nullptr);
            continue;
        }
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
    }
    lookup_chains_.clear();
    if (gp.n_lookup > 0) {
        // more chains, and chains scored more generously, only in bigger trees: with few places a
        // chain that misses displaces a better head draft (measured in docs/BENCHMARKS.md)
        const int32_t n_chains = std::clamp(gp.n_tree / 15, 1, lookup_n_chains);
        add_lookup(root, std::min(gp.n_lookup, gp.n_tree), n_chains, n_chains == 1, tb);
    }
    int32_t m = gp.n_tree;
    if (gp.adaptive && !verify_cost_.empty()) {
        // the best m-node tree holds the m best-scoring candidates (a child never outscores its
        // parent); exp(score) estimates a node's chance to be accepted (EAGLE-2's observation)
        std::vector<float> sc;
        for (const auto & c : tb.candidates()) if (c.score >= min_score) sc.push_back(c.score);
        std::sort(sc.begin(), sc.end(), std::greater<float>());
        const double t_draft = since(t0);
        double expect = 1.0, best = expect / (t_draft + verify_cost(1));
        m = 0;
        for (int32_t i = 0; i < (int32_t) sc.size() && i < gp.n_tree; ++i) {
            expect += std::exp((double) sc[i]);
            const double rate = expect / (t_draft + verify_cost(i + 2));
            if (rate > best) { best = rate; m = i + 1; }
        }
    }
    out = tb.rerank(m, min_score);
    if (!lookup_chains_.empty()) {  // chain steps: candidate index -> tree node (-1: not kept)
        std::vector<int32_t> node_of(tb.candidates().size(), -1);
        for (int32_t i = 1; i < out.size(); ++i) node_of[out.cand[i]] = i;
        for (auto & c : lookup_chains_) {
            for (size_t j = 0; j < c.nodes.size(); ++j) {
                c.nodes[j] = node_of[c.nodes[j]];
                if (c.nodes[j] >= 0 && c.added[j]) st.n_lookup_drafted++;
            }
        }
    }
    st.n_drafted += out.size() - 1;
    st.t_draft += since(t0);
}

// The prompt-lookup chains join the candidates. Their steps score like a head's path log-probability,
// an estimate of the log chance that the step is accepted, from what this generation measured for
// chains of the same match length and rank (Laplace prior 1/2): the first step at log(rate of first
// steps), each further one adds log(rate of further steps given the one before was accepted).
// Chains either copy a real repeat and run long, or are wrong at once: the two rates differ a lot.
// `by_streak`: the first step's rate is the one measured after rounds like the last (that did or
// did not accept a copied step): inside a repeat it is high, outside it low.
void engine::add_lookup(int32_t root, int32_t n_len, int32_t n_chains, bool by_streak, tree_builder & tb) {
    std::vector<llama_token> ctx(target_->tokens().begin(), target_->tokens().end());
    ctx.push_back(root);
    auto log_rate = [](const lookup_count & c) { return (float) std::log((c.hit + 1.0) / (c.tried + 2.0)); };
    const std::vector<lookup_draft> drafts = prompt_lookup(ctx, lookup_n_max, n_len, n_chains);
    for (size_t i = 0; i < drafts.size(); ++i) {  // i: the chain's rank
        lookup_rates & r = lookup_[drafts[i].n_match][i > 0];
        const float first = log_rate(by_streak ? r.first_after[lookup_streak_] : r.first), next = log_rate(r.next);
        std::vector<float> scores(drafts[i].tokens.size());
        for (size_t j = 0; j < scores.size(); ++j) scores[j] = first + next * (float) j;
        lookup_chain c{{}, {}, &r};
        c.nodes = tb.add_path(drafts[i].tokens, scores, c.added);
        lookup_chains_.push_back(std::move(c));
    }
}

// After acceptance: each verified chain step whose parent was accepted is a try; count the hits.
void engine::score_lookup(const std::vector<int32_t> & path, gen_stats & st) {
    const bool after = lookup_streak_;
    lookup_streak_ = false;
    for (const auto & c : lookup_chains_) {
        lookup_rates & r = *c.rates;
        for (size_t j = 0; j < c.nodes.size() && c.nodes[j] >= 0; ++j) {
            const bool hit = path.size() > j + 1 && path[j + 1] == c.nodes[j];
            auto count = [hit](lookup_count & n) { n.tried++; n.hit += hit; };
            count(j == 0 ? r.first : r.next);
            if (j == 0) count(r.first_after[after]);
            if (!hit) break;
            lookup_streak_ = true;
            if (c.added[j]) st.n_lookup_accepted++;
        }
    }
}

// One verify pass over n = 1, 2, 3, 4, 6, 8, ... tokens (a chain of `filler`), fastest of two,
// on the current context; the tree is discarded, the committed state is untouched.
void engine::measure_verify_cost(int32_t n_max, int32_t filler) {
    verify_cost_.clear();
    for (int32_t n = 1; n <= n_max; n = n < 4 ? n + 1 : n + n / 2) {
        std::vector<llama_token> tok(n, filler);
        std::vector<int32_t> parent(n);
        for (int32_t i = 0; i < n; ++i) parent[i] = i - 1;
        double best = 1e30;
        for (int rep = 0; rep < 2; ++rep) {
            const auto t0 = clock_t_::now();
            target_->verify(tok.data(), parent.data(), n);
            best = std::min(best, since(t0));
            target_->discard_tree();
        }
        verify_cost_.emplace_back(n, best);
    }
}

double engine::verify_cost(int32_t n) const {
    const auto & c = verify_cost_;
    if (n <= c.front().first) return c.front().second;
    for (size_t i = 1; i < c.size(); ++i) {
        if (n <= c[i].first) {
            const double f = (double) (n - c[i - 1].first) / (c[i].first - c[i - 1].first);
            return c[i - 1].second + f * (c[i].second - c[i - 1].second);
        }
    }
    const auto & a = c[c.size() - 2], & b = c.back();  // beyond the measured range: extrapolate linearly
    return b.second + (double) (n - b.first) * (b.second - a.second) / (b.first - a.first);
}

gen_result engine::generate(const std::vector<int32_t> & prompt, const gen_params & gp, const on_tokens & cb) {
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
    cancel_.store(false);
    for (auto & by_rank : lookup_) by_rank[0] = by_rank[1] = lookup_rates{};
    lookup_streak_ = false;
    target_->clear_abort();
    const bool drafting = gp.draft && gp.n_tree > 0 && (head_ || oracle_);
    const int32_t nf = head_ ? head_->n_feature() : 0;
    target_->set_features(drafting && head_ && !oracle_);

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
    if (drafting && gp.adaptive && verify_cost_.empty()) {  // once per engine; counted as prefill time
        t0 = clock_t_::now();
        const int32_t room = std::min(target_->n_batch(), target_->n_ctx() - target_->n_past());
        if (room >= 2) measure_verify_cost(std::min(gp.n_tree + 1, room), root);
        st.t_prefill += since(t0);
    }
    bool go = emit(root);
    if (go && cb && !cb({root})) { res.stop_reason = "callback"; go = false; }
    draft_tree tree;
    while (go) {
        if (cancel_.load()) { res.stop_reason = "cancelled"; break; }
        const int32_t n_past = target_->n_past();
        if (n_past + 1 > target_->n_ctx()) { res.stop_reason = "context_full"; break; }
        std::vector<int32_t> emitted;
        try {
            if (!drafting) {
                t0 = clock_t_::now();
                target_->decode(root);
                emitted.push_back(choose(target_->last_logits(), target_->n_vocab(), sp, rng, scratch));
                st.t_verify += since(t0);
                st.accepted_hist.resize(std::max<size_t>(st.accepted_hist.size(), 1));
                st.accepted_hist[0]++;
            } else {
                gen_params g = gp;
                g.n_tree = std::min({gp.n_tree, target_->n_batch() - 1, target_->n_ctx() - n_past - 1});
                draft_round(root, g, tree, st);
                t0 = clock_t_::now();
                target_->verify(tree.token.data(), tree.parent.data(), tree.size());
                st.t_verify += since(t0);
                t0 = clock_t_::now();
                auto logits = [&](int32_t i) { return target_->logits(i); };
                accept_result acc = sp.temperature <= 0 ? accept_greedy(tree, logits, target_->n_vocab())
                                                        : accept_sampled(tree, logits, target_->n_vocab(), sp, rng, !broken_acceptance_);
                score_lookup(acc.path, st);
                target_->commit(acc.path);
                for (int32_t node : acc.path) keep_features(node, 1);
                for (size_t j = 1; j < acc.path.size(); ++j) emitted.push_back(tree.token[acc.path[j]]);
                emitted.push_back(acc.bonus);
                st.accepted_hist.resize(std::max(st.accepted_hist.size(), acc.path.size()));
                st.accepted_hist[acc.path.size() - 1]++;
                st.t_accept += since(t0);
            }
        } catch (const std::runtime_error & e) {
            if (head_) head_->rollback();
            if (cancel_.load()) { res.stop_reason = "cancelled"; break; }
            throw;
        }
        st.n_passes++;
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
        root = emitted.back();
        if (cb && !cb(emitted) && go) { res.stop_reason = "callback"; go = false; }
    }
    if (head_) head_->rollback();
    st.t_total = since(t_start);
    return res;
}

}  // namespace pyeagle
