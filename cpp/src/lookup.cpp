#include "lookup.h"

#include "pyeagle/engine.h"

#include <algorithm>
#include <cmath>

namespace pyeagle {

namespace {
// every earlier position e whose token equals the last one: (match length <= n_max, e), most recent first
std::vector<std::pair<int32_t, int32_t>> suffix_matches(const std::vector<llama_token> & ctx, int32_t n_max) {
    std::vector<std::pair<int32_t, int32_t>> found;
    const int32_t N = (int32_t) ctx.size();
    for (int32_t e = N - 2; e >= 0; --e) {
        if (ctx[e] != ctx[N - 1]) continue;
        int32_t len = 1;
        while (len < n_max && e - len >= 0 && ctx[e - len] == ctx[N - 1 - len]) ++len;
        found.emplace_back(len, e);
    }
    return found;
}

// what followed position e, n tokens; past the context's end the copy goes on through itself
std::vector<llama_token> continuation(const std::vector<llama_token> & ctx, int32_t e, int32_t n) {
    const int32_t N = (int32_t) ctx.size();
    std::vector<llama_token> out;
    for (int32_t i = 0; i < n; ++i) {
        const int32_t at = e + 1 + i;
        out.push_back(at < N ? ctx[at] : out[at - N]);
    }
    return out;
}
}  // namespace

std::vector<lookup_draft> prompt_lookup(const std::vector<llama_token> & ctx, int32_t n_max, int32_t n_len,
                                        int32_t n_chains) {
    std::vector<lookup_draft> out;
    if (ctx.size() < 2 || n_max < 1 || n_len < 1 || n_chains < 1) return out;
    auto found = suffix_matches(ctx, n_max);
    std::stable_sort(found.begin(), found.end(), [](const auto & a, const auto & b) { return a.first > b.first; });
    for (const auto & [len, e] : found) {
        lookup_draft d{continuation(ctx, e, n_len), len};
        const bool seen = std::any_of(out.begin(), out.end(), [&](const lookup_draft & o) { return o.tokens == d.tokens; });
        if (!seen) out.push_back(std::move(d));
        if ((int32_t) out.size() >= n_chains) break;
    }
    return out;
}

suffix_draft suffix_lookup(const std::vector<llama_token> & ctx, int32_t n_max, int32_t depth, int32_t n_nodes) {
    suffix_draft out;
    if (ctx.size() < 2 || n_max < 1 || depth < 1 || n_nodes < 1) return out;
    auto found = suffix_matches(ctx, n_max);
    if (found.empty()) return out;
    int32_t longest = 0;
    for (const auto & f : found) longest = std::max(longest, f.first);
    const int32_t floor = std::min(longest, 8);
    // the trie of the continuations: children found by a scan of the node's own list
    std::vector<llama_token> tok;
    std::vector<int32_t> par, dep, cnt;
    std::vector<std::vector<int32_t>> kids(1);  // [node + 1]: children; [0]: the root's
    for (const auto & [len, e] : found) {
        if (len < floor) continue;
        if (++out.n_occ > 64) { out.n_occ = 64; break; }
        int32_t at = -1;
        for (llama_token t : continuation(ctx, e, depth)) {
            int32_t next = -1;
            for (int32_t c : kids[at + 1]) if (tok[c] == t) { next = c; break; }
            if (next < 0) {
                next = (int32_t) tok.size();
                tok.push_back(t); par.push_back(at); dep.push_back(at < 0 ? 1 : dep[at] + 1); cnt.push_back(0);
                kids[at + 1].push_back(next);
                kids.emplace_back();
            }
            cnt[next]++;
            at = next;
        }
    }
    out.n_match = longest;
    // the n_nodes most travelled nodes (a child is never travelled more than its parent, so with ties
    // to shallower nodes the kept set is connected), by depth
    std::vector<int32_t> order(tok.size());
    for (int32_t i = 0; i < (int32_t) order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
        return cnt[a] != cnt[b] ? cnt[a] > cnt[b] : dep[a] < dep[b];
    });
    order.resize(std::min<size_t>(order.size(), n_nodes));
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return dep[a] < dep[b]; });
    std::vector<int32_t> index(tok.size(), -1);
    for (int32_t i : order) {
        if (par[i] >= 0 && index[par[i]] < 0) continue;  // unreachable, see above
        index[i] = (int32_t) out.token.size();
        out.token.push_back(tok[i]);
        out.parent.push_back(par[i] < 0 ? -1 : index[par[i]]);
        out.depth.push_back(dep[i]);
        out.count.push_back(cnt[i]);
    }
    return out;
}

