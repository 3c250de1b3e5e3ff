#include "draft_head.h"

#include "common.h"
#include "llama_ext.h"

#include "ggml-cpu.h"
#include "gguf.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

namespace pyeagle {

std::string vocab_hash(const target & tgt) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (llama_token t = 0; t < tgt.n_vocab(); ++t) {
        const char * s = llama_vocab_get_text(llama_model_get_vocab(tgt.model()), t);
        for (const char * p = s; ; ++p) {
            h ^= (uint8_t) *p;
            h *= 0x100000001b3ull;
            if (*p == '\0') break;
        }
    }
    return format("%016llx", (unsigned long long) h);
}

struct draft_head::weights {
    struct layer {
        // EAGLE-3: the embedding's norm; EAGLE-1/2 layers after the first: the input's norm
        ggml_tensor * attn_norm = nullptr;
        ggml_tensor * wq = nullptr, * wk = nullptr, * wv = nullptr, * wo = nullptr;
        ggml_tensor * bq = nullptr, * bk = nullptr, * bv = nullptr;
        ggml_tensor * ffn_norm = nullptr, * gate = nullptr, * up = nullptr, * down = nullptr;
        ggml_tensor * k_cache = nullptr, * v_cache = nullptr;  // [n_head_kv * head_dim, n_ctx] f32
    };
    ggml_tensor * out = nullptr, * out_norm = nullptr, * rope_freqs = nullptr;
    ggml_tensor * fc = nullptr, * fc_b = nullptr;
    ggml_tensor * copy_fc = nullptr;      // copy-input EAGLE-1/2 heads: [copy_key * h, h]
    ggml_tensor * attn_norm_2 = nullptr;  // EAGLE-3 only
    std::vector<layer> layers;            // EAGLE-1's cnets.py takes several; EAGLE-3 has one
};

namespace {

// A GGUF file opened for validated reads: every accessor checks the type first (gguf's own
// getters abort on a type mismatch) and names the file and the key in its error.
struct gguf_file {
    std::string path;
    gguf_context * g = nullptr;
    ggml_context * meta = nullptr;  // tensor metadata only

    explicit gguf_file(const std::string & p) : path(p) {
        check_gguf_file(p);
        gguf_init_params params = {/*no_alloc =*/ true, /*ctx =*/ &meta};
        g = gguf_init_from_file(p.c_str(), params);
        if (!g) throw file_error(p, "corrupt GGUF (" + take_last_errors() + ")");
    }
    ~gguf_file() {
        if (fp) fclose(fp);
        if (g) gguf_free(g);
        if (meta) ggml_free(meta);
    }
    gguf_file(const gguf_file &) = delete;
    gguf_file & operator=(const gguf_file &) = delete;

