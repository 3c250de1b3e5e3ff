#include "common.h"

#include "ggml.h"
#include "gguf.h"
#include "llama.h"

#include <cstdio>
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <sys/stat.h>
#include <vector>

namespace pyeagle {

std::string format(const char * fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    const int n = vsnprintf(nullptr, 0, fmt, ap);
    std::string out(n > 0 ? n : 0, '\0');
    if (n > 0) vsnprintf(out.data(), out.size() + 1, fmt, ap2);
    va_end(ap2);
    va_end(ap);
    return out;
}

namespace {
std::mutex g_log_mutex;
log_level g_level = log_level::error;
std::string g_errors;     // recent error lines, bounded
std::string g_partial;    // llama.cpp logs a line in pieces; keep the unfinished tail
std::atomic<bool> g_cancelling{false};  // a cancelled llama_decode logs its abort as errors

void sink(ggml_log_level level, const char * text, void *) {
    std::lock_guard<std::mutex> lock(g_log_mutex);
    log_level lv = log_level::info;
    switch (level) {
        case GGML_LOG_LEVEL_DEBUG: lv = log_level::debug; break;
        case GGML_LOG_LEVEL_WARN:  lv = log_level::warn;  break;
        case GGML_LOG_LEVEL_ERROR: lv = log_level::error; break;
        default: break;
    }
    if (g_cancelling.load() && lv >= log_level::error) return;
    if (lv >= log_level::error) {
        g_errors += text;
        if (g_errors.size() > 4096) g_errors.erase(0, g_errors.size() - 4096);
    }
    if (lv >= g_level) fputs(text, stderr);
}
}  // namespace

void set_log_level(log_level level) {
    std::lock_guard<std::mutex> lock(g_log_mutex);
    g_level = level;
}

void set_cancelling(bool on) {
    g_cancelling.store(on);
}

void install_log_callback() {
    llama_log_set(sink, nullptr);
}

std::string take_last_errors() {
    std::lock_guard<std::mutex> lock(g_log_mutex);
    std::string out;
    out.swap(g_errors);
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
    return out;
}

void log(log_level level, const char * fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char buf[1024];
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    ggml_log_level gl = level == log_level::error ? GGML_LOG_LEVEL_ERROR
                      : level == log_level::warn  ? GGML_LOG_LEVEL_WARN
                      : level == log_level::debug ? GGML_LOG_LEVEL_DEBUG : GGML_LOG_LEVEL_INFO;
    sink(gl, buf, nullptr);
}

void check_gguf_file(const std::string & path, bool llama_model) {
    struct stat st;
    if (stat(path.c_str(), &st) != 0) throw file_error(path, "no such file", true);
    if (!S_ISREG(st.st_mode)) throw file_error(path, "not a regular file");
    FILE * f = fopen(path.c_str(), "rb");
    if (!f) throw file_error(path, "cannot open for reading");
    char magic[4] = {0, 0, 0, 0};
    const size_t n = fread(magic, 1, 4, f);
    fclose(f);
    if (n != 4 || magic[0] != 'G' || magic[1] != 'G' || magic[2] != 'U' || magic[3] != 'F') {
        throw file_error(path, "not a GGUF file (bad magic)");
    }
    ggml_context * meta = nullptr;  // the tensors' shapes (no data)
    gguf_init_params params = {/*no_alloc =*/ true, /*ctx =*/ llama_model ? &meta : nullptr};
    take_last_errors();
    gguf_context * g = gguf_init_from_file(path.c_str(), params);
    const std::unique_ptr<gguf_context, decltype(&gguf_free)> g_guard(g, gguf_free);   // freed on every
    const std::unique_ptr<ggml_context, decltype(&ggml_free)> meta_guard(meta, ggml_free);  // way out
    if (!g) {
        const std::string why = take_last_errors();
        throw file_error(path, "corrupt or truncated GGUF" + (why.empty() ? std::string() : " (" + why + ")"));
    }
    // llama.cpp aborts the process on a vocabulary with two equal token strings (llama-vocab.cpp:
    // GGML_ASSERT(id_to_token.size() == token_to_id.size()); an empty string counts as
    // "[EMPTY_<id>]" there): refuse such a file here, with its name.
    const int64_t tok_key = gguf_find_key(g, "tokenizer.ggml.tokens");
    if (tok_key >= 0 && gguf_get_kv_type(g, tok_key) == GGUF_TYPE_ARRAY &&
        gguf_get_arr_type(g, tok_key) == GGUF_TYPE_STRING) {
        std::unordered_map<std::string, size_t> seen;
        const size_t n_tok = gguf_get_arr_n(g, tok_key);
        seen.reserve(n_tok);
        for (size_t i = 0; i < n_tok; ++i) {
            std::string word = gguf_get_arr_str(g, tok_key, i);
            if (word.empty()) word = "[EMPTY_" + std::to_string(i) + "]";
            const auto [it, fresh] = seen.emplace(std::move(word), i);
            if (!fresh) {
                throw file_error(path, format("corrupt vocabulary: tokens %zu and %zu are the same string",
                                              it->second, i));
            }
        }
    }
    // llama.cpp's graph asserts eps >= 0 in every norm (GGML_ASSERT aborts the process): refuse a
    // negative or NaN epsilon here
    for (int64_t k = 0; k < gguf_get_n_kv(g); ++k) {
        const std::string key = gguf_get_key(g, k);
        auto ends_with = [&](const std::string & tail) {
            return key.size() >= tail.size() && key.compare(key.size() - tail.size(), tail.size(), tail) == 0;
        };
        const bool eps = ends_with(".layer_norm_rms_epsilon") || ends_with(".layer_norm_epsilon");
        if (eps && gguf_get_kv_type(g, k) == GGUF_TYPE_FLOAT32) {
            const float v = gguf_get_val_f32(g, k);
            if (!(v >= 0.0f && v < 1.0f)) throw file_error(path, format("%s is %g, outside [0, 1)", key.c_str(), v));
        }
    }
    if (llama_model) {
        auto refuse = [&](const std::string & why) { throw file_error(path, why); };
        const int64_t arch_key = gguf_find_key(g, "general.architecture");
        if (arch_key < 0 || gguf_get_kv_type(g, arch_key) != GGUF_TYPE_STRING) refuse("no general.architecture");
        const std::string layers_key = std::string(gguf_get_val_str(g, arch_key)) + ".block_count";
        const int64_t lk = gguf_find_key(g, layers_key.c_str());
        if (lk >= 0) {
            const gguf_type t = gguf_get_kv_type(g, lk);
            const int64_t n = t == GGUF_TYPE_UINT32 ? (int64_t) gguf_get_val_u32(g, lk)
                            : t == GGUF_TYPE_INT32 ? (int64_t) gguf_get_val_i32(g, lk) : -1;
            if (n < 1 || n > 512) refuse(format("%s is not a layer count in [1, 512]", layers_key.c_str()));
        }
        for (int64_t i = 0; i < gguf_get_n_tensors(g); ++i) {
            const ggml_type type = gguf_get_tensor_type(g, i);
            const std::string name = gguf_get_tensor_name(g, i);
            if (type == GGML_TYPE_I8 || type == GGML_TYPE_I16 || type == GGML_TYPE_I32 || type == GGML_TYPE_I64 ||
                type == GGML_TYPE_F64) {
                refuse(format("tensor %s has type %s, not a weight type", name.c_str(), ggml_type_name(type)));
            }
            // vectors (norms, biases) enter element-wise ops, which on ggml's CPU take an f32 second
            // operand only (f16 aborts too); llama.cpp's converters always write them f32
            const ggml_tensor * t = meta ? ggml_get_tensor(meta, name.c_str()) : nullptr;
            if (t && ggml_n_dims(t) == 1 && type != GGML_TYPE_F32) {
                refuse(format("tensor %s is a vector of type %s; vectors (norms, biases) must be f32",
                              name.c_str(), ggml_type_name(type)));
            }
        }
    }
    // gguf checks the header; also check that all tensor data lies inside the file.
    const size_t data_end = gguf_get_data_offset(g);
    size_t max_end = data_end;
    for (int64_t i = 0; i < gguf_get_n_tensors(g); ++i) {
        const size_t end = data_end + gguf_get_tensor_offset(g, i) + gguf_get_tensor_size(g, i);
        if (end > max_end) max_end = end;
    }
    if (max_end > (size_t) st.st_size) {
        throw file_error(path, format("truncated GGUF: tensor data ends at byte %zu, file has %lld bytes",
                                      max_end, (long long) st.st_size));
    }
}

}  // namespace pyeagle
