// pybind11 bindings: translation only. Every call into llama.cpp/ggml releases the GIL.
#include "pyeagle/engine.h"
#include "batch_decoder.h"
#include "common.h"
#include "draft_head.h"
#include "budget.h"
#include "lookup.h"
#include "sampling.h"
#include "target.h"
#include "tree.h"

#include "ggml-backend.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>

namespace py = pybind11;
using namespace pyeagle;

namespace {

template <typename T>
py::array_t<float> rows(const float * (T::*row)(int32_t) const, const T & t, int32_t n, size_t width) {
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
    // Messages can quote bytes from a corrupt file: decode them as UTF-8 with replacement characters,
    // never raise UnicodeDecodeError in place of the error itself.
    py::register_exception_translator([](std::exception_ptr p) {
        auto raise = [](PyObject * type, const char * what) {
            PyObject * msg = PyUnicode_DecodeUTF8(what, (Py_ssize_t) strlen(what), "replace");
            PyErr_SetObject(type, msg);
            Py_XDECREF(msg);
        };
        try {
            if (p) std::rethrow_exception(p);
        } catch (const file_error & e) {
            if (e.missing) {
                PyObject * msg = PyUnicode_DecodeUTF8(e.what(), (Py_ssize_t) strlen(e.what()), "replace");
                PyObject * path = PyUnicode_DecodeFSDefault(e.path.c_str());
                PyObject * args = Py_BuildValue("(iNN)", 2, msg, path);
                PyErr_SetObject(PyExc_FileNotFoundError, args);
                Py_XDECREF(args);
            } else {
                raise(exc_file.ptr(), e.what());
            }
        } catch (const context_full & e) {
            raise(exc_ctx.ptr(), e.what());
        } catch (const std::logic_error & e) {
            // invalid_argument / out_of_range are logic_errors too: bad input -> ValueError
            const bool bad_input = dynamic_cast<const std::invalid_argument *>(&e) || dynamic_cast<const std::out_of_range *>(&e);
            raise(bad_input ? PyExc_ValueError : PyExc_RuntimeError, e.what());
        } catch (const py::builtin_exception &) {
            throw;  // pybind11's own (stop_iteration, value_error, ...): its translator maps them
        } catch (const std::range_error &) {
            throw;  // -> ValueError, pybind11's mapping
        } catch (const std::overflow_error &) {
            throw;  // -> OverflowError
        } catch (const std::runtime_error & e) {
            raise(PyExc_RuntimeError, e.what());
        }
    });

    m.def("set_log_level", [](int level) { set_log_level((log_level) level); }, py::arg("level"),
          "1 debug, 2 info, 3 warn, 4 error (default), 5 none: what llama.cpp/ggml/pyeagle print to stderr");
    m.def("argmax", [](const std::vector<float> & values) {
              if (values.empty()) throw std::invalid_argument("argmax: no values");
              return argmax(values.data(), (int32_t) values.size());
          }, py::arg("values"), "the first position of the largest value (greedy decoding's choice)");
    m.def("prompt_lookup", [](const std::vector<llama_token> & context, int32_t n_max, int32_t n_len, int32_t n_chains) {
              py::list out;
              for (const auto & d : prompt_lookup(context, n_max, n_len, n_chains)) out.append(py::make_tuple(d.tokens, d.n_match));
              return out;
          }, py::arg("context"), py::arg("n_max"), py::arg("n_len"), py::arg("n_chains") = 1,
          "[(tokens, n_match)]: what followed earlier occurrences of the context's last n_max..1 tokens, up to "
          "n_len tokens, for at most n_chains distinct continuations, longest match first, then most recent "
          "(the engine's prompt-lookup drafts)");
    m.def("store_find", [](const std::vector<std::vector<llama_token>> & outputs, const std::vector<llama_token> & context,
                           int32_t n_max, int32_t n_len) {
              token_store store;
              for (const auto & o : outputs) store.add(o);
              const token_store::match f = store.find(context, n_max, n_len);
              return py::make_tuple(f.tokens, f.n_match, f.n_same, f.n_agree);
          }, py::arg("outputs"), py::arg("context"), py::arg("n_max"), py::arg("n_len"),
          "the engine's store of earlier outputs (test hook): (continuation, match length, occurrences matching "
          "as long, of which continuing alike) for context's end");
    m.def("suffix_lookup", [](const std::vector<llama_token> & context, int32_t n_max, int32_t depth, int32_t n_nodes) {
              const suffix_draft d = suffix_lookup(context, n_max, depth, n_nodes);
              return py::make_tuple(d.token, d.parent, d.count, d.n_occ, d.n_match);
          }, py::arg("context"), py::arg("n_max"), py::arg("depth"), py::arg("n_nodes"),
          "(tokens, parents, counts, n_occ, n_match): the suffix-tree drafts of the context (parents first, "
          "-1 below the root; counts: occurrences through each node)");
    m.def("best_size", [](const std::vector<double> & a_desc, double sunk, std::vector<std::pair<int32_t, double>> curve,
                          int32_t m_max, double rate) {
              cost_model c;
              c.set_curve(std::move(curve), 0, 0);
              const size_choice b = best_size(a_desc, sunk, c, m_max, rate);
              return py::make_tuple(b.m, b.expect, b.seconds);
          }, py::arg("a_desc"), py::arg("sunk"), py::arg("curve"), py::arg("m_max"), py::arg("rate"),
          "(m, expected tokens, seconds): the round policy's tree size for drafts with estimated acceptance "
          "a_desc (descending), drafting time already spent, a verify cost curve [(tokens, seconds)] and the "
          "price of time (tokens per second)");
    m.def("cost_after", [](std::vector<std::pair<int32_t, double>> curve,
                           const std::vector<std::pair<int32_t, double>> & observed, const std::vector<int32_t> & sizes,
                           const std::vector<std::pair<int32_t, double>> & rescaled) {
              cost_model c;
              c.set_curve(std::move(curve), 0, 0);
              for (const auto & [n, s] : observed) c.observe_verify(n, s);
              if (!rescaled.empty()) c.rescale(rescaled, 1000);
              std::vector<double> out;
              for (int32_t n : sizes) out.push_back(c.verify(n));
              return out;
          }, py::arg("curve"), py::arg("observed"), py::arg("sizes"),
          py::arg("rescaled") = std::vector<std::pair<int32_t, double>>(),
          "the round policy's verify cost (seconds) of passes over `sizes` tokens after a measured curve "
          "[(tokens, seconds)] has seen the observed passes [(tokens, seconds)] in order, then, with `rescaled`, "
          "passes timed at a longer context [(tokens, seconds)] (test hook)");
    m.def("devices", [] {
              std::vector<py::tuple> out;
              for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
                  ggml_backend_dev_t d = ggml_backend_dev_get(i);
                  const auto type = ggml_backend_dev_type(d);
                  out.push_back(py::make_tuple(std::string(ggml_backend_dev_name(d)), std::string(ggml_backend_dev_description(d)),
                      type == GGML_BACKEND_DEVICE_TYPE_CPU ? "cpu" : type == GGML_BACKEND_DEVICE_TYPE_GPU ? "gpu"
                      : type == GGML_BACKEND_DEVICE_TYPE_IGPU ? "igpu" : "accel"));
              }
              return out;
          }, "ggml's devices in this build: [(name, description, cpu|gpu|igpu|accel)]; n_gpu_layers offloads to "
             "the gpu/igpu ones");
    m.def("check_gguf_file", &check_gguf_file, py::arg("path"), py::arg("llama_model") = false,
          py::call_guard<py::gil_scoped_release>(),
          "raises ModelFileError for a file llama.cpp or ggml would crash on (llama_model: as a target)");

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
        .def_property_readonly("own_last_logits", &target::own_last_logits,
                               "whether a features-on prefill now computes its last row's logits in a graph of "
                               "its own (after the first one showed them equal to llama.cpp's), so that no "
                               "prompt row pays the LM head")
        .def_property_readonly("n_head_skipped", &target::n_head_skipped,
                               "rows of the last prefill whose graph stopped at the hidden state, before the LM head")
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
        .def("hidden", [](const target & t) { return rows(&target::hidden, t, t.n_hidden_rows(), t.n_embd()); },
             "post-norm hidden states of the last prefill/verify, [n_rows, n_embd] (features on; no rows "
             "when the features are EAGLE-3 layer-input taps only)")
        .def("taps", [](const target & t) {
                 return rows(&target::taps, t, t.n_rows(), (size_t) t.n_embd() * t.tap_layers().size());
             }, "EAGLE-3 layer inputs, [n_rows, n_taps * n_embd], low to high");

