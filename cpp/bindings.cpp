// pybind11 bindings: translation only. Every call into llama.cpp/ggml releases the GIL.
#include "common.h"
#include "target.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>

namespace py = pybind11;
using namespace pyeagle;

namespace {

py::array_t<float> rows(const float * (target::*row)(int32_t) const, const target & t, int32_t n, size_t width) {
    py::array_t<float> out({(py::ssize_t) n, (py::ssize_t) width});
    float * dst = out.mutable_data();
    for (int32_t i = 0; i < n; ++i) std::memcpy(dst + (size_t) i * width, (t.*row)(i), sizeof(float) * width);
    return out;
}

py::array_t<float> vec(const float * p, size_t n) {
    py::array_t<float> out((py::ssize_t) n);
    std::memcpy(out.mutable_data(), p, sizeof(float) * n);
    return out;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "pyeagle C++ core (llama.cpp/ggml)";
    llama_backend_init();
    install_log_callback();

    static py::exception<file_error> exc_file(m, "ModelFileError", PyExc_ValueError);
    static py::exception<context_full> exc_ctx(m, "ContextFullError", PyExc_RuntimeError);
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const file_error & e) {
            if (e.missing) {
                PyErr_SetObject(PyExc_FileNotFoundError,
                                py::make_tuple(2, std::string(e.what()), e.path).ptr());
            } else {
                py::set_error(exc_file, e.what());
            }
        } catch (const context_full & e) {
            py::set_error(exc_ctx, e.what());
        } catch (const std::logic_error & e) {
            // invalid_argument / out_of_range are logic_errors too: bad input -> ValueError
            if (dynamic_cast<const std::invalid_argument *>(&e) || dynamic_cast<const std::out_of_range *>(&e)) {
                py::set_error(PyExc_ValueError, e.what());
            } else {
                py::set_error(PyExc_RuntimeError, e.what());
            }
        }
    });

    m.def("set_log_level", [](int level) { set_log_level((log_level) level); }, py::arg("level"),
          "1 debug, 2 info, 3 warn, 4 error (default), 5 none: what llama.cpp/ggml/pyeagle print to stderr");
    m.def("check_gguf_file", &check_gguf_file, py::arg("path"), py::call_guard<py::gil_scoped_release>());

    py::class_<target>(m, "Target")
        .def(py::init([](const std::string & path, int32_t n_ctx, int32_t n_threads, int32_t n_gpu_layers,
                         int32_t n_batch, int32_t n_seq_max, std::vector<int32_t> tap_layers, int32_t flash_attn,
                         bool kv_f32) {
                 target_params p;
                 p.path = path; p.n_ctx = n_ctx; p.n_threads = n_threads; p.n_gpu_layers = n_gpu_layers;
                 p.n_batch = n_batch; p.n_seq_max = n_seq_max; p.tap_layers = std::move(tap_layers);
                 p.flash_attn = flash_attn; p.kv_f32 = kv_f32;
                 py::gil_scoped_release release;
                 return std::make_unique<target>(p);
             }),
             py::arg("path"), py::arg("n_ctx") = 4096, py::arg("n_threads") = 0, py::arg("n_gpu_layers") = 0,
             py::arg("n_batch") = 512, py::arg("n_seq_max") = 64, py::arg("tap_layers") = std::vector<int32_t>{},
             py::arg("flash_attn") = -1, py::arg("kv_f32") = false)
        .def("tokenize", &target::tokenize, py::arg("text"), py::arg("add_special") = true,
             py::arg("parse_special") = false)
        .def("token_to_piece", [](const target & t, llama_token id, bool special) {
                 return py::bytes(t.token_to_piece(id, special));
             }, py::arg("token"), py::arg("special") = false)
        .def("detokenize", [](const target & t, const std::vector<llama_token> & ids, bool special) {
                 return py::bytes(t.detokenize(ids, special));
             }, py::arg("tokens"), py::arg("special") = false)
        .def("is_eog", &target::is_eog, py::arg("token"))
        .def_property_readonly("eog_tokens", &target::eog_tokens)
        .def_property_readonly("bos", &target::bos)
        .def_property_readonly("path", &target::path)
        .def_property_readonly("arch", &target::arch)
        .def_property_readonly("chat_template", &target::chat_template)
        .def("meta", &target::meta, py::arg("key"))
        .def_property_readonly("n_vocab", &target::n_vocab)
        .def_property_readonly("n_embd", &target::n_embd)
        .def_property_readonly("n_layer", &target::n_layer)
        .def_property_readonly("n_ctx", &target::n_ctx)
        .def_property_readonly("n_batch", &target::n_batch)
        .def_property_readonly("n_seq_max", &target::n_seq_max)
        .def_property_readonly("n_threads", &target::n_threads)
        .def_property_readonly("n_past", &target::n_past)
        .def_property_readonly("tokens", &target::tokens)
        .def_property("features", &target::features, &target::set_features)
        .def("truncate", &target::truncate, py::arg("n_keep"), py::call_guard<py::gil_scoped_release>())
        .def("prefill", [](target & t, const std::vector<llama_token> & ids) {
                 py::gil_scoped_release release;
                 t.prefill(ids.data(), (int32_t) ids.size());
             }, py::arg("tokens"))
        .def("decode", &target::decode, py::arg("token"), py::call_guard<py::gil_scoped_release>())
        .def("verify", [](target & t, const std::vector<llama_token> & ids, const std::vector<int32_t> & parents) {
                 if (ids.size() != parents.size()) throw std::invalid_argument("verify: tokens and parents differ in length");
                 py::gil_scoped_release release;
                 t.verify(ids.data(), parents.data(), (int32_t) ids.size());
             }, py::arg("tokens"), py::arg("parents"))
        .def("commit", &target::commit, py::arg("path"), py::call_guard<py::gil_scoped_release>())
        .def("discard_tree", &target::discard_tree, py::call_guard<py::gil_scoped_release>())
        .def("last_logits", [](const target & t) { return vec(t.last_logits(), t.n_vocab()); })
        .def("logits", [](const target & t) { return rows(&target::logits, t, t.n_logits(), t.n_vocab()); },
             "logits of every node of the last verify, [n_nodes, n_vocab]")
        .def("hidden", [](const target & t) { return rows(&target::hidden, t, t.n_rows(), t.n_embd()); },
             "post-norm hidden states of the last prefill/verify, [n_rows, n_embd] (features on)")
        .def("taps", [](const target & t) {
                 return rows(&target::taps, t, t.n_rows(), (size_t) t.n_embd() * t.tap_layers().size());
             }, "EAGLE-3 layer inputs, [n_rows, n_taps * n_embd], low to high");
}
