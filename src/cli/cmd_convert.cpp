// `atp convert`: a safetensors model directory to one self-contained GGUF file, or a GGUF file to a
// directory; the result is checked by reading it back (the GGUF config, and the tokenizers of both
// sides against each other on a probe text).
#include <filesystem>
#include <iostream>

#include "cli/common.h"
#include "model/gguf_convert.h"
#include "model/gguf_model.h"
#include "model/gguf_tokenizer.h"

namespace atp::cli {

namespace {

// Text that exercises pre-tokenizer rules, digits, whitespace runs, non-ASCII and byte fallback.
constexpr const char* kProbe =
    "Hello world! It's 2024: 12345 apples,  tabs\tand\nnew lines. Ünïcödé, 日本語, emoji 🙂 and \xF0\x9F\xA7\xAA.";

Status CheckReadBack(const std::string& dir, const std::string& gguf_path) {
  ATP_ASSIGN_OR_RETURN(std::shared_ptr<const gguf::GgufFile> g, gguf::GgufFile::Open(gguf_path));
  ATP_RETURN_IF_ERROR(ConfigFromGguf(*g).status());
  if (!std::filesystem::exists(dir + "/tokenizer.json")) return Status::Ok();
  ATP_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> orig, Tokenizer::LoadFromDir(dir));
  ATP_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> back, LoadGgufTokenizer(*g));
  if (orig->Encode(kProbe, true) != back->Encode(kProbe, true))
    return Status::Corruption(gguf_path + ": the GGUF tokenizer encodes a probe text differently from " + dir +
                              "/tokenizer.json");
  return Status::Ok();
}

}  // namespace

void AddConvert(CLI::App& app, Runner* run) {
  struct Opts {
    std::string model, out, type = "f16";
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("convert", "convert a safetensors model directory to one GGUF file, or a GGUF file "
                                             "to a model directory");
  cmd->add_option("-m,--model", o->model, "model directory (Hugging Face layout) or .gguf file")->required();
  cmd->add_option("-o,--out", o->out, "output: a .gguf file for a directory, a directory for a .gguf file")->required();
  auto* type_opt = cmd->add_option("--type", o->type, "GGUF weight format: " + GgufWeightFormatNames() +
                                                          " (ggml's reference quantizers; q4_k_m/q5_k_m: llama.cpp's "
                                                          "per-tensor mixes; norms and biases stay f32; a matrix whose "
                                                          "rows are not whole blocks takes llama.cpp's fallback type, "
                                                          "else keeps its own; GGUF to directory keeps the file's types)")
                       ->capture_default_str();
  cmd->callback([o, run, type_opt] {
    *run = [o, type_opt]() -> int {
      const bool from_gguf = gguf::IsGgufFile(o->model);
      GgufWeightFormat format;
      if (!ParseGgufWeightFormat(o->type, &format))
        return Fail("convert", Status::InvalidArgument("--type must be one of " + GgufWeightFormatNames() + ", got '" +
                                                       o->type + "'"));
      if (from_gguf && type_opt->count())
        return Fail("convert", Status::InvalidArgument("--type applies when writing GGUF; " + o->model +
                                                       " is GGUF and its tensors keep their types"));
      std::cerr << "convert: " << o->model << " -> " << o->out << (from_gguf ? "" : " (" + o->type + ")") << "\n";
      std::vector<std::string> fallbacks;
      Status s = from_gguf ? ConvertFromGguf(o->model, o->out) : ConvertToGguf(o->model, o->out, format, &fallbacks);
      for (const std::string& f : fallbacks) std::cerr << "convert: " << f << "\n";
      if (s.ok()) s = from_gguf ? CheckReadBack(o->out, o->model) : CheckReadBack(o->model, o->out);
      if (!s.ok()) {
        if (!from_gguf) {
          std::error_code ec;
          std::filesystem::remove(o->out, ec);  // never leave a half-written or wrong file behind
        }
        return Fail("convert", s);
      }
      std::cerr << "convert: done\n";
      return 0;
    };
  });
}

}  // namespace atp::cli
