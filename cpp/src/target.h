// The target model through libllama: load, tokenize, prefill, verify a draft tree in one
// llama_decode, commit the accepted root-to-node path.
//
// KV state: sequence 0 holds the committed tokens, positions 0 .. n_past-1, exactly what plain
// decoding of those tokens would hold. A verified tree lives in the KV only until commit():
// every root-to-leaf path gets its own sequence id (leaf j -> seq j, so the first leaf shares
// seq 0), each node carries the ids of all leaves below it, and the committed prefix is copied
// to every leaf id (metadata only). The mask then lets a node see the prefix and its ancestors.
#pragma once

#include "common.h"
#include "llama.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

struct ggml_tensor;

namespace pyeagle {

class row_head;  // target.cpp: the LM head over one hidden row, in a graph of its own

// The device other than the CPU whose buffer holds a weight tensor (a GPU), or nullptr: on the CPU,
// in host memory, or in an mmapped file (a buffer type without a device).
ggml_backend_dev_t accelerator_of(const ggml_tensor * t);

struct target_params {
    std::string path;
    int32_t n_ctx        = 4096;
    int32_t n_threads    = 0;    // 0: all hardware threads
    int32_t n_gpu_layers = 0;    // -1: all
    int32_t n_batch      = 512;  // tokens per llama_decode: the prefill chunk and the largest tree
    int32_t n_seq_max    = 64;   // leaves of a tree (+ seq 0); llama.cpp's hard limit is 256
    std::vector<int32_t> tap_layers;  // EAGLE-3: per token, the inputs of these layers (n_layer: the
                                      // last layer's output, before the final norm)
    std::string taps_for;             // the head file that asks for the taps (named in errors)
    int32_t flash_attn   = -1;   // -1 auto, 0 off, 1 on
    bool    kv_f32       = false;  // f32 KV cache instead of f16 (exactness tests)
};

struct llama_model_deleter   { void operator()(llama_model * m)   const { llama_model_free(m); } };
struct llama_context_deleter { void operator()(llama_context * c) const { llama_free(c); } };
struct llama_batch_deleter   { void operator()(llama_batch * b)   const { llama_batch_free(*b); delete b; } };

class target {
public:
    explicit target(const target_params & params);
    ~target();

    // --- vocabulary -------------------------------------------------------------------
    std::vector<llama_token> tokenize(const std::string & text, bool add_special, bool parse_special) const;
    std::string token_to_piece(llama_token id, bool special) const;  // raw bytes; may split UTF-8
    std::string detokenize(const std::vector<llama_token> & ids, bool special) const;
    bool is_eog(llama_token id) const;
    std::vector<llama_token> eog_tokens() const;
    llama_token bos() const;

    // --- model facts ------------------------------------------------------------------
    const std::string & path() const { return params_.path; }
    const std::string & arch() const { return arch_; }
    std::string chat_template() const;
    std::string meta(const std::string & key) const;  // "" when absent
    int32_t n_vocab()   const { return n_vocab_; }
    int32_t n_embd()    const { return n_embd_; }
    int32_t n_layer()   const { return n_layer_; }
    int32_t n_ctx()     const { return n_ctx_; }
    int32_t n_batch()   const { return n_batch_; }
    int32_t n_seq_max() const { return n_seq_max_; }
    int32_t n_threads() const { return n_threads_; }
    int32_t n_gpu_layers() const { return params_.n_gpu_layers; }
    const std::vector<int32_t> & tap_layers() const { return params_.tap_layers; }
    llama_model * model() const { return model_.get(); }
    // The loaded model's output matrix, where a graph should use it: llama.cpp's copy for the output
    // layer (a GPU's, or one repacked for the CPU's fast kernels) before the host one; a tied output
    // matrix is token_embd.weight. nullptr when the model has none.
    ggml_tensor * output_matrix() const;

    // --- state ------------------------------------------------------------------------
    int32_t n_past() const { return (int32_t) tokens_.size(); }
    const std::vector<llama_token> & tokens() const { return tokens_; }  // committed, in KV
    void truncate(int32_t n_keep);  // drop committed tokens n_keep.. (conversation prefix reuse)
    void clear() { truncate(0); }

    // Features (post-norm hidden state, and taps when configured) cost an output row per token;
    // plain decoding turns them off.
    void set_features(bool on);
    bool features() const { return features_; }

    // --- evaluation -------------------------------------------------------------------
    // Appends n tokens to the committed state (in chunks of n_batch). Afterwards last_logits()
    // is the distribution after the last token and, with features on, hidden(i)/taps(i) hold
    // rows i = 0..n-1 for these tokens.
    void prefill(const llama_token * ids, int32_t n);
    void decode(llama_token id) { prefill(&id, 1); }  // one plain step

