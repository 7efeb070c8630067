// `atp convert`: a safetensors model directory to one self-contained GGUF file, checked by reading it
// back (config, every tensor, and the tokenizer against the original on a probe text).
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

Status CheckReadBack(const std::string& dir, const std::string& out) {
  ATP_ASSIGN_OR_RETURN(std::shared_ptr<const gguf::GgufFile> g, gguf::GgufFile::Open(out));
  ATP_ASSIGN_OR_RETURN(ModelConfig cfg, ConfigFromGguf(*g));
  if (!std::filesystem::exists(dir + "/tokenizer.json")) return Status::Ok();
  ATP_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> orig, Tokenizer::LoadFromDir(dir));
  ATP_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> back, LoadGgufTokenizer(*g));
  if (orig->Encode(kProbe, true) != back->Encode(kProbe, true))
    return Status::Corruption(out + ": the tokenizer read back from GGUF encodes a probe text differently from " +
                              dir + "/tokenizer.json");
  return Status::Ok();
}

}  // namespace

void AddConvert(CLI::App& app, Runner* run) {
  struct Opts {
    std::string model, out, type = "f16";
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("convert", "convert a safetensors model directory to a single GGUF file");
  cmd->add_option("-m,--model", o->model, "model directory (Hugging Face layout)")->required();
  cmd->add_option("-o,--out", o->out, "output .gguf file")->required();
  cmd->add_option("--type", o->type, "type of the weight matrices: f32|f16|bf16 (norms and biases stay f32)")
      ->capture_default_str();
  cmd->callback([o, run] {
    *run = [o]() -> int {
      gguf::GgmlType type;
      if (!ParseGgufOutType(o->type, &type))
        return Fail("convert", Status::InvalidArgument("--type must be f32, f16 or bf16, got '" + o->type + "'"));
      if (gguf::IsGgufFile(o->model))
        return Fail("convert", Status::Unsupported(o->model + " is already GGUF; convert reads a safetensors directory"));
      std::cerr << "convert: " << o->model << " -> " << o->out << " (" << o->type << ")\n";
      Status s = ConvertToGguf(o->model, o->out, type);
      if (s.ok()) s = CheckReadBack(o->model, o->out);
      if (!s.ok()) {
        std::error_code ec;
        std::filesystem::remove(o->out, ec);  // never leave a half-written or wrong file behind
        return Fail("convert", s);
      }
      std::cerr << "convert: done, " << std::filesystem::file_size(o->out) << " bytes\n";
      return 0;
    };
  });
}

}  // namespace atp::cli
