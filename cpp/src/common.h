// Errors, logging and small helpers shared by every pyeagle C++ file.
#pragma once

#include <cstdarg>
#include <stdexcept>
#include <string>

namespace pyeagle {

// Typed errors; bindings.cpp maps each to a Python exception class.
//   file_error      -> pyeagle.ModelFileError (also FileNotFoundError when the file is missing)
//   context_full    -> pyeagle.ContextFullError
//   std::invalid_argument (bad call arguments, tree over the limits) -> ValueError
//   std::runtime_error (llama.cpp refused or failed)                  -> RuntimeError
struct file_error : std::runtime_error {
    std::string path;
    bool missing;
    file_error(const std::string & path, const std::string & reason, bool missing = false)
        : std::runtime_error(path + ": " + reason), path(path), missing(missing) {}
};

struct context_full : std::runtime_error {
    using std::runtime_error::runtime_error;
};

std::string format(const char * fmt, ...) __attribute__((format(printf, 1, 2)));

// One log sink for llama.cpp, ggml and pyeagle. Messages at or above the level go to stderr;
// errors are also kept so that an exception can say what llama.cpp complained about.
enum class log_level { debug = 1, info = 2, warn = 3, error = 4, none = 5 };
void set_log_level(log_level level);
void install_log_callback();
// while on, errors that llama.cpp logs (a decode aborted on request) are not printed or recorded
void set_cancelling(bool on);
std::string take_last_errors();  // returns and clears the errors logged since the last call
void log(log_level level, const char * fmt, ...) __attribute__((format(printf, 2, 3)));

// Throws file_error when path does not exist or is not a readable GGUF file (magic, version,
// header, every tensor's data inside the file). Parses the header only, reads no tensor data.
// llama_model: also what llama.cpp's loader and graph would abort on (GGML_ASSERT) rather than
// report, for a target: a layer count outside [1, 512], integer or f64 weights, vectors that are not f32.
void check_gguf_file(const std::string & path, bool llama_model = false);

}  // namespace pyeagle
