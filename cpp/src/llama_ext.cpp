#include "llama_ext.h"

#include <algorithm>
#include <array>

// Re-declared from llama.cpp src/llama-ext.h (C++ linkage, exported by libllama).
LLAMA_API void    llama_set_embeddings_layer_inp(struct llama_context * ctx, uint32_t lid, bool value);
LLAMA_API float * llama_get_embeddings_layer_inp(struct llama_context * ctx, uint32_t lid);

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

}  // namespace pyeagle::ext
