#include "llama_ext.h"

#include <algorithm>
#include <array>
#include <utility>
#include <vector>

// Re-declared from llama.cpp src/llama-ext.h (C++ linkage, exported by libllama).
LLAMA_API void    llama_set_embeddings_layer_inp(struct llama_context * ctx, uint32_t lid, bool value);
LLAMA_API float * llama_get_embeddings_layer_inp(struct llama_context * ctx, uint32_t lid);
// Re-declared from llama.cpp src/llama-model.h (C++ linkage, exported by libllama).
const std::vector<std::pair<std::string, ggml_tensor *>> & llama_internal_get_tensor_map(const llama_model * model);

namespace pyeagle::ext {

bool arch_has_layer_taps(const std::string & arch) {
    static const std::array<const char *, 7> archs = {
        "llama", "qwen3", "qwen3moe", "qwen3next", "gemma4", "gpt-oss", "lfm2"};
    return std::any_of(archs.begin(), archs.end(), [&](const char * a) { return arch == a; });
}

void set_layer_tap(llama_context * ctx, uint32_t layer, bool on) {
    llama_set_embeddings_layer_inp(ctx, layer, on);
}

float * layer_tap(llama_context * ctx, uint32_t layer) {
    return llama_get_embeddings_layer_inp(ctx, layer);
}

std::vector<ggml_tensor *> model_tensors(const llama_model * model, const std::string & name) {
    std::vector<ggml_tensor *> out;
    for (const auto & [n, t] : llama_internal_get_tensor_map(model)) {
        if (n == name) out.push_back(t);
    }
    return out;
}

}  // namespace pyeagle::ext