    // One llama_decode over a tree: node 0 is the root at position n_past, parent[0] = -1,
    // parent[i] < i, depths non-decreasing. Afterwards logits(i), hidden(i), taps(i) hold
    // node i's rows. The tree stays in the KV until commit() or discard_tree().
    void verify(const llama_token * ids, const int32_t * parent, int32_t n);
    // Keeps the root-to-node path (node indices, path[0] = 0, each the parent of the next)
    // and drops every other tree cell: the KV then equals plain decoding of those tokens.
    void commit(const std::vector<int32_t> & path);
    void discard_tree();
    bool has_tree() const { return tree_n_ > 0; }

    const float * last_logits() const;
    const float * logits(int32_t i) const;
    const float * hidden(int32_t i) const { return hidden_.data() + (size_t) i * n_embd_; }
    const float * taps(int32_t i) const { return taps_.data() + (size_t) i * n_embd_ * params_.tap_layers.size(); }
    int32_t n_rows() const { return n_rows_; }      // feature rows of the last prefill/verify
    // rows of hidden(): none when the features are layer-input taps only (EAGLE-3), which cost no
    // output row per token
    int32_t n_hidden_rows() const { return hidden_rows_ ? n_rows_ : 0; }
    static constexpr int32_t prefill_rows = 128;  // prefill chunk when every token is an output row
    int32_t n_logits() const { return n_logits_; }  // logits rows of the last verify (0 after prefill)
    int32_t n_head_skipped() const { return n_head_skipped_; }  // rows of the last prefill without LM head
    // Whether a features-on prefill computes its last row's logits in a graph of its own (after a
    // first prefill showed them equal to llama.cpp's), so that no prompt row pays the LM head.
    bool own_last_logits() const { return own_head_state_ == own_head::on; }

    // Makes a running llama_decode return early (cancel from another thread).
    void request_abort() { set_cancelling(true); abort_.store(true); }
    void clear_abort() { abort_.store(false); set_cancelling(false); }

private:
    void decode_batch(int32_t n_tokens, const char * what);
    void copy_features(int32_t row0, int32_t n_tokens);
    void check_tokens(const llama_token * ids, int32_t n) const;
    // llama.cpp's cb_eval: reads the final tap; in a prefill chunk that needs no logits, stops the
    // graph after the post-norm hidden state, before the LM head
    static bool eval_hook(ggml_tensor * t, bool ask, void * data);

    target_params params_;
    std::unique_ptr<llama_model, llama_model_deleter>     model_;    // declared before ctx_
    std::unique_ptr<llama_context, llama_context_deleter> ctx_;
    std::unique_ptr<llama_batch, llama_batch_deleter>     batch_;
    const llama_vocab * vocab_ = nullptr;
    std::string arch_;
    int32_t n_vocab_ = 0, n_embd_ = 0, n_layer_ = 0, n_ctx_ = 0, n_batch_ = 0, n_seq_max_ = 0, n_threads_ = 0;
    bool features_ = false;
    bool hidden_rows_ = true;  // features include the post-norm hidden state (see the constructor)
    std::atomic<bool> abort_{false};

    std::vector<llama_token> tokens_;  // committed tokens, seq 0 positions 0..n_past-1
    std::vector<float> hidden_;        // [n_rows, n_embd]
    std::vector<float> taps_;          // [n_rows, n_taps * n_embd]
    std::string final_tap_name_;       // graph tensor of the tap n_layer ("" when not tapped)
    std::vector<float> final_tap_;     // [n_tokens, n_embd] of the last decode
    int32_t n_rows_ = 0;
    int32_t n_logits_ = 0;
    bool stop_at_norm_ = false;        // the decode running needs hidden states only
    bool stopped_at_norm_ = false;     // ... and the hook ended its graph there
    int32_t n_head_skipped_ = 0;
    int32_t last_logits_row_ = -1;     // batch index of the last logits row of the last decode
    // The last row's logits of a features-on prefill, from row_head rather than llama.cpp's graph.
    // untested: the first such prefill computes both and compares them; off: not this model (its
    // graph does more after the LM head: a logit scale or soft cap) or not its device (GPU)
    enum class own_head { untested, on, off };
    own_head own_head_state_ = own_head::untested;
    std::unique_ptr<row_head> row_head_;
    std::vector<float> own_logits_;    // [n_vocab]
    bool last_logits_own_ = false;     // last_logits() is own_logits_
    void own_prefill_logits(bool compare);

    // the tree in the KV (valid between verify and commit)
    int32_t tree_n_ = 0;
    std::vector<int32_t> tree_parent_, tree_depth_, tree_seq_;  // [tree_n] tree_seq: a leaf seq below
    std::vector<llama_token> tree_tokens_;
    int32_t tree_n_leaves_ = 0;
};

}  // namespace pyeagle