    py::class_<batch_decoder>(m, "BatchDecoder",
                              "greedy decoding of many sequences at once, with features (self-distillation data)")
        .def(py::init([](const target & t, int32_t n_slots, int32_t n_ctx_slot, int32_t n_batch, int32_t n_threads,
                         std::vector<int32_t> tap_layers) {
                 py::gil_scoped_release release;
                 return std::make_unique<batch_decoder>(t, n_slots, n_ctx_slot, n_batch, n_threads, tap_layers);
             }), py::arg("target"), py::arg("n_slots"), py::arg("n_ctx_slot") = 2048, py::arg("n_batch") = 512,
             py::arg("n_threads") = 0, py::arg("tap_layers") = std::vector<int32_t>{}, py::keep_alive<1, 2>())
        .def_property_readonly("n_slots", &batch_decoder::n_slots)
        .def_property_readonly("n_ctx_slot", &batch_decoder::n_ctx_slot)
        .def("n_past", &batch_decoder::n_past, py::arg("slot"))
        .def("step", [](batch_decoder & b, const std::vector<std::vector<llama_token>> & feeds) {
                 std::vector<llama_token> next;
                 {
                     py::gil_scoped_release release;
                     next = b.step(feeds);
                 }
                 const auto & h = b.hidden();
                 py::array_t<float> out({(py::ssize_t) (h.size() / b.n_embd()), (py::ssize_t) b.n_embd()});
                 std::memcpy(out.mutable_data(), h.data(), sizeof(float) * h.size());
                 return py::make_tuple(next, out);
             }, py::arg("feeds"),
             "feeds[s]: tokens to append to slot s ([] to skip it). Returns (next, hidden): each slot's greedy "
             "next token (-1 if not fed) and one post-norm hidden row per fed token, slot by slot")
        .def("taps", [](const batch_decoder & b) {
                 const auto & t = b.taps();
                 const size_t w = (size_t) b.n_taps() * b.n_embd();
                 py::array_t<float> out({(py::ssize_t) (w ? t.size() / w : 0), (py::ssize_t) w});
                 if (w) std::memcpy(out.mutable_data(), t.data(), sizeof(float) * t.size());
                 return out;
             }, "the tapped layers' rows of the last step, [rows, n_taps * n_embd], low to high")
        .def("truncate", &batch_decoder::truncate, py::arg("slot"), py::arg("n_keep"),
             py::call_guard<py::gil_scoped_release>())
        .def("set_sampling", [](batch_decoder & b, float temperature, float top_p, int32_t top_k, uint64_t seed) {
                 sampling_params sp;
                 sp.temperature = temperature;
                 sp.top_p = top_p;
                 sp.top_k = top_k;
                 sp.seed = seed;
                 b.set_sampling(sp);
             }, py::arg("temperature"), py::arg("top_p") = 1.0f, py::arg("top_k") = 0, py::arg("seed") = 0,
             "temperature 0: step() returns greedy tokens (the default); > 0: sampled ones");

