#include "batch_decoder.h"

#include "common.h"
#include "llama_ext.h"
#include "sampling.h"

#include "ggml-backend.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace pyeagle {

batch_decoder::batch_decoder(const target & t, int32_t n_slots, int32_t n_ctx_slot, int32_t n_batch,
                             int32_t n_threads, const std::vector<int32_t> & tap_layers)
    : target_(t), tap_layers_(tap_layers) {
    for (int32_t l : tap_layers_) {
        if (l < 0 || l > t.n_layer()) throw std::invalid_argument(format("batch_decoder: tap layer %d outside 0..%d", l, t.n_layer()));
        if (!ext::arch_has_layer_taps(t.arch())) {
            throw std::invalid_argument(format("batch_decoder: architecture '%s' exposes no layer taps", t.arch().c_str()));
        }
        if (l == t.n_layer()) final_tap_name_ = ext::layer_out_name(t.n_layer() - 1);  // every fed token is an output row
    }
    if (n_slots < 1 || n_slots > 256) throw std::invalid_argument(format("batch_decoder: %d slots outside [1, 256]", n_slots));
    if (n_ctx_slot < 8) throw std::invalid_argument(format("batch_decoder: n_ctx_slot %d is too small", n_ctx_slot));
    if (n_batch < n_slots) throw std::invalid_argument(format("batch_decoder: n_batch %d < %d slots", n_batch, n_slots));
    llama_context_params cp = llama_context_default_params();
    cp.n_seq_max       = (uint32_t) n_slots;
    cp.n_ctx           = (uint32_t) n_ctx_slot * n_slots;
    cp.n_batch         = (uint32_t) n_batch;
    cp.n_ubatch        = (uint32_t) n_batch;
    cp.kv_unified      = false;  // one KV stream per slot: attention over its own tokens only
    cp.n_threads       = n_threads > 0 ? n_threads : t.n_threads();
    cp.n_threads_batch = cp.n_threads;
    cp.pooling_type    = LLAMA_POOLING_TYPE_NONE;
    cp.embeddings      = true;   // the post-norm hidden state of every output row
    cp.no_perf         = true;
    if (!final_tap_name_.empty()) {
        cp.cb_eval = final_tap_eval;
        cp.cb_eval_user_data = this;
    }
    take_last_errors();
    ctx_.reset(llama_init_from_model(t.model(), cp));
    if (!ctx_) {
        const std::string why = take_last_errors();
        throw std::runtime_error(format("batch_decoder: could not create a llama.cpp context (%d slots x %d tokens)%s%s",
                                        n_slots, n_ctx_slot, why.empty() ? "" : ": ", why.c_str()));
    }
    n_slots_    = n_slots;
    n_ctx_slot_ = (int32_t) (llama_n_ctx(ctx_.get()) / (uint32_t) n_slots);
    n_batch_    = (int32_t) llama_n_batch(ctx_.get());
    n_embd_     = t.n_embd();
    n_vocab_    = t.n_vocab();
    past_.assign(n_slots, 0);
    for (int32_t l : tap_layers_) {
        if (l < t.n_layer()) ext::set_layer_tap(ctx_.get(), (uint32_t) l, true);
    }
    batch_.reset(new llama_batch(llama_batch_init(n_batch_, 0, 1)));
}

bool batch_decoder::final_tap_eval(ggml_tensor * t, bool ask, void * data) {
    auto * self = static_cast<batch_decoder *>(data);
    if (self->final_tap_name_ != ggml_get_name(t)) return !ask;  // false: not wanted
    if (ask) return true;
    self->final_tap_.resize((size_t) ggml_nelements(t));
    ggml_backend_tensor_get(t, self->final_tap_.data(), 0, ggml_nbytes(t));
    return true;
}

void batch_decoder::set_sampling(const sampling_params & sp) {
    if (!(sp.temperature >= 0.0f) || !(sp.top_p > 0.0f && sp.top_p <= 1.0f) || sp.top_k < 0) {
        throw std::invalid_argument(format("set_sampling: temperature %g, top_p %g, top_k %d out of range",
                                           sp.temperature, sp.top_p, sp.top_k));
    }
    sampling_ = sp;
    rng_.seed(sp.seed);
}

void batch_decoder::truncate(int32_t slot, int32_t n_keep) {
    if (slot < 0 || slot >= n_slots_) throw std::invalid_argument(format("truncate: slot %d outside [0, %d)", slot, n_slots_));
    if (n_keep < 0 || (size_t) n_keep > past_[slot]) {
        throw std::invalid_argument(format("truncate: n_keep %d outside [0, %zu]", n_keep, past_[slot]));
    }
    llama_memory_seq_rm(llama_get_memory(ctx_.get()), slot, n_keep, -1);
    past_[slot] = (size_t) n_keep;
}