    int64_t find(const std::string & key, gguf_type type, bool required) const {
        const int64_t id = gguf_find_key(g, key.c_str());
        if (id < 0) {
            if (required) throw file_error(path, "missing key " + key);
            return -1;
        }
        if (gguf_get_kv_type(g, id) != type) {
            throw file_error(path, format("key %s has type %s, expected %s", key.c_str(),
                                          gguf_type_name(gguf_get_kv_type(g, id)), gguf_type_name(type)));
        }
        return id;
    }
    uint32_t u32(const std::string & key, bool required = true, uint32_t def = 0) const {
        const int64_t id = find(key, GGUF_TYPE_UINT32, required);
        return id < 0 ? def : gguf_get_val_u32(g, id);
    }
    float f32(const std::string & key, bool required = true, float def = 0) const {
        const int64_t id = find(key, GGUF_TYPE_FLOAT32, required);
        return id < 0 ? def : gguf_get_val_f32(g, id);
    }
    bool boolean(const std::string & key, bool def) const {
        const int64_t id = find(key, GGUF_TYPE_BOOL, false);
        return id < 0 ? def : gguf_get_val_bool(g, id);
    }
    std::string str(const std::string & key, bool required = true) const {
        const int64_t id = find(key, GGUF_TYPE_STRING, required);
        return id < 0 ? "" : gguf_get_val_str(g, id);
    }
    std::vector<int32_t> i32_array(const std::string & key) const {
        const int64_t id = find(key, GGUF_TYPE_ARRAY, true);
        if (gguf_get_arr_type(g, id) != GGUF_TYPE_INT32 && gguf_get_arr_type(g, id) != GGUF_TYPE_UINT32) {
            throw file_error(path, "key " + key + " is not an array of 32-bit integers");
        }
        const int32_t * d = (const int32_t *) gguf_get_arr_data(g, id);
        return std::vector<int32_t>(d, d + gguf_get_arr_n(g, id));
    }
    std::vector<float> f32_array(const std::string & key) const {  // empty when the key is absent
        const int64_t id = find(key, GGUF_TYPE_ARRAY, false);
        if (id < 0) return {};
        if (gguf_get_arr_type(g, id) != GGUF_TYPE_FLOAT32) throw file_error(path, "key " + key + " is not an array of floats");
        const float * d = (const float *) gguf_get_arr_data(g, id);
        return std::vector<float>(d, d + gguf_get_arr_n(g, id));
    }
    // Tensor metadata, validated: shape ne (trailing 1s implied), allowed type.
    ggml_tensor * tensor(const std::string & name, std::vector<int64_t> ne, bool required, bool matrix) const {
        ggml_tensor * t = ggml_get_tensor(meta, name.c_str());
        if (!t) {
            if (required) throw file_error(path, "missing tensor " + name);
            return nullptr;
        }
        ne.resize(GGML_MAX_DIMS, 1);
        for (int d = 0; d < GGML_MAX_DIMS; ++d) {
            if (t->ne[d] != ne[d]) {
                throw file_error(path, format("tensor %s has shape [%lld, %lld, %lld], expected [%lld, %lld, %lld]",
                    name.c_str(), (long long) t->ne[0], (long long) t->ne[1], (long long) t->ne[2],
                    (long long) ne[0], (long long) ne[1], (long long) ne[2]));
            }
        }
        const bool ok = matrix ? (t->type == GGML_TYPE_F32 || t->type == GGML_TYPE_F16 || t->type == GGML_TYPE_BF16 ||
                                  t->type == GGML_TYPE_Q8_0 || t->type == GGML_TYPE_Q4_0 || t->type == GGML_TYPE_Q4_1 ||
                                  t->type == GGML_TYPE_Q5_0 || t->type == GGML_TYPE_Q5_1 || t->type == GGML_TYPE_Q4_K ||
                                  t->type == GGML_TYPE_Q5_K || t->type == GGML_TYPE_Q6_K)
                               : t->type == GGML_TYPE_F32;
        if (!ok) throw file_error(path, format("tensor %s has unsupported type %s", name.c_str(), ggml_type_name(t->type)));
        if (t->ne[0] % ggml_blck_size(t->type) != 0) {
            throw file_error(path, format("tensor %s: row of %lld is not a multiple of the %s block", name.c_str(),
                                          (long long) t->ne[0], ggml_type_name(t->type)));
        }
        return t;
    }
    // Streams a tensor's data from the file into dst (same type and shape, on any backend): straight
    // into host memory, else through one bounded staging buffer. 64-bit offsets throughout.
    void read(const ggml_tensor * src, ggml_tensor * dst) {
        const size_t n = ggml_nbytes(src);
        if (ggml_backend_buffer_is_host(dst->buffer)) {
            read_bytes(src, dst->data, 0, n);
            return;
        }
        std::vector<uint8_t> chunk(std::min<size_t>(n, 16u << 20));
        for (size_t done = 0; done < n; done += chunk.size()) {
            const size_t m = std::min(chunk.size(), n - done);
            read_bytes(src, chunk.data(), done, m);
            ggml_backend_tensor_set(dst, chunk.data(), done, m);
        }
    }
    // n bytes of a tensor's data from byte `from` on, into host memory.
    void read_bytes(const ggml_tensor * src, void * out, size_t from, size_t n) {
        const int64_t id = gguf_find_tensor(g, ggml_get_name(src));
        const uint64_t offset = (uint64_t) gguf_get_data_offset(g) + (uint64_t) gguf_get_tensor_offset(g, id) + from;
        if (!fp) fp = fopen(path.c_str(), "rb");
        if (!fp) throw file_error(path, "cannot open for reading");
#ifdef _WIN32
        const bool ok = _fseeki64(fp, (__int64) offset, SEEK_SET) == 0 && fread(out, 1, n, fp) == n;
#else
        const bool ok = fseeko(fp, (off_t) offset, SEEK_SET) == 0 && fread(out, 1, n, fp) == n;
#endif
        if (!ok) throw file_error(path, std::string("short read of tensor ") + ggml_get_name(src));
    }
    FILE * fp = nullptr;  // opened by the first read
};

ggml_tensor * host_embedding(const target & tgt) {
    for (ggml_tensor * t : ext::model_tensors(tgt.model(), "token_embd.weight")) {
        if (t->buffer && ggml_backend_buffer_is_host(t->buffer)) return t;
    }
    return nullptr;
}

// Keys of the head's RoPE (llama.cpp's names). llama3 scaling comes as the tensor rope_freqs.weight.
rope_params read_rope(const gguf_file & f, const std::string & a, int32_t n_ctx_train) {
    rope_params r;
    r.base = f.f32(a + "rope.freq_base", false, 10000.0f);
    if (!(r.base > 0.0f && std::isfinite(r.base))) throw file_error(f.path, format("rope.freq_base %g is not positive", r.base));
    r.n_ctx_orig = n_ctx_train;
    const std::string type = f.str(a + "rope.scaling.type", false);
    if (type.empty() || type == "none") return r;
    if (type != "linear" && type != "yarn") {
        throw file_error(f.path, "rope.scaling.type '" + type + "' is not supported (none, linear, yarn; llama3 "
                                 "scaling comes as rope_freqs.weight)");
    }
    const float factor = f.f32(a + "rope.scaling.factor");
    if (!(factor >= 1.0f && factor <= 1024.0f)) throw file_error(f.path, format("rope.scaling.factor %g outside [1, 1024]", factor));
    r.freq_scale = 1.0f / factor;
    if (type == "yarn") {
        r.ext_factor = 1.0f;
        r.n_ctx_orig = (int32_t) f.u32(a + "rope.scaling.original_context_length", false, (uint32_t) n_ctx_train);
        r.attn_factor = f.f32(a + "rope.scaling.attn_factor", false, 1.0f);
        r.beta_fast = f.f32(a + "rope.scaling.yarn_beta_fast", false, 32.0f);
        r.beta_slow = f.f32(a + "rope.scaling.yarn_beta_slow", false, 1.0f);
        if (r.n_ctx_orig < 1 || !(r.attn_factor > 0.0f) || !(r.beta_fast > 0.0f) || !(r.beta_slow > 0.0f)) {
            throw file_error(f.path, "bad yarn RoPE parameters");
        }
    }
    return r;
}

}  // namespace

