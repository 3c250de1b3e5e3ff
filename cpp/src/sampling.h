// Temperature / top-k / top-p / seeded RNG: one implementation for plain decoding and for the
// stochastic acceptance of draft trees.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace pyeagle {

struct sampling_params {
    float    temperature = 0.0f;  // 0: greedy (argmax)
    float    top_p       = 1.0f;  // nucleus mass kept; 1: off
    int32_t  top_k       = 0;     // most probable tokens kept; 0: off
    uint64_t seed        = 0;
};

int32_t argmax(const float * logits, int32_t n);

// p = the distribution the target samples from at temperature > 0: softmax(logits / T), then
// top-k, then top-p, renormalised. p has n entries, zeros outside the kept set.
void target_probs(const float * logits, int32_t n, const sampling_params & sp, std::vector<float> & p);

// Draws an index from p (which need not be normalised; its sum must be > 0).
int32_t sample(const std::vector<float> & p, std::mt19937_64 & rng);

// The k largest log-softmax values of logits, best first: (logprob, index).
void top_k_logprobs(const float * logits, int32_t n, int32_t k, std::vector<std::pair<float, int32_t>> & out);

}  // namespace pyeagle
