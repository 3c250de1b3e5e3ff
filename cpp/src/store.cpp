#include "store.h"

#include <algorithm>

namespace pyeagle {

uint64_t token_store::key(const llama_token * t) {
    uint64_t h = 1469598103934665603ull;
    for (int32_t i = 0; i < n_key; ++i) h = (h ^ (uint32_t) t[i]) * 1099511628211ull;
    return h;
}

void token_store::clear() {
    buf_.clear();
    index_.clear();
    n_outputs_ = 0;
}

void token_store::add(const std::vector<llama_token> & tokens) {
    if ((int32_t) tokens.size() <= n_key) return;
    if (buf_.size() + tokens.size() + 1 > capacity_) clear();
    const int32_t start = (int32_t) buf_.size();
    buf_.insert(buf_.end(), tokens.begin(), tokens.end());
    buf_.push_back(-1);
    ++n_outputs_;
    // a position is worth indexing only if something follows it in the same output
    for (int32_t e = start + n_key - 1; e + 1 < (int32_t) buf_.size() - 1; ++e) {
        index_[key(&buf_[e - n_key + 1])].push_back(e);
    }
}

token_store::match token_store::find(const std::vector<llama_token> & ctx, int32_t n_max, int32_t n_len) const {
    match out;
    const int32_t N = (int32_t) ctx.size();
    if (N < n_key || n_len < 1 || buf_.empty()) return out;
    const auto it = index_.find(key(&ctx[N - n_key]));
    if (it == index_.end()) return out;
    const auto & pos = it->second;
    int32_t best_e = -1;
    std::vector<std::pair<int32_t, int32_t>> seen;  // (match length, position)
    const int32_t n_look = std::min<int32_t>((int32_t) pos.size(), n_scan);
    for (int32_t i = 0; i < n_look; ++i) {
        const int32_t e = pos[pos.size() - 1 - i];
        int32_t len = 0;
        while (len < n_max && len < N && e - len >= 0 && buf_[e - len] == ctx[N - 1 - len]) ++len;
        if (len < n_key) continue;  // a hash collision
        seen.emplace_back(len, e);
        if (len > out.n_match) { out.n_match = len; best_e = e; }
    }
    if (best_e < 0) return out;
    for (int32_t at = best_e + 1; at < (int32_t) buf_.size() && buf_[at] >= 0 && (int32_t) out.tokens.size() < n_len; ++at) {
        out.tokens.push_back(buf_[at]);
    }
    for (const auto & [len, e] : seen) {
        if (len != out.n_match) continue;
        ++out.n_same;
        out.n_agree += buf_[e + 1] == buf_[best_e + 1];
    }
    return out;
}

}  // namespace pyeagle