std::vector<int32_t> draft_head::read_tap_layers(const std::string & path) {
    gguf_file f(path);
    if (f.str("general.architecture") != "eagle3") return {};
    return f.i32_array("eagle3.target_layers");
}

draft_head::draft_head(const std::string & path, const target & tgt, int32_t n_ctx, int32_t n_batch_max)
    : path_(path), w_(new weights), n_ctx_(n_ctx), n_batch_max_(n_batch_max) {
    if (n_ctx < 1 || n_batch_max < 1 || n_batch_max > n_ctx) {
        throw std::invalid_argument(format("draft head: bad sizes n_ctx %d, n_batch %d", n_ctx, n_batch_max));
    }
    load(tgt);
    cell_parent_.assign(n_ctx_, -1);
    cell_tok_.assign(n_ctx_, -1);
    copy_index_.resize(copy_key_ + 1);

    // Reserve the compute buffer once for the largest graph: later evals reuse it.
    alloc_.reset(ggml_gallocr_new(ggml_backend_get_default_buffer_type(backend_.get())));
    graph_meta_.resize(ggml_tensor_overhead() * graph_nodes() + ggml_graph_overhead_custom(graph_nodes(), false));
    for (bool features : {true, false}) {
        ggml_cgraph * gf = build(n_batch_max_, n_ctx_, features);
        // the head's graph runs on one backend, without the scheduler's fallback: refuse here what
        // the device cannot run, rather than abort inside ggml at the first draft
        for (int i = 0; i < ggml_graph_n_nodes(gf); ++i) {
            ggml_tensor * node = ggml_graph_node(gf, i);
            if (!ggml_backend_supports_op(backend_.get(), node)) {
                throw std::runtime_error(format("draft head %s: the %s backend cannot run %s (%s) of the head's graph",
                    path_.c_str(), ggml_backend_name(backend_.get()), ggml_op_desc(node), ggml_get_name(node)));
            }
        }
        if (!ggml_gallocr_reserve(alloc_.get(), gf)) throw std::runtime_error("draft head: cannot allocate compute buffer");
    }
}

draft_head::~draft_head() = default;