    py::class_<draft_head>(m, "DraftHead")
        .def(py::init([](const std::string & path, const target & tgt, int32_t n_ctx, int32_t n_batch) {
                 py::gil_scoped_release release;
                 return std::make_unique<draft_head>(path, tgt, n_ctx, n_batch);
             }), py::arg("path"), py::arg("target"), py::arg("n_ctx") = 4096, py::arg("n_batch") = 512,
             py::keep_alive<1, 3>())
        .def_property_readonly("eagle3", &draft_head::eagle3)
        .def_property_readonly("n_embd", &draft_head::n_embd)
        .def_property_readonly("n_feature", &draft_head::n_feature)
        .def_property_readonly("n_draft_vocab", &draft_head::n_draft_vocab)
        .def_property_readonly("head_dim", &draft_head::head_dim)
        .def_property_readonly("n_layer", &draft_head::n_layer)
        .def_property_readonly("device", &draft_head::device, "the ggml backend the head runs on")
        .def_property_readonly("norm_before_residual", &draft_head::norm_before_residual)
        .def_property_readonly("tap_layers", &draft_head::tap_layers)
        .def_property_readonly("copy_key", &draft_head::copy_key,
                               "copy-input head: the longest context its copy input matches (0: no copy input)")
        .def_property_readonly("depth_powers", &draft_head::depth_powers,
                               "the tree's calibration by depth (pyeagle.tree.depth_power; empty: none)")
        .def_property_readonly("n_committed", &draft_head::n_committed)
        .def_property_readonly("n_kv", &draft_head::n_kv)
        .def("to_target", &draft_head::to_target, py::arg("draft_id"))
        .def("prefix", [](draft_head & d, const std::vector<llama_token> & tokens,
                          py::array_t<float, py::array::c_style | py::array::forcecast> features, int32_t pos0) {
                 if (features.ndim() != 2 || features.shape(0) != (py::ssize_t) tokens.size() ||
                     features.shape(1) != d.n_feature()) {
                     throw std::invalid_argument(format("prefix: features must be [%zu, %d]", tokens.size(), d.n_feature()));
                 }
                 const float * f = features.data();
                 py::gil_scoped_release release;
                 d.prefix(tokens.data(), f, pos0, (int32_t) tokens.size());
             }, py::arg("tokens"), py::arg("features"), py::arg("pos0"))
        .def("tree", [](draft_head & d, const std::vector<llama_token> & tokens,
                        py::array_t<float, py::array::c_style | py::array::forcecast> inputs,
                        const std::vector<int32_t> & pos, const std::vector<int32_t> & cell_parent) {
                 const size_t n = tokens.size();
                 if (inputs.ndim() != 2 || inputs.shape(0) != (py::ssize_t) n || inputs.shape(1) != d.n_embd() ||
                     pos.size() != n || cell_parent.size() != n) {
                     throw std::invalid_argument(format("tree: need inputs [%zu, %d], pos [%zu], cell_parent [%zu]", n, d.n_embd(), n, n));
                 }
                 const float * in = inputs.data();
                 py::gil_scoped_release release;
                 return d.tree(tokens.data(), in, pos.data(), cell_parent.data(), (int32_t) n);
             }, py::arg("tokens"), py::arg("inputs"), py::arg("pos"), py::arg("cell_parent"))
        .def("rollback", &draft_head::rollback)
        .def("truncate", &draft_head::truncate, py::arg("n_keep"))
        .def("y", [](const draft_head & d) { return rows(&draft_head::y, d, d.n_out(), d.n_embd()); },
             "predicted features of the last eval's rows, [n, n_embd]")
        .def("logits", [](const draft_head & d) { return rows(&draft_head::logits, d, d.n_logit_rows(), d.n_draft_vocab()); },
             "draft logits of the last eval: every tree row, or the last row of a prefix, [rows, n_draft_vocab]");
    m.def("vocab_hash", &vocab_hash, py::arg("target"));

