#include "target.h"

#include "common.h"
#include "llama_ext.h"

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>

namespace pyeagle {

// The LM head over one post-norm hidden row, in a graph of its own on the CPU: the op that ends
// llama.cpp's graph (result_norm -> result_output), on the same weights, with the shapes of a decode
// whose only output is that row. A features-on prefill needs every row's hidden state but only the
// last row's logits; llama.cpp computes logits for every output row.
class row_head {
public:
    row_head(ggml_tensor * out, int32_t n_threads) {
        ggml_init_params ip = {ggml_tensor_overhead() * 4 + ggml_graph_overhead_custom(4, false), nullptr, true};
        ctx_ = ggml_init(ip);
        backend_ = ggml_backend_cpu_init();
        if (!ctx_ || !backend_) { release(); throw std::runtime_error("target: cannot initialise the CPU backend"); }
        ggml_backend_cpu_set_n_threads(backend_, std::max(1, n_threads));
        h_ = ggml_new_tensor_2d(ctx_, GGML_TYPE_F32, out->ne[0], 1);
        ggml_set_input(h_);
        logits_ = ggml_mul_mat(ctx_, out, h_);
        ggml_set_output(logits_);
        gf_ = ggml_new_graph_custom(ctx_, 4, false);
        ggml_build_forward_expand(gf_, logits_);
        alloc_ = ggml_gallocr_new(ggml_backend_get_default_buffer_type(backend_));
        if (!alloc_ || !ggml_gallocr_alloc_graph(alloc_, gf_)) { release(); throw std::runtime_error("target: cannot allocate the LM head's graph"); }
    }
    ~row_head() { release(); }
    row_head(const row_head &) = delete;
    row_head & operator=(const row_head &) = delete;