// A copy that has matched n_match tokens and whose first j steps were accepted continues a match
// of n_match + j: step j's estimate is the first step's rate times the continuation rates after it.
void lookup_source::propose(const std::vector<llama_token> & ctx, int32_t n_len, int32_t n_chains, bool suffix,
                            const acceptance & acc, const token_store * store) {
    nodes_.clear();
    joined_ = false;
    if (n_len < 1 || n_chains < 1) return;
    const double bias = this->bias();
    auto chain_a = [&](int32_t n_match, int32_t depth, bool stored) {
        double a = std::min(1.0, bias * acc.lookup_first(n_match, streak_, stored));
        for (int32_t j = 1; j < depth; ++j) a *= acc.lookup_next(n_match + j, streak_, stored);
        return a;
    };
    if (suffix && !store) {  // the store's continuation competes with prompt-lookup chains, not a tree
        const suffix_draft d = suffix_lookup(ctx, n_match_max, n_len, n_len * 2);
        if (d.n_occ == 0) return;
        const int32_t cap = n_len_cap(d.n_match);
        std::vector<int32_t> kept(d.token.size(), -1);
        // the most travelled path: in depth order, siblings most travelled first, so the first child
        // of the path's last node met is its most travelled one
        std::vector<bool> main(d.token.size(), false);
        for (int32_t i = 0, at = -1; i < (int32_t) d.token.size(); ++i) {
            if (d.parent[i] == at) { main[i] = true; at = i; }
        }
        for (size_t i = 0; i < d.token.size() && (int32_t) nodes_.size() < n_len; ++i) {
            if (d.depth[i] > cap || (d.parent[i] >= 0 && kept[d.parent[i]] < 0)) continue;
            kept[i] = (int32_t) nodes_.size();
            const double share = (double) d.count[i] / d.n_occ;
            nodes_.push_back({d.token[i], d.parent[i] < 0 ? -1 : kept[d.parent[i]], d.depth[i], d.n_match,
                              chain_a(d.n_match, d.depth[i], false) * share, main[i], true, false});
        }
        return;
    }
    struct chain { std::vector<llama_token> tokens; int32_t n_match; bool stored; };
    std::vector<chain> chains;
    for (auto & d : prompt_lookup(ctx, n_match_max, n_len, n_chains)) chains.push_back({std::move(d.tokens), d.n_match, false});
    if (store) {
        token_store::match m = store->find(ctx, n_match_max, n_len);
        const bool dup = std::any_of(chains.begin(), chains.end(), [&](const chain & c) { return c.tokens == m.tokens; });
        if (!m.tokens.empty() && !dup) chains.push_back({std::move(m.tokens), m.n_match, true});
        std::stable_sort(chains.begin(), chains.end(), [&](const chain & a, const chain & b) {
            return chain_a(a.n_match, 1, a.stored) > chain_a(b.n_match, 1, b.stored);
        });
        if ((int32_t) chains.size() > n_chains) chains.resize(n_chains);
    }
    bool first = true;
    for (const chain & d : chains) {
        int32_t parent = -1;
        const int32_t n = std::min<int32_t>((int32_t) d.tokens.size(), n_len_cap(d.n_match));
        for (int32_t j = 0; j < n; ++j) {
            nodes_.push_back({d.tokens[j], parent, j + 1, d.n_match, chain_a(d.n_match, j + 1, d.stored), first, first,
                              d.stored});
            parent = (int32_t) nodes_.size() - 1;
        }
        first = false;
    }
}

std::vector<double> lookup_source::accept_alone() const {
    std::vector<double> a;
    for (const auto & n : nodes_) if (n.alone) a.push_back(n.a);
    std::sort(a.begin(), a.end(), std::greater<double>());
    return a;
}

void lookup_source::add_to(tree_builder & tb, bool alone) {
    joined_ = true;
    for (auto & n : nodes_) {
        n.cand = -1;
        n.added = false;
        if (alone && !n.alone) continue;
        const int32_t parent = n.parent < 0 ? -1 : nodes_[n.parent].cand;
        if (n.parent >= 0 && parent < 0) continue;  // its parent was left out
        n.cand = tb.add_node(parent, n.token, (float) std::log(n.a), n.added);
    }
}

void lookup_source::place(const draft_tree & t, gen_stats & st) {
    if (!joined_) return;
    std::vector<int32_t> node_of;
    for (int32_t i = 1; i < t.size(); ++i) {
        if (t.cand[i] >= (int32_t) node_of.size()) node_of.resize(t.cand[i] + 1, -1);
        node_of[t.cand[i]] = i;
    }
    for (auto & n : nodes_) {
        n.cand = n.cand >= 0 && n.cand < (int32_t) node_of.size() ? node_of[n.cand] : -1;
        if (n.cand >= 0 && n.added) st.n_lookup_drafted++;
    }
}

void lookup_source::score(const std::vector<int32_t> & path, acceptance & acc, gen_stats & st) {
    const bool after = streak_;
    streak_ = false;
    n_run_ = 0;
    if (!joined_) {
        n_hit_ += 0.05 * (n_expect_ - n_hit_);
        return;
    }
    joined_ = false;
    std::vector<char> hit(nodes_.size(), 0);
    double expect = 0;
    int32_t n_hit = 0;
    for (size_t i = 0; i < nodes_.size(); ++i) {
        const node & n = nodes_[i];
        if (n.cand < 0) continue;
        if (n.main) expect += n.a;
        const bool parent_hit = n.parent < 0 || hit[n.parent];
        if (!parent_hit) continue;
        hit[i] = path.size() > (size_t) n.depth && path[n.depth] == n.cand;
        if (n.main) {
            acc.count_lookup(n.n_match + n.depth - 1, after, n.depth - 1, hit[i], n.stored);
            n_hit += hit[i];
        }
        if (!hit[i]) continue;
        streak_ = true;
        n_run_ = std::max(n_run_, n.depth);
        if (n.added) st.n_lookup_accepted++;
    }
    if (expect > 0) {
        constexpr double w = 0.2;
        n_hit_ += w * (n_hit - n_hit_);
        n_expect_ += w * (expect - n_expect_);
    } else {
        n_hit_ += 0.05 * (n_expect_ - n_hit_);
    }
}

}  // namespace pyeagle