    py::class_<gen_stats>(m, "Stats")
        .def_readonly("n_prompt", &gen_stats::n_prompt)
        .def_readonly("n_reused", &gen_stats::n_reused)
        .def_readonly("n_tokens", &gen_stats::n_tokens)
        .def_readonly("n_passes", &gen_stats::n_passes, "target passes after the prefill (rounds)")
        .def_readonly("accepted_hist", &gen_stats::accepted_hist, "[k]: rounds that accepted k drafts")
        .def_readonly("n_drafted", &gen_stats::n_drafted, "draft nodes verified, all rounds")
        .def_readonly("n_lookup_drafted", &gen_stats::n_lookup_drafted, "of which only prompt lookup proposed")
        .def_readonly("n_lookup_accepted", &gen_stats::n_lookup_accepted, "of those, accepted")
        .def_property_readonly("rounds_by_kind", [](const gen_stats & s) {
            return py::dict(py::arg("plain") = s.n_rounds_kind[0], py::arg("lookup") = s.n_rounds_kind[1],
                            py::arg("head") = s.n_rounds_kind[2]);
        }, "rounds per kind: a plain step, a prompt-lookup chain alone, a head tree")
        .def_property_readonly("tokens_by_kind", [](const gen_stats & s) {
            return py::dict(py::arg("plain") = s.n_tokens_kind[0], py::arg("lookup") = s.n_tokens_kind[1],
                            py::arg("head") = s.n_tokens_kind[2]);
        }, "tokens emitted by the rounds of each kind")
        .def_property_readonly("time_by_kind", [](const gen_stats & s) {
            return py::dict(py::arg("plain") = s.t_kind[0], py::arg("lookup") = s.t_kind[1], py::arg("head") = s.t_kind[2]);
        }, "seconds the rounds of each kind took (drafting, verification, acceptance)")
        .def_readonly("t_prefill", &gen_stats::t_prefill)
        .def_readonly("t_draft", &gen_stats::t_draft)
        .def_readonly("t_verify", &gen_stats::t_verify)
        .def_readonly("t_accept", &gen_stats::t_accept)
        .def_readonly("t_total", &gen_stats::t_total)
        .def_property_readonly("tau", &gen_stats::tau, "mean tokens emitted per target pass (accepted drafts + 1)")
        .def_property_readonly("tokens_per_s", [](const gen_stats & s) {
            const double t = s.t_total - s.t_prefill;
            return t > 0 ? s.n_tokens / t : 0.0;
        }, "generated tokens per second, prefill excluded")
        .def("__repr__", [](const gen_stats & s) {
            return format("Stats(n_tokens=%d, n_passes=%d, tau=%.2f, prefill=%.3fs, draft=%.3fs, verify=%.3fs, "
                          "accept=%.3fs, total=%.3fs)", s.n_tokens, s.n_passes, s.tau(), s.t_prefill, s.t_draft,
                          s.t_verify, s.t_accept, s.t_total);
        });