void draft_head::load(const target & tgt) {
    gguf_file f(path_);
    const std::string arch = f.str("general.architecture");
    if (arch != "eagle" && arch != "eagle3") {
        throw file_error(path_, "architecture '" + arch + "' is not an EAGLE head (eagle or eagle3)");
    }
    eagle3_ = arch == "eagle3";
    const std::string a = arch + ".";
    // a head made for another target: ModelFileError naming both files
    auto mismatch = [&](const std::string & what) {
        return file_error(path_, "this draft head does not fit the target " + tgt.path() + ": " + what);
    };

    const uint32_t t_vocab = f.u32("pyeagle.target.vocab_size", false, (uint32_t) tgt.n_vocab());
    if ((int32_t) t_vocab != tgt.n_vocab()) {
        throw mismatch(format("made for a vocabulary of %u tokens, the target has %d", t_vocab, tgt.n_vocab()));
    }
    const std::string hash = f.str("pyeagle.target.vocab_hash", false);
    if (!hash.empty() && hash != vocab_hash(tgt)) {
        throw mismatch(format("made for another vocabulary (hash %s, the target's is %s)", hash.c_str(),
                              vocab_hash(tgt).c_str()));
    }

    n_embd_    = (int32_t) f.u32(a + "embedding_length");
    n_ff_      = (int32_t) f.u32(a + "feed_forward_length");
    n_head_    = (int32_t) f.u32(a + "attention.head_count");
    n_head_kv_ = (int32_t) f.u32(a + "attention.head_count_kv", false, n_head_);
    eps_       = f.f32(a + "attention.layer_norm_rms_epsilon", false, 1e-5f);
    // (its range, [0, 1), is checked for every GGUF by check_gguf_file: ggml asserts eps >= 0)
    const int32_t n_ctx_train = (int32_t) f.u32(a + "context_length", false, 4096);
    if (n_embd_ <= 0 || n_head_ <= 0 || n_head_kv_ <= 0 || n_head_ % n_head_kv_ != 0 || n_ff_ <= 0 ||
        n_embd_ > 65536 || n_head_ > 1024 || n_ff_ > 1 << 20) {
        throw file_error(path_, format("inconsistent sizes: hidden %d, heads %d/%d, ff %d", n_embd_, n_head_,
                                       n_head_kv_, n_ff_));
    }
    // head_dim may differ from hidden / heads (Qwen3): attention.key_length says so
    head_dim_ = (int32_t) f.u32(a + "attention.key_length", false, (uint32_t) (n_embd_ / n_head_));
    if (head_dim_ <= 0 || head_dim_ % 2 != 0 || head_dim_ > 1024 ||
        (f.find(a + "attention.key_length", GGUF_TYPE_UINT32, false) < 0 && n_embd_ % n_head_ != 0)) {
        throw file_error(path_, format("bad head_dim %d (hidden %d, %d heads)", head_dim_, n_embd_, n_head_));
    }
    if (f.u32(a + "attention.value_length", false, (uint32_t) head_dim_) != (uint32_t) head_dim_) {
        throw file_error(path_, "attention.value_length != attention.key_length is not a Llama layer");
    }
    if (f.u32(a + "rope.dimension_count", false, (uint32_t) head_dim_) != (uint32_t) head_dim_) {
        throw file_error(path_, "partial RoPE (rope.dimension_count != head_dim) is not supported");
    }
    rope_ = read_rope(f, a, n_ctx_train);
    const uint32_t n_layer = f.u32(a + "block_count", false, 1);
    if (n_layer < 1 || n_layer > 64 || (eagle3_ && n_layer != 1)) {
        throw file_error(path_, format("block_count %u: an EAGLE-1/2 head has 1..64 layers, an EAGLE-3 head 1", n_layer));
    }
    w_->layers.resize(n_layer);
    const int64_t h = n_embd_, h_q = (int64_t) head_dim_ * n_head_, h_kv = (int64_t) head_dim_ * n_head_kv_, ff = n_ff_;

    int64_t h_t = tgt.n_embd();
    if (eagle3_) {
        h_t = f.u32(a + "target_hidden_size", false, (uint32_t) tgt.n_embd());
        if (h_t != tgt.n_embd()) {
            throw mismatch(format("made for a target hidden size of %lld, the target has %d", (long long) h_t, tgt.n_embd()));
        }
        tap_layers_ = f.i32_array(a + "target_layers");
        if (tap_layers_.size() != 3) throw file_error(path_, "eagle3.target_layers must hold 3 layers");
        for (int32_t l : tap_layers_) {
            if (l < 0 || l > tgt.n_layer()) {
                throw mismatch(format("taps layer %d, the target has layers 0..%d", l, tgt.n_layer()));
            }
        }
        norm_before_residual_ = f.boolean(a + "norm_before_residual", false);
        if (f.boolean(a + "norm_before_fc", false)) throw file_error(path_, "norm_before_fc heads are not supported");
        n_feat_ = (int32_t) (3 * h_t);
    } else {
        if (h != tgt.n_embd()) {
            throw mismatch(format("head hidden size %lld, the target's is %d", (long long) h, tgt.n_embd()));
        }
        n_feat_ = (int32_t) h;
        copy_key_ = (int32_t) f.u32(a + "copy_key_length", false, 0);
        if (copy_key_ < 0 || copy_key_ > 16) throw file_error(path_, format("copy_key_length %d outside 0..16", copy_key_));
    }

    // per-depth calibration of the tree's scores (docs/FORMAT.md, "Tree calibration"); absent: none
    depth_power_ = f.f32_array("pyeagle.tree.depth_power");
    if (depth_power_.size() > 64) throw file_error(path_, "pyeagle.tree.depth_power: more than 64 depths");
    for (float a : depth_power_) {
        if (!(a >= 0.1f && a <= 10.0f)) throw file_error(path_, format("pyeagle.tree.depth_power %g outside [0.1, 10]", a));
    }

    // the head's own tensors, validated; they go to the head's device, an own embedding to host memory
    const int64_t in_attn = eagle3_ ? 2 * h : h;
    struct entry { ggml_tensor * src; ggml_tensor ** dst; bool host; };
    std::vector<entry> entries;
    auto want = [&](const char * name, std::vector<int64_t> ne, bool req, bool mat, ggml_tensor ** dst, bool host = false) {
        if (ggml_tensor * t = f.tensor(name, std::move(ne), req, mat)) entries.push_back({t, dst, host});
    };
    want("fc.weight", {eagle3_ ? 3 * h_t : 2 * h, h}, true, true, &w_->fc);
    want("fc.bias", {h}, false, false, &w_->fc_b);
    if (copy_key_) want("copy_fc.weight", {copy_key_ * h, h}, true, true, &w_->copy_fc);
    for (size_t i = 0; i < w_->layers.size(); ++i) {
        weights::layer & l = w_->layers[i];
        const int64_t in = i == 0 ? in_attn : h;
        auto blk = [&](const char * name) { return format("blk.%zu.%s", i, name); };
        want(blk("attn_q.weight").c_str(), {in, h_q}, true, true, &l.wq);
        want(blk("attn_k.weight").c_str(), {in, h_kv}, true, true, &l.wk);
        want(blk("attn_v.weight").c_str(), {in, h_kv}, true, true, &l.wv);
        want(blk("attn_output.weight").c_str(), {h_q, h}, true, true, &l.wo);
        want(blk("attn_q.bias").c_str(), {h_q}, false, false, &l.bq);
        want(blk("attn_k.bias").c_str(), {h_kv}, false, false, &l.bk);
        want(blk("attn_v.bias").c_str(), {h_kv}, false, false, &l.bv);
        want(blk("ffn_norm.weight").c_str(), {h}, true, false, &l.ffn_norm);
        want(blk("ffn_gate.weight").c_str(), {h, ff}, true, true, &l.gate);
        want(blk("ffn_up.weight").c_str(), {h, ff}, true, true, &l.up);
        want(blk("ffn_down.weight").c_str(), {ff, h}, true, true, &l.down);
        if (eagle3_ || i > 0) want(blk("attn_norm.weight").c_str(), {h}, true, false, &l.attn_norm);
    }
    want("rope_freqs.weight", {head_dim_ / 2}, false, false, &w_->rope_freqs);  // llama3 RoPE scaling
    if (eagle3_) {
        want("blk.0.attn_norm_2.weight", {h}, true, false, &w_->attn_norm_2);
        want("output_norm.weight", {h}, true, false, &w_->out_norm);
    }
    // Draft vocabulary: the head's own output rows (+ d2t) or the target's whole output matrix.
    ggml_tensor * d2t = ggml_get_tensor(f.meta, "d2t");
    ggml_tensor * out = ggml_get_tensor(f.meta, "output.weight");
    if (out) {
        n_vocab_d_ = (int32_t) out->ne[1];
        if (n_vocab_d_ < 1 || n_vocab_d_ > tgt.n_vocab()) throw file_error(path_, "output.weight has a bad row count");
        want("output.weight", {h, n_vocab_d_}, true, true, &w_->out);
        if (n_vocab_d_ != tgt.n_vocab() || d2t) {
            if (!d2t || d2t->type != GGML_TYPE_I64 || d2t->ne[0] != n_vocab_d_ || ggml_nelements(d2t) != n_vocab_d_) {
                throw file_error(path_, format("a draft vocabulary of %d rows needs d2t (i64, [%d])", n_vocab_d_, n_vocab_d_));
            }
        }
    } else if (eagle3_) {
        throw file_error(path_, "missing tensor output.weight");
    } else {
        n_vocab_d_ = tgt.n_vocab();
        if (d2t) throw file_error(path_, "d2t without output.weight");
    }
    ggml_tensor * own_embd = nullptr;
    want("token_embd.weight", {h, tgt.n_vocab()}, false, true, &own_embd, true);

    // The target's tensors, used in place: the embedding is read row by row on the host, the
    // output matrix (when the head has none) runs in the head's graph on the target's device.
    ggml_tensor * t_out = tgt.output_matrix();
    if (!t_out) throw file_error(tgt.path(), "the loaded model has no output matrix");
    if (!own_embd) {
        if (h != tgt.n_embd()) throw mismatch("the head has no token_embd.weight, and the target's has another width");
        embd_ = host_embedding(tgt);
        if (!embd_) throw std::runtime_error("draft head: the target's token_embd.weight is not in host memory");
    }
    if (!out) {
        if (t_out->ne[0] != h || t_out->ne[1] != tgt.n_vocab()) throw mismatch("the target's output matrix has another shape");
        w_->out = t_out;
    }

    // backend: the device that holds the target's output matrix (a GPU when the output layer is
    // offloaded), so that the head's graph can use it there
    ggml_backend_dev_t dev = accelerator_of(t_out);
    backend_.reset(dev ? ggml_backend_dev_init(dev, nullptr) : ggml_backend_cpu_init());
    if (!backend_) throw std::runtime_error("draft head: cannot initialise a ggml backend");
    set_n_threads(tgt.n_threads());

    auto alloc_ctx = [&](bool host, std::unique_ptr<ggml_context, ggml_context_deleter> & ctx,
                         std::unique_ptr<ggml_backend_buffer, ggml_buffer_deleter> & buf, bool kv) {
        size_t n = kv ? 2 * w_->layers.size() : 0;
        for (auto & e : entries) n += e.host == host;
        if (n == 0) return;
        ggml_init_params ip = {ggml_tensor_overhead() * (n + 1), nullptr, true};
        ctx.reset(ggml_init(ip));
        for (auto & e : entries) {
            if (e.host != host) continue;
            *e.dst = ggml_dup_tensor(ctx.get(), e.src);
            ggml_set_name(*e.dst, ggml_get_name(e.src));
        }
        if (kv) {
            for (weights::layer & l : w_->layers) {
                l.k_cache = ggml_new_tensor_2d(ctx.get(), GGML_TYPE_F32, h_kv, n_ctx_);
                l.v_cache = ggml_new_tensor_2d(ctx.get(), GGML_TYPE_F32, h_kv, n_ctx_);
            }
        }
        buf.reset(host ? ggml_backend_alloc_ctx_tensors_from_buft(ctx.get(), ggml_backend_cpu_buffer_type())
                       : ggml_backend_alloc_ctx_tensors(ctx.get(), backend_.get()));
        if (!buf) throw std::runtime_error("draft head: cannot allocate weights");
        ggml_backend_buffer_set_usage(buf.get(), GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    };
    alloc_ctx(false, ctx_w_, buf_w_, true);
    alloc_ctx(true, ctx_host_, buf_host_, false);
    for (auto & e : entries) f.read(e.src, *e.dst);
    if (own_embd) embd_ = own_embd;

    if (d2t && out) {
        std::vector<int64_t> v(n_vocab_d_);
        f.read_bytes(d2t, v.data(), 0, v.size() * sizeof(int64_t));
        for (int64_t t : v) {
            if (t < 0 || t >= tgt.n_vocab()) throw file_error(path_, format("d2t maps to token %lld outside the target vocabulary", (long long) t));
        }
        d2t_ = std::move(v);
    }
}

void draft_head::embed_row(llama_token t, float * dst) const {
    const int64_t h = n_embd_;
    if (t < 0 || t >= embd_->ne[1]) throw std::invalid_argument(format("draft head: token %d out of range", t));
    const uint8_t * src = (const uint8_t *) embd_->data + (size_t) t * embd_->nb[1];
    if (embd_->type == GGML_TYPE_F32) std::memcpy(dst, src, sizeof(float) * h);
    else ggml_get_type_traits(embd_->type)->to_float(src, dst, h);
}

void draft_head::embed(const llama_token * tokens, int32_t n) {
    emb_.resize((size_t) n * n_embd_);
    for (int32_t i = 0; i < n; ++i) embed_row(tokens[i], emb_.data() + (size_t) i * n_embd_);
}

// --- the copy input -----------------------------------------------------------------------------
// For the token of cell c: the longest key (its last k <= copy_key_ tokens, c's included) that
// occurred earlier in the sequence the cell sees (committed cells, then its tree ancestors), and the
// token that followed the latest such occurrence. The same as copy_tokens() in pyeagle/train/fit.py,
// over the tokens the head has been given (positions 1.. of the context).

namespace {
uint64_t key_hash(const llama_token * t, int32_t k) {
    uint64_t h = 0xcbf29ce484222325ull ^ (uint64_t) k;
    for (int32_t i = 0; i < k; ++i) h = (h ^ (uint32_t) t[i]) * 0x100000001b3ull;
    return h;
}
}  // namespace

void draft_head::index_committed(int32_t j) {
    // the keys ending at committed cell j are followed by cell j + 1's token
    for (int32_t k = 1; k <= copy_key_ && k <= j + 1; ++k) copy_index_[k][key_hash(&cell_tok_[j - k + 1], k)] = j;
}

void draft_head::reindex(int32_t n) {
    for (auto & m : copy_index_) m.clear();
    for (int32_t j = 0; j + 1 < n; ++j) index_committed(j);
}

draft_head::copy_guess draft_head::committed_copy(const llama_token * key_end, int32_t k, int32_t last_next) const {
    // the latest indexed occurrence of the k tokens ending at key_end, if its next cell is <= last_next
    auto it = copy_index_[k].find(key_hash(key_end - k + 1, k));
    if (it == copy_index_[k].end()) return {};
    const int32_t j = it->second;
    if (j + 1 > last_next) return {};
    if (!std::equal(key_end - k + 1, key_end + 1, cell_tok_.begin() + (j - k + 1))) return {};  // hash collision
    return {cell_tok_[j + 1], k};
}

void draft_head::copy_inputs(int32_t first, int32_t n, bool from_target) {
    const int64_t h = n_embd_, w = copy_key_ * h;
    copy_in_.assign((size_t) n * w, 0.0f);
    std::vector<llama_token> seq;  // the cell's own view: a committed tail, then its ancestors
    for (int32_t i = 0; i < n; ++i) {
        const int32_t cell = first + i;
        copy_guess g;
        if (from_target) {
            if (cell > 0) index_committed(cell - 1);
            for (int32_t k = std::min(copy_key_, cell + 1); k >= 1 && g.k == 0; --k) {
                g = committed_copy(&cell_tok_[cell], k, cell);
            }
        } else {
            seq.clear();
            for (int32_t c = cell; c >= n_committed_; c = cell_parent_[c]) seq.push_back(cell_tok_[c]);
            const int32_t n_tail = std::min(copy_key_, n_committed_);
            for (int32_t c = n_committed_ - 1; c >= n_committed_ - n_tail; --c) seq.push_back(cell_tok_[c]);
            std::reverse(seq.begin(), seq.end());  // committed tail, then the path down to this cell
            const int32_t end = (int32_t) seq.size() - 1;
            for (int32_t k = std::min(copy_key_, end + 1); k >= 1 && g.k == 0; --k) {
                // an occurrence followed by a path token (within seq), latest first
                for (int32_t j = end - 1; j >= n_tail - 1 && j >= k - 1; --j) {
                    if (std::equal(seq.begin() + (end - k + 1), seq.end(), seq.begin() + (j - k + 1))) {
                        g = {seq[j + 1], k};
                        break;
                    }
                }
                // else one followed by a committed token
                if (g.k == 0) g = committed_copy(&seq[end], k, n_committed_ - 1);
            }
        }
        if (g.k > 0) embed_row(g.token, copy_in_.data() + (size_t) i * w + (size_t) (g.k - 1) * h);
    }
}

int32_t draft_head::n_layer() const { return (int32_t) w_->layers.size(); }

size_t draft_head::graph_nodes() const { return 256 + 64 * w_->layers.size(); }  // ~40 nodes a layer

std::string draft_head::device() const { return ggml_backend_name(backend_.get()); }

void draft_head::set_n_threads(int32_t n) {
    if (ggml_backend_is_cpu(backend_.get())) ggml_backend_cpu_set_n_threads(backend_.get(), std::max(1, n));
}

ggml_cgraph * draft_head::build(int32_t n, int32_t n_kv_after, bool from_target) {
    ggml_init_params ip = {graph_meta_.size(), graph_meta_.data(), true};
    ggml_context * ctx = ggml_init(ip);  // metadata only, in graph_meta_: nothing allocated
    ggml_cgraph * gf = ggml_new_graph_custom(ctx, graph_nodes(), false);
    const weights & w = *w_;
    const int64_t h = n_embd_, h_kv = (int64_t) head_dim_ * n_head_kv_;
    const int32_t n_kv_before = n_kv_after - n;

    t_emb_    = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, h, n);  // embedding rows, looked up on the host
    t_inputs_ = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, from_target ? n_feat_ : h, n);
    t_pos_    = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n);
    t_mask_   = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n_kv_after, n);
    for (ggml_tensor * t : {t_emb_, t_inputs_, t_pos_, t_mask_}) ggml_set_input(t);
    t_copy_ = nullptr;
    if (w.copy_fc) {
        t_copy_ = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, w.copy_fc->ne[0], n);  // copy_inputs(), on the host
        ggml_set_input(t_copy_);
    }

    auto norm = [&](ggml_tensor * x, ggml_tensor * g) { return ggml_mul(ctx, ggml_rms_norm(ctx, x, eps_), g); };
    auto linear = [&](ggml_tensor * W, ggml_tensor * x, ggml_tensor * b) {
        ggml_tensor * y = ggml_mul_mat(ctx, W, x);
        return b ? ggml_add(ctx, y, b) : y;
    };
    auto rope = [&](ggml_tensor * x) {
        return ggml_rope_ext(ctx, x, t_pos_, w.rope_freqs, head_dim_, GGML_ROPE_TYPE_NORMAL, rope_.n_ctx_orig,
                             rope_.base, rope_.freq_scale, rope_.ext_factor, rope_.attn_factor, rope_.beta_fast,
                             rope_.beta_slow);
    };

    ggml_tensor * x, * resid;
    if (!eagle3_) {
        // EAGLE-1/2: z = fc(cat(E[x], f)); no attention pre-norm in the first layer
        x = resid = linear(w.fc, ggml_concat(ctx, t_emb_, t_inputs_, 0), w.fc_b);
        if (t_copy_) x = resid = ggml_add(ctx, x, ggml_mul_mat(ctx, w.copy_fc, t_copy_));  // + copy_fc(copy input)
    } else {
        // EAGLE-3: hidden = fc(taps) for target rows, the head's own y inside the tree
        ggml_tensor * hid = from_target ? ggml_mul_mat(ctx, w.fc, t_inputs_) : t_inputs_;
        ggml_tensor * hid_n = norm(hid, w.attn_norm_2);
        x = ggml_concat(ctx, norm(t_emb_, w.layers[0].attn_norm), hid_n, 0);  // [2h, n]
        resid = norm_before_residual_ ? hid_n : hid;
    }
    ggml_tensor * y = nullptr;
    for (size_t i = 0; i < w.layers.size(); ++i) {
        const weights::layer & l = w.layers[i];
        if (i > 0) x = norm(resid = y, l.attn_norm);  // a later EAGLE-1/2 layer (EAGLE-1's cnets.py)
        ggml_tensor * q = rope(ggml_reshape_3d(ctx, linear(l.wq, x, l.bq), head_dim_, n_head_, n));
        ggml_tensor * k = rope(ggml_reshape_3d(ctx, linear(l.wk, x, l.bk), head_dim_, n_head_kv_, n));
        ggml_tensor * v = linear(l.wv, x, l.bv);  // [h_kv, n]

        // write this batch's K/V into cells [n_kv_before, n_kv_after)
        const size_t row = l.k_cache->nb[1];
        ggml_build_forward_expand(gf, ggml_cpy(ctx, ggml_reshape_2d(ctx, k, h_kv, n),
                                               ggml_view_2d(ctx, l.k_cache, h_kv, n, row, n_kv_before * row)));
        ggml_build_forward_expand(gf, ggml_cpy(ctx, v, ggml_view_2d(ctx, l.v_cache, h_kv, n, row, n_kv_before * row)));

        ggml_tensor * K = ggml_permute(ctx, ggml_view_3d(ctx, l.k_cache, head_dim_, n_head_kv_, n_kv_after,
                                                         head_dim_ * sizeof(float), row, 0), 0, 2, 1, 3);  // [hd, kv, hkv]
        ggml_tensor * V = ggml_cont(ctx, ggml_permute(ctx, ggml_view_3d(ctx, l.v_cache, head_dim_, n_head_kv_, n_kv_after,
                                                         head_dim_ * sizeof(float), row, 0), 1, 2, 0, 3));  // [kv, hd, hkv]
        ggml_tensor * Q = ggml_permute(ctx, q, 0, 2, 1, 3);                                            // [hd, n, heads]
        ggml_tensor * kq = ggml_soft_max_ext(ctx, ggml_mul_mat(ctx, K, Q), t_mask_, 1.0f / std::sqrt((float) head_dim_), 0.0f);
        ggml_tensor * o = ggml_cont(ctx, ggml_permute(ctx, ggml_mul_mat(ctx, V, kq), 0, 2, 1, 3));   // [hd, heads, n]
        o = ggml_mul_mat(ctx, l.wo, ggml_reshape_2d(ctx, o, (int64_t) head_dim_ * n_head_, n));

        ggml_tensor * a = ggml_add(ctx, resid, o);
        ggml_tensor * m = norm(a, l.ffn_norm);
        y = ggml_add(ctx, a, ggml_mul_mat(ctx, l.down, ggml_mul(ctx, ggml_silu(ctx, ggml_mul_mat(ctx, l.gate, m)),
                                                                ggml_mul_mat(ctx, l.up, m))));
    }
    t_y_ = y;
    // committed rows need the logits of the last row only (the depth-1 candidates)
    ggml_tensor * y_out = from_target ? ggml_view_2d(ctx, y, h, 1, y->nb[1], (size_t) (n - 1) * y->nb[1]) : y;
    t_logits_ = ggml_mul_mat(ctx, w.out, eagle3_ ? norm(y_out, w.out_norm) : y_out);  // [n_vocab_d, n or 1]
    ggml_set_output(t_y_);
    ggml_set_output(t_logits_);
    ggml_build_forward_expand(gf, t_y_);
    ggml_build_forward_expand(gf, t_logits_);
    ggml_free(ctx);  // frees nothing but the context struct: the metadata lives in graph_meta_
    return gf;
}