std::vector<llama_token> batch_decoder::step(const std::vector<std::vector<llama_token>> & feeds) {
    if ((int32_t) feeds.size() != n_slots_) {
        throw std::invalid_argument(format("step: %zu feeds for %d slots", feeds.size(), n_slots_));
    }
    size_t total = 0;
    for (int32_t s = 0; s < n_slots_; ++s) {
        for (llama_token id : feeds[s]) {
            if (id < 0 || id >= n_vocab_) throw std::invalid_argument(format("step: token %d outside the vocabulary", id));
        }
        if (past_[s] + feeds[s].size() > (size_t) n_ctx_slot_) {
            throw context_full(format("step: slot %d holds %zu tokens + %zu new > %d", s, past_[s], feeds[s].size(), n_ctx_slot_));
        }
        total += feeds[s].size();
    }
    std::vector<llama_token> next(n_slots_, -1);
    hidden_.resize(total * n_embd_);
    const size_t n_taps = tap_layers_.size();
    taps_.resize(total * n_taps * n_embd_);
    std::vector<size_t> first_row(n_slots_ + 1, 0);  // rows are slot by slot
    for (int32_t s = 0; s < n_slots_; ++s) first_row[s + 1] = first_row[s] + feeds[s].size();
    // Each llama_decode must be one ubatch in batch order, for the taps: without a unified KV,
    // llama.cpp splits a batch into ubatches of equal tokens per sequence (and reorders), so the
    // one-token feeds go together and each longer feed (a prompt) on its own.
    int32_t n = 0;
    std::vector<size_t> dest(n_batch_);          // batch index -> row of hidden_
    std::vector<int32_t> last_of(n_batch_, -1);  // batch index -> slot whose last fed token it is
    auto flush = [&] {
        if (n == 0) return;
        batch_->n_tokens = n;
        take_last_errors();
        const int32_t ret = llama_decode(ctx_.get(), *batch_);
        if (ret != 0) {
            const std::string why = take_last_errors();
            throw std::runtime_error(format("batch_decoder: llama_decode failed (%d)%s%s", ret, why.empty() ? "" : ": ", why.c_str()));
        }
        for (size_t k = 0; k < n_taps; ++k) {
            const int32_t l = tap_layers_[k];
            const float * src = l < target_.n_layer() ? ext::layer_tap(ctx_.get(), (uint32_t) l) : final_tap_.data();
            if (l == target_.n_layer() && final_tap_.size() != (size_t) n * n_embd_) {
                throw std::runtime_error(format("batch_decoder: the last layer's output has %zu values, expected %d rows",
                                                final_tap_.size(), n));
            }
            for (int32_t i = 0; i < n; ++i) {
                std::memcpy(taps_.data() + (dest[i] * n_taps + k) * n_embd_, src + (size_t) i * n_embd_,
                            sizeof(float) * n_embd_);
            }
        }
        for (int32_t i = 0; i < n; ++i) {
            const float * h = llama_get_embeddings_ith(ctx_.get(), i);
            if (!h) throw std::runtime_error("batch_decoder: llama.cpp returned no hidden state");
            std::memcpy(hidden_.data() + dest[i] * n_embd_, h, sizeof(float) * n_embd_);
            if (last_of[i] < 0) continue;
            const float * l = llama_get_logits_ith(ctx_.get(), i);
            if (sampling_.temperature > 0.0f) {
                target_probs(l, n_vocab_, sampling_, probs_);
                next[last_of[i]] = (llama_token) sample(probs_, rng_);
            } else {
                next[last_of[i]] = (llama_token) argmax(l, n_vocab_);
            }
            last_of[i] = -1;
        }
        n = 0;
    };
    auto add = [&](int32_t s, size_t k) {
        batch_->token[n]     = feeds[s][k];
        batch_->pos[n]       = (llama_pos) past_[s]++;
        batch_->n_seq_id[n]  = 1;
        batch_->seq_id[n][0] = s;
        batch_->logits[n]    = 1;
        dest[n]              = first_row[s] + k;
        if (k + 1 == feeds[s].size()) last_of[n] = s;
        if (++n == n_batch_) flush();
    };
    for (int32_t s = 0; s < n_slots_; ++s) {
        if (feeds[s].size() == 1) add(s, 0);
    }
    flush();
    for (int32_t s = 0; s < n_slots_; ++s) {
        if (feeds[s].size() < 2) continue;
        for (size_t k = 0; k < feeds[s].size(); ++k) add(s, k);
        flush();
    }
    return next;
}

}  // namespace pyeagle
