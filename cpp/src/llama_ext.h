// llama.cpp's unstable layer-tap API (src/llama-ext.h upstream, not installed). libllama
// exports these with C++ linkage; this file and llama_ext.cpp are the only places that name them.
#pragma once

#include "llama.h"

#include <cstdint>
#include <string>
#include <vector>

struct ggml_tensor;

namespace pyeagle::ext {

// Architectures whose graph records layer inputs (llama.cpp 0c1e570: src/models/*.cpp that set
// t_layer_inp). Enabling a tap on any other architecture aborts inside llama.cpp.
bool arch_has_layer_taps(const std::string & arch);
void set_layer_tap(llama_context * ctx, uint32_t layer, bool on);
// [n_tokens of the last decode, n_embd], token order (not output order)
float * layer_tap(llama_context * ctx, uint32_t layer);
// llama.cpp's graph names each layer's output "l_out-<layer>" (src/models/llama.cpp, qwen3.cpp):
// the last one is read through the eval callback for the tap n_layer
inline std::string layer_out_name(int32_t layer) { return "l_out-" + std::to_string(layer); }

// The loaded model's weight tensors called `name`, where they live (the model's own backend
// buffers). Several when llama.cpp keeps a second copy in another buffer: a tied output matrix
// duplicated from token_embd.weight into the output layer's (GPU or repacked) buffer.
std::vector<ggml_tensor *> model_tensors(const llama_model * model, const std::string & name);

}  // namespace pyeagle::ext
