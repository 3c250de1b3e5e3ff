// Greedy decoding of many independent sequences at once: the self-distillation data generator.
//
// Slot s is llama.cpp sequence s in a context of its own (sharing the target's weights), with
// its own KV stream (kv_unified off), so each token attends over its own sequence only, as a
// single-sequence decode would. step() appends each slot's pending tokens, all slots in as few
// llama_decode calls as n_batch allows; every fed token is an output row, so its post-norm
// hidden state (the EAGLE-1/2 feature) is recorded, and every fed slot gets its greedy next token
// (or, after set_sampling with a temperature > 0, a sampled one: Magpie-style prompt synthesis).
// With tap_layers, the inputs of those layers (n_layer: the last layer's output, before the final
// norm) are recorded too, for EAGLE-3 heads.
#pragma once

#include "sampling.h"
#include "target.h"

#include <memory>
#include <string>
#include <vector>

namespace pyeagle {

class batch_decoder {
public:
    // n_ctx_slot: tokens one slot may hold (llama.cpp rounds it up to a multiple of 256)
    batch_decoder(const target & t, int32_t n_slots, int32_t n_ctx_slot, int32_t n_batch, int32_t n_threads,
                  const std::vector<int32_t> & tap_layers = {});

    int32_t n_slots() const { return n_slots_; }
    int32_t n_ctx_slot() const { return n_ctx_slot_; }
    int32_t n_embd() const { return n_embd_; }
    int32_t n_past(int32_t slot) const { return (int32_t) past_.at(slot); }

    // feeds[s]: tokens to append to slot s (empty: the slot sits this step out). Returns, per
    // slot, the greedy next token after its last fed token (-1 for slots not fed). Afterwards
    // hidden() holds one row per fed token, slot by slot, each slot's in order.
    std::vector<llama_token> step(const std::vector<std::vector<llama_token>> & feeds);
    const std::vector<float> & hidden() const { return hidden_; }
    const std::vector<float> & taps() const { return taps_; }  // [rows, n_taps * n_embd], low to high
    int32_t n_taps() const { return (int32_t) tap_layers_.size(); }

    void truncate(int32_t slot, int32_t n_keep);  // drops slot's tokens n_keep..

    // temperature 0 (the default): step() returns greedy tokens; > 0: samples (top-k, top-p, seed)
    void set_sampling(const sampling_params & sp);

private:
    static bool final_tap_eval(ggml_tensor * t, bool ask, void * data);  // llama.cpp's cb_eval

    const target & target_;
    std::unique_ptr<llama_context, llama_context_deleter> ctx_;
    std::unique_ptr<llama_batch, llama_batch_deleter>     batch_;
    int32_t n_slots_ = 0, n_ctx_slot_ = 0, n_batch_ = 0, n_embd_ = 0, n_vocab_ = 0;
    std::vector<size_t> past_;  // tokens in each slot's KV
    std::vector<float> hidden_;
    std::vector<int32_t> tap_layers_;
    std::string final_tap_name_;    // graph tensor of the tap n_layer ("" when not tapped)
    std::vector<float> final_tap_;  // [n_tokens, n_embd] of the last decode
    std::vector<float> taps_;
    sampling_params sampling_;
    std::mt19937_64 rng_;
    std::vector<float> probs_;
};

}  // namespace pyeagle
