// EAGLE draft heads (EAGLE-1/2 "eagle" and EAGLE-3 "eagle3" GGUFs, docs/FORMAT.md) as a ggml
// graph on the target's backend device, with their own KV cache.
//
// KV layout: cells [0, n_committed) hold committed (feature, next token) pairs, causal; cells
// [n_committed, n_kv) hold tree nodes of the current round. A tree cell sees every committed cell,
// its ancestors (via cell_parent) and itself; rollback() drops all tree cells.
#pragma once

#include "target.h"

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace pyeagle {

struct ggml_context_deleter { void operator()(ggml_context * c) const { ggml_free(c); } };
struct ggml_backend_deleter { void operator()(ggml_backend_t b) const { ggml_backend_free(b); } };
struct ggml_buffer_deleter  { void operator()(ggml_backend_buffer_t b) const { ggml_backend_buffer_free(b); } };
struct ggml_gallocr_deleter { void operator()(ggml_gallocr_t a) const { ggml_gallocr_free(a); } };

// FNV-1a 64 over the token strings, each followed by '\0' (docs/FORMAT.md), as 16 hex digits.
std::string vocab_hash(const target & tgt);

// RoPE as ggml_rope_ext takes it (mode NORM, all head_dim dimensions rotated).
struct rope_params {
    float base = 10000.0f, freq_scale = 1.0f, ext_factor = 0.0f, attn_factor = 1.0f;
    float beta_fast = 32.0f, beta_slow = 1.0f;
    int32_t n_ctx_orig = 4096;
};

class draft_head {
public:
    // n_ctx: KV cells (committed + one round's tree); n_batch_max: most rows in one eval.
    // Pairing mismatches (vocabulary, hidden size, taps) raise file_error naming both files.
    // The head runs on the device of the target's output matrix and uses the target's embedding
    // and output matrix where they live, without copies.
    draft_head(const std::string & path, const target & tgt, int32_t n_ctx, int32_t n_batch_max);
    ~draft_head();

    // The EAGLE-3 tap layers of a head file, from its metadata alone (empty for EAGLE-1/2), so
    // that the target loads once, with its taps. Layer ids run 0..n_layer: id l is the input of
    // layer l, n_layer the last layer's output (before the final norm).
    static std::vector<int32_t> read_tap_layers(const std::string & path);

    bool    eagle3()        const { return eagle3_; }
    int32_t head_dim()      const { return head_dim_; }
    int32_t n_layer()       const;  // decoder layers (EAGLE-1/2 may have several)
    bool    norm_before_residual() const { return norm_before_residual_; }
    const rope_params & rope() const { return rope_; }
    int32_t n_embd()        const { return n_embd_; }
    int32_t n_feature()     const { return n_feat_; }      // width of a committed feature row
    int32_t n_draft_vocab() const { return n_vocab_d_; }
    const std::vector<int32_t> & tap_layers() const { return tap_layers_; }  // EAGLE-3 target layers
    // copy-input EAGLE-1/2 heads (docs/FORMAT.md): the longest context a copy matches; 0: none
    int32_t copy_key()      const { return copy_key_; }
    // the power a_d that calibrates a depth-d draft's probability q for the tree's ranking: the
    // path score adds a_d * log q (pyeagle.tree.depth_power; depths past the list take its last; 1 without)
    float depth_power(int32_t depth) const {
        return depth_power_.empty() ? 1.0f : depth_power_[std::min<size_t>(depth_power_.size(), std::max(depth, 1)) - 1];
    }
    const std::vector<float> & depth_powers() const { return depth_power_; }
    // target id of draft-vocabulary row d (identity for the full vocabulary)
    llama_token to_target(int32_t d) const { return d2t_.empty() ? d : (llama_token) d2t_[d]; }
    const std::string & path() const { return path_; }
    std::string device() const;  // the ggml backend the head runs on ("CPU", "Vulkan0", "CUDA0", ...)

    int32_t n_committed() const { return n_committed_; }
    int32_t n_kv()        const { return n_kv_; }
    int32_t n_ctx()       const { return n_ctx_; }

    // Committed pairs (feature of position pos0+i, token at pos0+i+1), causal, kept in the KV.
    // features: [n, n_feature] target features (EAGLE-3: the concatenated taps).
    void prefix(const llama_token * tokens, const float * features, int32_t pos0, int32_t n);
    // Tree rows: inputs are the head's own outputs y of the parents [n, n_embd]; cell_parent[i]
    // is the KV cell of the parent row (-1: the node hangs off the committed prefix).
    // Returns the first KV cell used (rows take cells first .. first+n-1).
    int32_t tree(const llama_token * tokens, const float * inputs, const int32_t * pos,
                 const int32_t * cell_parent, int32_t n);
    void rollback() { n_kv_ = n_committed_; }
    void truncate(int32_t n_keep);

    int32_t n_out() const { return n_out_; }  // rows of the last eval (the last chunk of a prefix)
    // Outputs of the last prefix()/tree() call, row i: predicted feature y [n_embd] and
    // draft logits [n_draft_vocab].
    const float * y(int32_t i)      const { return out_y_.data() + (size_t) i * n_embd_; }
    // draft logits [n_draft_vocab]: row i of a tree() call; after prefix() only the last row's
    const float * logits(int32_t i) const { return out_logits_.data() + (size_t) i * n_vocab_d_; }
    const float * last_logits() const { return logits(n_logit_rows_ - 1); }
    int32_t n_logit_rows() const { return n_logit_rows_; }

    void set_n_threads(int32_t n);

private:
    struct weights;
    void load(const target & tgt);
    void embed(const llama_token * tokens, int32_t n);  // token rows of the embedding -> emb_ (host)
    void embed_row(llama_token t, float * dst) const;
    // the copy input of cells [first, first + n) -> copy_in_ (host); see draft_head.cpp
    struct copy_guess { llama_token token = -1; int32_t k = 0; };
    void copy_inputs(int32_t first, int32_t n, bool from_target);
    copy_guess committed_copy(const llama_token * key_end, int32_t k, int32_t last_next) const;
    void index_committed(int32_t j);
    void reindex(int32_t n);
    // from_target: rows are committed pairs with target features (causal, EAGLE-3 taps go
    // through fc); otherwise tree rows with the head's own outputs as inputs.
    void eval(const llama_token * tokens, const float * inputs, bool from_target, const int32_t * pos, int32_t n);
    ggml_cgraph * build(int32_t n, int32_t n_kv_after, bool from_target);
    size_t graph_nodes() const;  // room for the graph of build()

    std::string path_;
    bool eagle3_ = false, norm_before_residual_ = false;
    int32_t copy_key_ = 0;
    std::vector<float> depth_power_;
    int32_t n_embd_ = 0, n_feat_ = 0, n_vocab_d_ = 0, n_head_ = 0, n_head_kv_ = 0, n_ff_ = 0, head_dim_ = 0;
    float eps_ = 1e-5f;
    rope_params rope_;
    std::vector<int32_t> tap_layers_;
    std::vector<int64_t> d2t_;

    std::unique_ptr<ggml_backend, ggml_backend_deleter> backend_;
    std::unique_ptr<ggml_context, ggml_context_deleter> ctx_w_;   // weights + KV metadata
    std::unique_ptr<ggml_backend_buffer, ggml_buffer_deleter> buf_w_;
    std::unique_ptr<ggml_context, ggml_context_deleter> ctx_host_;  // the head's own embedding, if any
    std::unique_ptr<ggml_backend_buffer, ggml_buffer_deleter> buf_host_;
    const ggml_tensor * embd_ = nullptr;  // [h, V] in a host buffer (the target's or the head's own)
    std::vector<float> emb_;              // [n, h] embedding rows of the current eval
    std::unique_ptr<weights> w_;
    std::unique_ptr<ggml_gallocr, ggml_gallocr_deleter> alloc_;
    std::vector<uint8_t> graph_meta_;                              // reused every eval

    int32_t n_ctx_ = 0, n_batch_max_ = 0;
    int32_t n_committed_ = 0, n_kv_ = 0, n_out_ = 0, n_logit_rows_ = 0;
    std::vector<int32_t> cell_parent_;  // [n_ctx] parent cell of a tree cell, -1: the prefix
    std::vector<llama_token> cell_tok_; // [n_ctx] the input token of each cell (copy-input heads)
    // copy-input heads: for k = 1..copy_key_, hash of the k tokens ending at committed cell j -> the
    // latest such j whose next cell is committed too
    std::vector<std::unordered_map<uint64_t, int32_t>> copy_index_;
    std::vector<float> copy_in_;        // host staging [n, copy_key_ * n_embd]
    std::vector<float> mask_;           // host staging [n_pad, n_kv]
    std::vector<float> out_y_, out_logits_;

    // per-eval input/output tensors of the current graph
    ggml_tensor * t_emb_ = nullptr, * t_inputs_ = nullptr, * t_pos_ = nullptr, * t_mask_ = nullptr, * t_copy_ = nullptr;
    ggml_tensor * t_y_ = nullptr, * t_logits_ = nullptr;
};

}  // namespace pyeagle
