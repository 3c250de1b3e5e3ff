#include "sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace pyeagle {

// The first position of the largest value, as std::max_element, which compilers do not vectorise
// (a comparison and an index per value: ~47 us over a 49k vocabulary here, once a token). The max
// by 16 lanes first, a loop they turn into vector max instructions, then its first position: ~15 us
// (benchmarks/argmax.cpp).
int32_t argmax(const float * logits, int32_t n) {
    constexpr int32_t lanes = 16;
    if (n < 2 * lanes) return (int32_t) (std::max_element(logits, logits + n) - logits);
    float acc[lanes];
    std::copy(logits, logits + lanes, acc);
    int32_t i = lanes;
    for (; i + lanes <= n; i += lanes) {
        for (int32_t j = 0; j < lanes; ++j) acc[j] = logits[i + j] > acc[j] ? logits[i + j] : acc[j];
    }
    float m = acc[0];
    for (int32_t j = 1; j < lanes; ++j) m = acc[j] > m ? acc[j] : m;
    for (; i < n; ++i) m = logits[i] > m ? logits[i] : m;
    for (int32_t k = 0; k < n; ++k) {
        if (logits[k] == m) return k;
    }
    return (int32_t) (std::max_element(logits, logits + n) - logits);  // NaNs: max_element's rule
}

void target_probs(const float * logits, int32_t n, const sampling_params & sp, std::vector<float> & p) {
    p.resize(n);
    const float inv_t = 1.0f / std::max(sp.temperature, 1e-6f);
    const float mx = *std::max_element(logits, logits + n);
    double sum = 0;
    for (int32_t i = 0; i < n; ++i) sum += p[i] = std::exp((logits[i] - mx) * inv_t);
    if (sp.top_k > 0 && sp.top_k < n) {
        std::vector<float> tmp(p);
        std::nth_element(tmp.begin(), tmp.begin() + (sp.top_k - 1), tmp.end(), std::greater<float>());
        const float kth = tmp[sp.top_k - 1];
        // keep exactly top_k: among ties at the threshold keep the lowest ids
        int32_t above = 0;
        for (float v : p) above += v > kth;
        int32_t ties_left = sp.top_k - above;
        sum = 0;
        for (int32_t i = 0; i < n; ++i) {
            if (p[i] > kth) { sum += p[i]; continue; }
            if (p[i] == kth && ties_left > 0) { --ties_left; sum += p[i]; continue; }
            p[i] = 0.0f;
        }
    }
    if (sp.top_p < 1.0f) {
        std::vector<int32_t> idx;
        for (int32_t i = 0; i < n; ++i) if (p[i] > 0) idx.push_back(i);
        auto before = [&](int32_t a, int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); };  // a total order
        const double target_mass = sp.top_p * sum;
        // The nucleus is a prefix of idx in that order. Order only the best m (nth_element, then
        // sort: exactly the first m of a full sort) and widen m until they hold the mass: the
        // same set and the same sum as sorting everything, without sorting the whole vocabulary.
        double acc = 0;
        size_t keep = 0;
        for (size_t m = std::min<size_t>(idx.size(), 256);; m = std::min(idx.size(), m * 8)) {
            std::nth_element(idx.begin(), idx.begin() + (m - 1), idx.end(), before);
            std::sort(idx.begin(), idx.begin() + m, before);
            acc = 0;
            keep = 0;
            while (keep < m && acc < target_mass) acc += p[idx[keep++]];
            if (acc >= target_mass || m == idx.size()) break;
        }
        for (size_t j = keep; j < idx.size(); ++j) p[idx[j]] = 0.0f;
        sum = acc;
    }
    const float inv = (float) (1.0 / sum);
    for (float & v : p) v *= inv;
}

int32_t sample(const std::vector<float> & p, std::mt19937_64 & rng) {
    double sum = 0;
    for (float v : p) sum += v;
    const double u = std::uniform_real_distribution<double>(0.0, sum)(rng);
    double acc = 0;
    int32_t last = -1;
    for (int32_t i = 0; i < (int32_t) p.size(); ++i) {
        if (p[i] <= 0) continue;
        acc += p[i];
        last = i;
        if (u < acc) return i;
    }
    return last;  // rounding at the top end
}

void top_k_logprobs(const float * logits, int32_t n, int32_t k, std::vector<std::pair<float, int32_t>> & out) {
    k = std::min(k, n);
    const float mx = *std::max_element(logits, logits + n);
    double sum = 0;
    for (int32_t i = 0; i < n; ++i) sum += std::exp(logits[i] - mx);
    const float lse = mx + (float) std::log(sum);
    out.clear();
    out.reserve(k + 1);
    // a small min-heap of the k best (logit, index); ties toward lower index
    auto worse = [](const std::pair<float, int32_t> & a, const std::pair<float, int32_t> & b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
    };
    for (int32_t i = 0; i < n; ++i) {
        if ((int32_t) out.size() < k) {
            out.emplace_back(logits[i], i);
            std::push_heap(out.begin(), out.end(), worse);
        } else if (logits[i] > out.front().first) {
            std::pop_heap(out.begin(), out.end(), worse);
            out.back() = {logits[i], i};
            std::push_heap(out.begin(), out.end(), worse);
        }
    }
    std::sort_heap(out.begin(), out.end(), worse);  // best first
    for (auto & e : out) e.first -= lse;
}

}  // namespace pyeagle