void draft_head::eval(const llama_token * tokens, const float * inputs, bool from_target,
                      const int32_t * pos, int32_t n) {
    if (n < 1 || n > n_batch_max_) {
        throw std::invalid_argument(format("draft head: batch of %d rows outside [1, %d]", n, n_batch_max_));
    }
    if (n_kv_ + n > n_ctx_) {
        throw context_full(format("draft head: context full (%d cells + %d > %d)", n_kv_, n, n_ctx_));
    }
    const int32_t n_kv_after = n_kv_ + n;
    ggml_cgraph * gf = build(n, n_kv_after, from_target);
    if (!ggml_gallocr_alloc_graph(alloc_.get(), gf)) throw std::runtime_error("draft head: graph allocation failed");

    // mask [n, n_kv_after]: a committed row sees the committed cells up to itself (causal); a
    // tree row sees every committed cell and its tree ancestors and itself
    mask_.assign((size_t) n * n_kv_after, -INFINITY);
    for (int32_t i = 0; i < n; ++i) {
        float * mrow = mask_.data() + (size_t) i * n_kv_after;
        const int32_t cell = n_kv_ + i;
        if (from_target) {
            for (int32_t c = 0; c <= cell; ++c) mrow[c] = 0.0f;
        } else {
            for (int32_t c = 0; c < n_committed_; ++c) mrow[c] = 0.0f;
            for (int32_t c = cell; c >= n_committed_; c = cell_parent_[c]) mrow[c] = 0.0f;
        }
    }
    embed(tokens, n);
    ggml_backend_tensor_set(t_emb_, emb_.data(), 0, ggml_nbytes(t_emb_));
    if (t_copy_) {
        for (int32_t i = 0; i < n; ++i) cell_tok_[n_kv_ + i] = tokens[i];
        copy_inputs(n_kv_, n, from_target);
        ggml_backend_tensor_set(t_copy_, copy_in_.data(), 0, ggml_nbytes(t_copy_));
    }
    ggml_backend_tensor_set(t_inputs_, inputs, 0, ggml_nbytes(t_inputs_));
    ggml_backend_tensor_set(t_pos_, pos, 0, sizeof(int32_t) * n);
    ggml_backend_tensor_set(t_mask_, mask_.data(), 0, ggml_nbytes(t_mask_));
    if (ggml_backend_graph_compute(backend_.get(), gf) != GGML_STATUS_SUCCESS) {
        if (copy_key_ && from_target) reindex(n_committed_);  // drop the keys of the cells not committed
        throw std::runtime_error("draft head: graph compute failed");
    }
    out_y_.resize((size_t) n * n_embd_);
    out_logits_.resize(ggml_nelements(t_logits_));
    ggml_backend_tensor_get(t_y_, out_y_.data(), 0, ggml_nbytes(t_y_));
    ggml_backend_tensor_get(t_logits_, out_logits_.data(), 0, ggml_nbytes(t_logits_));
    n_kv_ = n_kv_after;
    n_out_ = n;
    n_logit_rows_ = (int32_t) t_logits_->ne[1];
}