    void logits(const float * h, float * dst) {
        ggml_backend_tensor_set(h_, h, 0, ggml_nbytes(h_));
        if (ggml_backend_graph_compute(backend_, gf_) != GGML_STATUS_SUCCESS) throw std::runtime_error("target: LM head compute failed");
        ggml_backend_tensor_get(logits_, dst, 0, ggml_nbytes(logits_));
    }

private:
    void release() {
        if (alloc_) ggml_gallocr_free(alloc_);
        if (backend_) ggml_backend_free(backend_);
        if (ctx_) ggml_free(ctx_);
        alloc_ = nullptr; backend_ = nullptr; ctx_ = nullptr;
    }
    ggml_context * ctx_ = nullptr;
    ggml_backend_t backend_ = nullptr;
    ggml_gallocr_t alloc_ = nullptr;
    ggml_tensor * h_ = nullptr, * logits_ = nullptr;
    ggml_cgraph * gf_ = nullptr;
};

namespace {

// ggml's AMX matmul (compiled in by -march=native on AMX CPUs) segfaults on the first decode
// (llama.cpp #20824). pyeagle's set-up builds without it; if a build that has it is loaded
// anyway, give up the extra buffer types (AMX and repack) rather than crash.
bool cpu_has_amx_buffer_type() {
    ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (!cpu) return false;
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(cpu);
    auto get_extra = (ggml_backend_dev_get_extra_bufts_t)
        ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts");
    if (!get_extra) return false;
    for (ggml_backend_buffer_type_t * b = get_extra(cpu); b && *b; ++b) {
        if (strstr(ggml_backend_buft_name(*b), "AMX")) return true;
    }
    return false;
}

bool abort_requested(void * data) {
    return static_cast<std::atomic<bool> *>(data)->load();
}

}  // namespace

target::target(const target_params & params) : params_(params) {
    if (params.n_ctx < 8)        throw std::invalid_argument(format("target: n_ctx %d is too small", params.n_ctx));
    if (params.n_batch < 1)      throw std::invalid_argument(format("target: n_batch %d < 1", params.n_batch));
    if (params.n_seq_max < 1 || params.n_seq_max > 256) {  // LLAMA_MAX_SEQ (src/llama-cparams.h)
        throw std::invalid_argument(format("target: n_seq_max %d outside [1, 256]", params.n_seq_max));
    }
    check_gguf_file(params.path, true);

    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = params.n_gpu_layers;
    if (cpu_has_amx_buffer_type()) {
        log(log_level::warn, "pyeagle: this llama.cpp build has ggml's AMX path, which crashes on first "
                             "decode (llama.cpp #20824); loading without extra buffer types. Rebuild with "
                             "scripts/setup.sh for the fast repack kernels.\n");
        mp.use_extra_bufts = false;
    }
    take_last_errors();
    model_.reset(llama_model_load_from_file(params.path.c_str(), mp));
    if (!model_) {
        const std::string why = take_last_errors();
        throw file_error(params.path, "llama.cpp could not load the model" + (why.empty() ? "" : ": " + why));
    }
    vocab_   = llama_model_get_vocab(model_.get());
    n_vocab_ = llama_vocab_n_tokens(vocab_);
    n_embd_  = llama_model_n_embd(model_.get());
    n_layer_ = llama_model_n_layer(model_.get());
    arch_    = meta("general.architecture");

    const bool taps_fit = std::all_of(params.tap_layers.begin(), params.tap_layers.end(),
                                      [&](int32_t l) { return l >= 0 && l <= n_layer_; });
    if (!taps_fit && !params.taps_for.empty()) {
        // the head file that asked for them does not fit this target: its own checks (vocabulary,
        // sizes, then taps) say why, naming both files
        params_.tap_layers.clear();
    } else if (!taps_fit) {
        throw std::invalid_argument(format("target: a tap layer is outside 0..%d (%s)", n_layer_, params.path.c_str()));
    }
    for (int32_t l : params_.tap_layers) {
        if (!ext::arch_has_layer_taps(arch_)) {
            throw std::invalid_argument(format("target: architecture '%s' exposes no layer taps (EAGLE-3 needs "
                                               "them): %s", arch_.c_str(), params.path.c_str()));
        }
        if (l == n_layer_) final_tap_name_ = ext::layer_out_name(n_layer_ - 1);
    }
    // Layer-input taps hold every token's row whether or not it is an output; the post-norm hidden
    // state and the last layer's output only exist for output rows, which also pay a row of logits
    // each (n_vocab floats, twice: graph and output buffer)
    hidden_rows_ = params_.tap_layers.empty() || !final_tap_name_.empty();

    n_threads_ = params.n_threads > 0 ? params.n_threads : (int32_t) std::max(1u, std::thread::hardware_concurrency());
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx           = params.n_ctx;
    cp.n_batch         = std::min(params.n_batch, params.n_ctx);
    cp.n_ubatch        = cp.n_batch;        // a tree is never split across ubatches
    // a tree has at most n_batch leaves; and llama.cpp asserts n_seq_max <= n_outputs_max (= n_batch)
    cp.n_seq_max       = std::min((uint32_t) params.n_seq_max, cp.n_batch);
    cp.kv_unified      = true;              // required for a multi-sequence tree batch
    cp.n_threads       = n_threads_;
    cp.n_threads_batch = n_threads_;
    cp.pooling_type    = LLAMA_POOLING_TYPE_NONE;
    cp.embeddings      = false;
    cp.no_perf         = true;
    cp.flash_attn_type = params.flash_attn < 0 ? LLAMA_FLASH_ATTN_TYPE_AUTO
                       : params.flash_attn ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    if (params.kv_f32) cp.type_k = cp.type_v = GGML_TYPE_F32;
    // the last layer's output (before the final norm) has no layer-input tap: read from the graph
    // as it is computed; and a prefill chunk that needs only hidden states ends the graph there
    cp.cb_eval = eval_hook;
    cp.cb_eval_user_data = this;
    ctx_.reset(llama_init_from_model(model_.get(), cp));
    if (!ctx_) {
        const std::string why = take_last_errors();
        throw std::runtime_error(format("target: could not create a llama.cpp context (n_ctx %d, n_batch %d) for "
                                        "%s%s%s", params.n_ctx, params.n_batch, params.path.c_str(),
                                        why.empty() ? "" : ": ", why.c_str()));
    }
    n_ctx_     = (int32_t) llama_n_ctx(ctx_.get());
    n_batch_   = (int32_t) llama_n_batch(ctx_.get());
    n_seq_max_ = (int32_t) llama_n_seq_max(ctx_.get());
    llama_set_abort_callback(ctx_.get(), abort_requested, &abort_);
    // Layer-input taps stay on for the context's life (a plain step copies its rows too, a few KB):
    // switching them on after decodes without them corrupted the heap on ggml's Vulkan backend
    // (tests/test_gpu.py), and llama.cpp's graph reuse does not compare them.
    for (int32_t l : params_.tap_layers) {
        if (l < n_layer_) ext::set_layer_tap(ctx_.get(), (uint32_t) l, true);
    }
    batch_.reset(new llama_batch(llama_batch_init(n_batch_, 0, n_seq_max_)));
}

target::~target() = default;

ggml_backend_dev_t accelerator_of(const ggml_tensor * t) {
    ggml_backend_dev_t dev = t && t->buffer ? ggml_backend_buft_get_device(ggml_backend_buffer_get_type(t->buffer)) : nullptr;
    return dev && ggml_backend_dev_type(dev) != GGML_BACKEND_DEVICE_TYPE_CPU ? dev : nullptr;
}

ggml_tensor * target::output_matrix() const {
    std::vector<ggml_tensor *> v = ext::model_tensors(model_.get(), "output.weight");
    if (v.empty()) v = ext::model_tensors(model_.get(), "token_embd.weight");
    // rank: a GPU copy first, then a CPU copy outside plain host memory (repacked for the CPU's fast
    // kernels), then any; a buffer type without a device (an mmapped file) is the CPU's
    auto rank = [](const ggml_tensor * t) {
        if (!t->buffer) return 3;
        if (accelerator_of(t)) return 0;
        return ggml_backend_buffer_is_host(t->buffer) ? 2 : 1;
    };
    ggml_tensor * best = nullptr;
    for (ggml_tensor * t : v) {
        if (!best || rank(t) < rank(best)) best = t;
    }
    return best;
}

// --- vocabulary ---------------------------------------------------------------------------

std::vector<llama_token> target::tokenize(const std::string & text, bool add_special, bool parse_special) const {
    std::vector<llama_token> out(text.size() + 8);
    int32_t n = llama_tokenize(vocab_, text.data(), (int32_t) text.size(), out.data(), (int32_t) out.size(),
                               add_special, parse_special);
    if (n < 0) {
        out.resize(-n);
        n = llama_tokenize(vocab_, text.data(), (int32_t) text.size(), out.data(), (int32_t) out.size(),
                           add_special, parse_special);
    }
    if (n < 0) throw std::runtime_error("tokenize: llama.cpp failed to tokenize the text");
    out.resize(n);
    return out;
}

std::string target::token_to_piece(llama_token id, bool special) const {
    check_tokens(&id, 1);
    char buf[256];
    int32_t n = llama_token_to_piece(vocab_, id, buf, sizeof(buf), 0, special);
    if (n >= 0) return std::string(buf, n);
    std::string big(-n, '\0');
    n = llama_token_to_piece(vocab_, id, big.data(), (int32_t) big.size(), 0, special);
    return big.substr(0, std::max(n, 0));
}

std::string target::detokenize(const std::vector<llama_token> & ids, bool special) const {
    check_tokens(ids.data(), (int32_t) ids.size());
    std::string out(ids.size() * 8 + 16, '\0');
    int32_t n = llama_detokenize(vocab_, ids.data(), (int32_t) ids.size(), out.data(), (int32_t) out.size(),
                                 false, special);
    if (n < 0) {
        out.resize(-n);
        n = llama_detokenize(vocab_, ids.data(), (int32_t) ids.size(), out.data(), (int32_t) out.size(), false,
                             special);
    }
    out.resize(std::max(n, 0));
    return out;
}

bool target::is_eog(llama_token id) const { return llama_vocab_is_eog(vocab_, id); }

std::vector<llama_token> target::eog_tokens() const {
    std::vector<llama_token> out;
    for (llama_token t = 0; t < n_vocab_; ++t) {
        if (llama_vocab_is_eog(vocab_, t)) out.push_back(t);
    }
    return out;
}

llama_token target::bos() const { return llama_vocab_bos(vocab_); }

std::string target::chat_template() const {
    const char * t = llama_model_chat_template(model_.get(), nullptr);
    return t ? t : "";
}

std::string target::meta(const std::string & key) const {
    char buf[512];
    const int32_t n = llama_model_meta_val_str(model_.get(), key.c_str(), buf, sizeof(buf));
    if (n < 0) return "";
    if ((size_t) n < sizeof(buf)) return std::string(buf, n);
    std::string big(n + 1, '\0');
    llama_model_meta_val_str(model_.get(), key.c_str(), big.data(), big.size());
    big.resize(n);
    return big;
}

void target::check_tokens(const llama_token * ids, int32_t n) const {
    for (int32_t i = 0; i < n; ++i) {
        if (ids[i] < 0 || ids[i] >= n_vocab_) {
            throw std::invalid_argument(format("token id %d outside the vocabulary [0, %d)", ids[i], n_vocab_));
        }
    }
}

// --- state --------------------------------------------------------------------------------

void target::truncate(int32_t n_keep) {
    if (n_keep < 0 || n_keep > n_past()) {
        throw std::invalid_argument(format("truncate: n_keep %d outside [0, %d]", n_keep, n_past()));
    }
    if (has_tree()) discard_tree();
    llama_memory_seq_rm(llama_get_memory(ctx_.get()), 0, n_keep, -1);
    tokens_.resize(n_keep);
}

void target::set_features(bool on) {
    if (on == features_) return;
    features_ = on;
    llama_set_embeddings(ctx_.get(), on && hidden_rows_);
}

// Called for every graph node with ask = true (do we want its data?), then with ask = false once a
// wanted node is computed: returning false there ends the graph's computation (ggml-backend.cpp,
// ggml_backend_sched_compute_splits). llama.cpp then copies out the hidden states, computed, and
// logits, not computed: the caller ignores those rows.
bool target::eval_hook(ggml_tensor * t, bool ask, void * data) {
    auto * self = static_cast<target *>(data);
    if (!self->features_) return !ask;  // false when asked: not wanted
    const char * name = ggml_get_name(t);
    const bool tap = !self->final_tap_name_.empty() && self->final_tap_name_ == name;
    // the post-norm hidden state: "result_norm", renamed "result_embd_pooled" when llama.cpp
    // returns it as the embedding (pooling none: the same tensor)
    const bool norm = self->stop_at_norm_ && (std::strcmp(name, "result_embd_pooled") == 0 || std::strcmp(name, "result_norm") == 0);
    if (ask) return tap || norm;
    if (tap) {
        self->final_tap_.resize((size_t) ggml_nelements(t));
        ggml_backend_tensor_get(t, self->final_tap_.data(), 0, ggml_nbytes(t));
    }
    if (norm) self->stopped_at_norm_ = true;
    return !norm;
}

// --- evaluation ---------------------------------------------------------------------------

void target::decode_batch(int32_t n_tokens, const char * what) {
    batch_->n_tokens = n_tokens;
    take_last_errors();
    const int32_t ret = llama_decode(ctx_.get(), *batch_);
    if (ret == 0) return;
    const std::string why = take_last_errors();
    if (ret == 1) throw context_full(format("%s: no KV slot for %d tokens (n_ctx %d): %s", what, n_tokens, n_ctx_, why.c_str()));
    if (ret == 2) throw std::runtime_error(format("%s: cancelled", what));
    throw std::runtime_error(format("%s: llama_decode failed (%d)%s%s", what, ret, why.empty() ? "" : ": ", why.c_str()));
}

void target::copy_features(int32_t row0, int32_t n_tokens) {
    const size_t n_taps = params_.tap_layers.size();
    for (int32_t i = 0; hidden_rows_ && i < n_tokens; ++i) {
        const float * h = llama_get_embeddings_ith(ctx_.get(), i);
        if (!h) throw std::runtime_error("target: llama.cpp returned no hidden state");
        std::memcpy(hidden_.data() + (size_t) (row0 + i) * n_embd_, h, sizeof(float) * n_embd_);
    }
    for (size_t k = 0; k < n_taps; ++k) {
        const int32_t l = params_.tap_layers[k];
        const float * t = l < n_layer_ ? ext::layer_tap(ctx_.get(), (uint32_t) l) : final_tap_.data();
        if (l == n_layer_ && final_tap_.size() != (size_t) n_tokens * n_embd_) {
            throw std::runtime_error(format("target: the last layer's output has %zu values, expected %d rows",
                                            final_tap_.size(), n_tokens));
        }
        for (int32_t i = 0; i < n_tokens; ++i) {
            std::memcpy(taps_.data() + ((size_t) (row0 + i) * n_taps + k) * n_embd_,
                        t + (size_t) i * n_embd_, sizeof(float) * n_embd_);
        }
    }
}

void target::prefill(const llama_token * ids, int32_t n) {
    if (has_tree()) throw std::logic_error("prefill: a verified tree is not committed yet");
    if (n < 1) throw std::invalid_argument("prefill: no tokens");
    check_tokens(ids, n);
    if (n_past() + n > n_ctx_) {
        throw context_full(format("context full: %d tokens in context + %d new > n_ctx %d", n_past(), n, n_ctx_));
    }
    n_rows_ = features_ ? n : 0;
    n_logits_ = 0;
    hidden_.resize((size_t) n_hidden_rows() * n_embd_);
    taps_.resize((size_t) n_rows_ * n_embd_ * params_.tap_layers.size());
    const int32_t n_past0 = n_past();
    // When every token must be an output row (its post-norm hidden state is llama.cpp's embedding
    // output), llama.cpp computes and stores a row of logits for each: its output buffer grows to
    // the largest batch (512 x n_vocab floats: 100 MB at a 49k vocabulary, 262 MB at 128k). Chunks
    // of prefill_rows (128) keep it at a quarter of that; on this project's CPU a 1084-token prompt
    // prefilled within 2% of the time in 512-token chunks (docs/BENCHMARKS.md, "Prefill memory").
    const bool all_rows = features_ && hidden_rows_;
    const int32_t chunk = all_rows ? std::min(n_batch_, prefill_rows) : n_batch_;
    // The last chunk stops before the LM head too where row_head gives its last row's logits (not
    // for a chunk of one row, whose LM head in llama.cpp's graph is that already).
    const int32_t m_last = n - (n - 1) / chunk * chunk;
    const bool own = all_rows && m_last > 1 && own_head_state_ != own_head::off;
    const bool own_now = own && own_head_state_ == own_head::on;
    last_logits_own_ = false;
    n_head_skipped_ = 0;
    for (int32_t i0 = 0; i0 < n; i0 += chunk) {
        const int32_t m = std::min(chunk, n - i0);
        for (int32_t i = 0; i < m; ++i) {
            batch_->token[i]     = ids[i0 + i];
            batch_->pos[i]       = n_past() + i;
            batch_->n_seq_id[i]  = 1;
            batch_->seq_id[i][0] = 0;
            batch_->logits[i]    = all_rows || i0 + i == n - 1;
        }
        // Every row is an output only for its hidden state: a chunk before the last needs no logits,
        // so its graph stops before the LM head (a fifth of this target's arithmetic per row). The
        // last chunk keeps its rows together: a token decoded in a batch of another size gets other
        // logits from ggml's kernels (up to ~0.5 apart here), and the first reply token would then
        // differ from plain decoding's more often than the verify passes make it. Its last row's
        // logits then come from row_head (own_now), or from llama.cpp's LM head over every row.
        stop_at_norm_ = all_rows && (i0 + m < n || own_now);
        stopped_at_norm_ = false;
        try {
            decode_batch(m, "prefill");
        } catch (...) {
            stop_at_norm_ = false;
            llama_memory_seq_rm(llama_get_memory(ctx_.get()), 0, n_past0, -1);  // all or nothing
            tokens_.resize(n_past0);
            throw;
        }
        if (stopped_at_norm_) n_head_skipped_ += m;
        stop_at_norm_ = false;
        if (features_) copy_features(i0, m);
        tokens_.insert(tokens_.end(), ids + i0, ids + i0 + m);
        last_logits_row_ = m - 1;
    }
    if (own) own_prefill_logits(!own_now);
}

// The last prefill row's logits through row_head. compare: llama.cpp computed them too (the first
// features-on prefill); the two must agree within kernel noise (~1e-3 here) for row_head to take
// over. They do not where the model's graph does more after the LM head (a logit scale, a soft
// cap), and row_head runs on the CPU only: with the output matrix on a GPU, llama.cpp's LM head
// over a prefill chunk costs little.
void target::own_prefill_logits(bool compare) {
    const int32_t row = n_rows_ - 1;
    if (!row_head_) {
        ggml_tensor * out = output_matrix();
        if (!out || accelerator_of(out) || out->ne[0] != n_embd_ || out->ne[1] != n_vocab_) {
            own_head_state_ = own_head::off;
            return;
        }
        try {
            row_head_.reset(new row_head(out, n_threads_));
        } catch (const std::runtime_error & e) {
            log(log_level::debug, "pyeagle: %s; prefill logits stay llama.cpp's\n", e.what());
            own_head_state_ = own_head::off;
            return;
        }
    }
    own_logits_.resize(n_vocab_);
    row_head_->logits(hidden(row), own_logits_.data());
    if (compare) {
        const float * ref = logits(last_logits_row_);
        float diff = 0, scale = 0;
        for (int32_t i = 0; i < n_vocab_; ++i) {
            diff  = std::max(diff, std::fabs(own_logits_[i] - ref[i]));
            scale = std::max(scale, std::fabs(ref[i]));
        }
        own_head_state_ = std::isfinite(diff) && diff <= 1e-2f * (1.0f + scale) ? own_head::on : own_head::off;
        log(log_level::debug, "pyeagle: prefill logits of one row against llama.cpp's: max difference %g (largest logit %g): %s\n",
            diff, scale, own_head_state_ == own_head::on ? "used from now on" : "not used");
        return;  // this prefill keeps llama.cpp's
    }
    last_logits_own_ = true;
}

void target::verify(const llama_token * ids, const int32_t * parent, int32_t n) {
    if (has_tree()) throw std::logic_error("verify: the previous tree is not committed yet");
    if (n < 1) throw std::invalid_argument("verify: empty tree");
    if (n > n_batch_) {
        throw std::invalid_argument(format("verify: tree of %d nodes exceeds n_batch %d", n, n_batch_));
    }
    check_tokens(ids, n);
    std::vector<int32_t> depth(n, 0);
    std::vector<char> has_child(n, 0);
    if (parent[0] != -1) throw std::invalid_argument("verify: node 0 must be the root (parent -1)");
    for (int32_t i = 1; i < n; ++i) {
        if (parent[i] < 0 || parent[i] >= i) {
            throw std::invalid_argument(format("verify: node %d has parent %d (need 0 <= parent < %d)", i, parent[i], i));
        }
        depth[i] = depth[parent[i]] + 1;
        if (depth[i] < depth[i - 1]) throw std::invalid_argument(format("verify: node %d is out of depth order", i));
        has_child[parent[i]] = 1;
    }
    if (n_past() + n > n_ctx_) {
        throw context_full(format("context full: %d tokens in context + tree of %d > n_ctx %d", n_past(), n, n_ctx_));
    }
    int32_t n_leaves = 0;
    for (int32_t i = 0; i < n; ++i) n_leaves += !has_child[i];
    if (n_leaves > n_seq_max_) {
        throw std::invalid_argument(format("verify: tree has %d leaves > n_seq_max %d", n_leaves, n_seq_max_));
    }

    // leaf j owns seq j; every ancestor of a leaf carries its seq (ascending, so tree_seq_ is a leaf below)
    tree_seq_.assign(n, -1);
    for (int32_t i = 0; i < n; ++i) batch_->n_seq_id[i] = 0;
    int32_t seq = 0;
    for (int32_t leaf = 0; leaf < n; ++leaf) {
        if (has_child[leaf]) continue;
        for (int32_t j = leaf; j >= 0; j = parent[j]) {
            batch_->seq_id[j][batch_->n_seq_id[j]++] = seq;
            if (tree_seq_[j] < 0) tree_seq_[j] = seq;
        }
        ++seq;
    }
    llama_memory_t mem = llama_get_memory(ctx_.get());
    for (int32_t s = 1; s < n_leaves; ++s) llama_memory_seq_cp(mem, 0, s, -1, -1);
    for (int32_t i = 0; i < n; ++i) {
        batch_->token[i]  = ids[i];
        batch_->pos[i]    = n_past() + depth[i];
        batch_->logits[i] = 1;
    }
    tree_n_ = n;  // from here on the KV holds tree cells
    tree_n_leaves_ = n_leaves;
    tree_parent_.assign(parent, parent + n);
    tree_depth_ = std::move(depth);
    try {
        decode_batch(n, "verify");
    } catch (...) {
        discard_tree();
        throw;
    }
    n_rows_ = features_ ? n : 0;
    hidden_.resize((size_t) n_hidden_rows() * n_embd_);
    taps_.resize((size_t) n_rows_ * n_embd_ * params_.tap_layers.size());
    if (features_) copy_features(0, n);
    last_logits_row_ = n - 1;
    last_logits_own_ = false;
    n_logits_ = n;
    tree_tokens_.assign(ids, ids + n);
}

void target::commit(const std::vector<int32_t> & path) {
    if (!has_tree()) throw std::logic_error("commit: no verified tree");
    if (path.empty() || path[0] != 0) throw std::invalid_argument("commit: the path must start at the root (node 0)");
    for (size_t k = 1; k < path.size(); ++k) {
        if (path[k] <= 0 || path[k] >= tree_n_ || tree_parent_[path[k]] != path[k - 1]) {
            throw std::invalid_argument(format("commit: node %d is not a child of node %d", path[k], path[k - 1]));
        }
    }
    const int32_t last = path.back();
    const llama_seq_id s = tree_seq_[last];
    llama_memory_t mem = llama_get_memory(ctx_.get());
    // Each of these walks every KV cell (a commit ~0.07 ms at n_ctx 4096 here: benchmarks/
    // round_overhead.py), so a chain, all in seq 0 (a
    // plain step, a copy round), pays only for the tail it drops.
    if (tree_n_leaves_ > 1) {
        llama_memory_seq_rm(mem, s, n_past() + tree_depth_[last] + 1, -1);  // the unverified tail below `last`
        if (s != 0) {
            llama_memory_seq_keep(mem, s);
            llama_memory_seq_cp(mem, s, 0, -1, -1);
        }
        llama_memory_seq_keep(mem, 0);
    } else if ((int32_t) path.size() < tree_n_) {
        llama_memory_seq_rm(mem, 0, n_past() + tree_depth_[last] + 1, -1);
    }
    for (int32_t node : path) tokens_.push_back(tree_tokens_[node]);
    tree_n_ = 0;
}

void target::discard_tree() {
    if (!has_tree()) return;
    llama_memory_t mem = llama_get_memory(ctx_.get());
    for (int32_t s = 1; s < tree_n_leaves_; ++s) llama_memory_seq_rm(mem, s, -1, -1);
    llama_memory_seq_rm(mem, 0, n_past(), -1);
    tree_n_ = 0;
}

const float * target::last_logits() const {
    if (last_logits_row_ < 0) throw std::logic_error("no logits yet: nothing was decoded");
    return last_logits_own_ ? own_logits_.data() : logits(last_logits_row_);
}

const float * target::logits(int32_t i) const {
    const float * p = llama_get_logits_ith(ctx_.get(), i);
    if (!p) throw std::out_of_range(format("no logits for row %d of the last decode", i));
    return p;
}

}  // namespace pyeagle