    py::class_<gen_params>(m, "GenParams", "how one generate() call decodes (the C++ gen_params)")
        .def(py::init<>())
        .def_readwrite("n_depth", &gen_params::n_depth)
        .def_readwrite("n_top_k", &gen_params::n_top_k)
        .def_readwrite("n_tree", &gen_params::n_tree)
        .def_readwrite("p_min", &gen_params::p_min)
        .def_readwrite("adaptive", &gen_params::adaptive)
        .def_readwrite("n_lookup", &gen_params::n_lookup)
        .def_readwrite("suffix", &gen_params::suffix)
        .def_readwrite("copy_only", &gen_params::copy_only)
        .def_readwrite("store", &gen_params::store)
        .def_readwrite("remember", &gen_params::remember)
        .def_readwrite("draft", &gen_params::draft)
        .def_readwrite("temperature", &gen_params::temperature)
        .def_readwrite("top_p", &gen_params::top_p)
        .def_readwrite("top_k", &gen_params::top_k)
        .def_readwrite("seed", &gen_params::seed)
        .def_readwrite("max_tokens", &gen_params::max_tokens)
        .def_readwrite("stop_tokens", &gen_params::stop_tokens);

    py::class_<engine>(m, "CoreEngine")
        .def(py::init([](const std::string & target_path, const std::string & draft_path, int32_t n_ctx,
                         int32_t n_threads, int32_t n_gpu_layers, int32_t n_batch, int32_t flash_attn, bool kv_f32) {
                 engine_params p{target_path, draft_path, n_ctx, n_threads, n_gpu_layers, n_batch, flash_attn, kv_f32};
                 py::gil_scoped_release release;
                 return std::make_unique<engine>(p);
             }), py::arg("target"), py::arg("draft") = "", py::arg("n_ctx") = 4096, py::arg("n_threads") = 0,
             py::arg("n_gpu_layers") = 0, py::arg("n_batch") = 512, py::arg("flash_attn") = -1,
             py::arg("kv_f32") = false)
        .def("generate", [](engine & e, const std::vector<int32_t> & prompt, const gen_params & gp, py::object callback) {
                 // once per round: Python's callback, and Ctrl-C (KeyboardInterrupt) stops the loop.
                 // Without a callback the loop never takes the GIL (~0.1 ms a round here, with the
                 // thread that waits for it): cancel() stops it then.
                 std::unique_ptr<py::error_already_set> error;
                 on_tokens cb;
                 if (!callback.is_none()) {
                     cb = [&](const std::vector<int32_t> & toks) {
                         py::gil_scoped_acquire acquire;
                         try {
                             if (PyErr_CheckSignals() != 0) throw py::error_already_set();
                             return callback(toks).cast<bool>();
                         } catch (py::error_already_set & err) {
                             error = std::make_unique<py::error_already_set>(std::move(err));
                             return false;
                         }
                     };
                 }
                 gen_result r;
                 {
                     py::gil_scoped_release release;
                     r = e.generate(prompt, gp, cb);
                 }
                 if (error) throw std::move(*error);
                 return py::make_tuple(r.tokens, r.stop_reason, r.stats);
             }, py::arg("prompt"), py::arg("params"), py::arg("callback") = py::none())
        .def("cancel", &engine::cancel)
        .def("clear_cancel", &engine::clear_cancel, "forget an earlier cancel(); call before starting generate()")
        .def("reset", &engine::reset, py::call_guard<py::gil_scoped_release>())
        .def("remember", &engine::remember, py::arg("tokens"), py::call_guard<py::gil_scoped_release>(),
             "keep tokens (an output of this target) as a copy source for later generations")
        .def("forget", &engine::forget, py::call_guard<py::gil_scoped_release>(), "drop what remember() kept")
        .def_property_readonly("n_remembered", &engine::n_remembered, "tokens kept by remember() and generations")
        .def_property_readonly("target", [](engine & e) -> target & { return e.tgt(); }, py::return_value_policy::reference_internal)
        .def_property_readonly("has_head", [](engine & e) { return e.head() != nullptr; })
        .def("set_draft_oracle", [](engine & e, py::object fn) {
                 if (fn.is_none()) { e.set_draft_oracle(nullptr); return; }
                 e.set_draft_oracle([fn](const std::vector<int32_t> & ctx, std::vector<std::pair<float, int32_t>> & out, int32_t k) {
                     py::gil_scoped_acquire acquire;
                     out = fn(ctx, k).cast<std::vector<std::pair<float, int32_t>>>();
                 });
             }, py::arg("fn"), "test hook: fn(context_tokens, k) -> [(logprob, token)] replaces the head's drafts")
        .def("set_forced_kinds", [](engine & e, const std::vector<std::string> & kinds) {
                 std::vector<round_kind> k;
                 for (const auto & s : kinds) {
                     if (s == "plain") k.push_back(round_kind::plain);
                     else if (s == "lookup") k.push_back(round_kind::lookup);
                     else if (s == "head") k.push_back(round_kind::head);
                     else throw std::invalid_argument("round kind must be plain, lookup or head: " + s);
                 }
                 e.set_forced_kinds(std::move(k));
             }, py::arg("kinds"), "test hook: the kinds of the coming rounds, cycled ([]: the policy decides)")
        .def("verify_curve", &engine::verify_curve,
             "the round policy's verify cost curve: [(tokens, seconds)] as measured and updated by this engine")
        .def("acceptance_counts", [](const engine & e) {
                 const acceptance & a = e.policy_state().acc;
                 auto pairs = [](const rate_count & c) { return py::make_tuple(c.tried, c.hit); };
                 py::list head;
                 for (const auto & d : a.head_counts()) { py::list r; for (const auto & c : d) r.append(pairs(c)); head.append(r); }
                 auto by_match = [&](const auto & table) {
                     py::list out;
                     for (const auto & b : table) out.append(py::make_tuple(pairs(b[0]), pairs(b[1])));
                     return out;
                 };
                 return py::dict(py::arg("head") = head, py::arg("lookup_first") = by_match(a.first_counts()[0]),
                                 py::arg("lookup_next") = by_match(a.next_counts()[0]),
                                 py::arg("stored_first") = by_match(a.first_counts()[1]),
                                 py::arg("stored_next") = by_match(a.next_counts()[1]));
             }, "the policy's acceptance counts (tried, hit): head[depth][q decile], lookup_first[match bucket]"
                "[streak], lookup_next[match bucket][streak] (copies from this context), stored_first / stored_next "
                "(copies from earlier outputs); match buckets 1, 2, 3, 4, 5-7, 8-15, 16-31, 32+")
        .def("set_trace", &engine::set_trace, py::arg("on"), "test hook: record each round (trace())")
        .def("trace", [](const engine & e) {
                 static const char * names[] = {"plain", "lookup", "head"};
                 py::list out;
                 for (const auto & r : e.trace()) out.append(py::make_tuple(r.n_past, names[(int) r.kind], r.token, r.parent));
                 return out;
             }, "[(n_past, kind, tree tokens, tree parents)] per round since set_trace(True)")
        .def("set_broken_acceptance", &engine::set_broken_acceptance, py::arg("from_depth"),
             "test hook: a deliberately wrong sampled acceptance rule (no residual) among drafts at depth >= "
             "from_depth (True: 1, everywhere; 0: the correct rule)");
}