void draft_head::prefix(const llama_token * tokens, const float * features, int32_t pos0, int32_t n) {
    if (n_kv_ != n_committed_) throw std::logic_error("draft head: prefix() with tree cells present; rollback() first");
    std::vector<int32_t> pos(n);
    for (int32_t i = 0; i < n; ++i) pos[i] = pos0 + i;
    for (int32_t i0 = 0; i0 < n; i0 += n_batch_max_) {
        const int32_t m = std::min(n_batch_max_, n - i0);
        eval(tokens + i0, features + (size_t) i0 * n_feat_, true, pos.data() + i0, m);
        for (int32_t i = 0; i < m; ++i) cell_parent_[n_committed_ + i] = -1;
        n_committed_ = n_kv_;
    }
}

int32_t draft_head::tree(const llama_token * tokens, const float * inputs, const int32_t * pos,
                         const int32_t * cell_parent, int32_t n) {
    const int32_t first = n_kv_;
    for (int32_t i = 0; i < n; ++i) {
        const int32_t p = cell_parent[i];
        if (p != -1 && (p < n_committed_ || p >= first)) {
            throw std::invalid_argument(format("draft head: tree row %d has parent cell %d outside [%d, %d)", i, p,
                                               n_committed_, first));
        }
        if (first + i < n_ctx_) cell_parent_[first + i] = p;  // -1 ends the ancestor walk at the prefix
    }
    eval(tokens, inputs, false, pos, n);
    return first;
}

void draft_head::truncate(int32_t n_keep) {
    if (n_keep < 0 || n_keep > n_committed_) {
        throw std::invalid_argument(format("draft head: truncate(%d) outside [0, %d]", n_keep, n_committed_));
    }
    n_committed_ = n_kv_ = n_keep;
    if (copy_key_) reindex(n_keep);
}

}  // namespace pyeagle
