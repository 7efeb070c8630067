// Decoders as transformers.js applies them (the reference the tests compare with): invalid UTF-8
// becomes one U+FFFD per maximal subpart (Rust's ByteFallback writes one per byte). There is no
// clean_up_tokenization_spaces: it would make decoding lossy, and streamed text would disagree.
#include "tokenizer/decoder.h"

#include "tokenizer/byte_level.h"
#include "tokenizer/json_fields.h"
#include "tokenizer/regex.h"
#include "tokenizer/utf8.h"

namespace atp {
namespace {

// Replaces each run of pieces that to_bytes accepts (it appends their bytes and returns true) by
// one piece: those bytes read as UTF-8. Other pieces pass through unchanged.
template <class ToBytes>
void CollapseByteRuns(std::vector<DecodePiece>& pieces, ToBytes to_bytes) {
  std::vector<DecodePiece> out;
  std::string bytes;
  auto flush = [&] {
    if (!bytes.empty()) out.push_back({utf8::Repair(bytes), false});
    bytes.clear();
  };
  for (DecodePiece& p : pieces) {
    if (to_bytes(p, bytes)) continue;
    flush();
    out.push_back(std::move(p));
  }
  flush();
  pieces = std::move(out);
}

// Byte-level vocabularies: every non-added token is text in GPT-2's byte alphabet.
class ByteLevel : public Decoder {
 public:
  void Apply(std::vector<DecodePiece>& pieces) const override {
    CollapseByteRuns(pieces, [](const DecodePiece& p, std::string& bytes) {
      if (p.added) return false;
      for (size_t i = 0; i < p.text.size();) {
        const size_t start = i;
        const int b = byte_level::ByteOf(utf8::Next(p.text, &i));
        if (b >= 0)
          bytes += char(b);
        else
          bytes.append(p.text, start, i - start);  // not a mapped character: keep it as written
      }
      return true;
    });
  }
};

// SentencePiece's byte tokens "<0xAB>".
class ByteFallback : public Decoder {
 public:
  void Apply(std::vector<DecodePiece>& pieces) const override {
    CollapseByteRuns(pieces, [](const DecodePiece& p, std::string& bytes) {
      const int b = ByteToken(p.text);
      if (b >= 0) bytes += char(b);
      return b >= 0;
    });
  }

 private:
  static int Hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  }
  static int ByteToken(const std::string& t) {
    if (t.size() != 6 || !t.starts_with("<0x") || t[5] != '>') return -1;
    const int hi = Hex(t[3]), lo = Hex(t[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
  }
};

class Fuse : public Decoder {
 public:
  void Apply(std::vector<DecodePiece>& pieces) const override {
    DecodePiece all;
    for (const DecodePiece& p : pieces) all.text += p.text;
    pieces.assign(1, std::move(all));
  }
};

class Replace : public Decoder {
 public:
  Replace(Regex pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void Apply(std::vector<DecodePiece>& pieces) const override {
    for (DecodePiece& p : pieces) p.text = pattern_.ReplaceAll(p.text, content_);
  }

 private:
  Regex pattern_;
  std::string content_;
};

// Removes up to `start` leading and `stop` trailing copies of `content` from each piece.
class Strip : public Decoder {
 public:
  Strip(std::string content, size_t start, size_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  void Apply(std::vector<DecodePiece>& pieces) const override {
    for (DecodePiece& p : pieces) {
      std::string_view t = p.text;
      for (size_t i = 0; i < start_ && t.starts_with(content_); ++i) t.remove_prefix(content_.size());
      for (size_t i = 0; i < stop_ && t.ends_with(content_); ++i) t.remove_suffix(content_.size());
      p.text = std::string(t);
    }
  }

 private:
  std::string content_;
  size_t start_, stop_;
};

// Replacement characters back to spaces; the space the pre-tokenizer prepended is dropped.
class Metaspace : public Decoder {
 public:
  Metaspace(Regex replacement, bool strip_first)
      : replacement_(std::move(replacement)), strip_first_(strip_first) {}
  void Apply(std::vector<DecodePiece>& pieces) const override {
    for (size_t i = 0; i < pieces.size(); ++i) {
      std::string t = replacement_.ReplaceAll(pieces[i].text, " ");
      if (strip_first_ && i == 0 && t.starts_with(' ')) t.erase(0, 1);
      pieces[i].text = std::move(t);
    }
  }

 private:
  Regex replacement_;  // the literal replacement character
  bool strip_first_;
};

class Sequence : public Decoder {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Decoder>> steps) : steps_(std::move(steps)) {}
  void Apply(std::vector<DecodePiece>& pieces) const override {
    for (const auto& s : steps_) s->Apply(pieces);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

Result<std::unique_ptr<Decoder>> ParseStrip(const nlohmann::json& j, const std::string& path) {
  ATP_ASSIGN_OR_RETURN(std::string content, jf::String(j, "content", path));
  ATP_ASSIGN_OR_RETURN(int64_t start, jf::Int(j, "start", path));
  ATP_ASSIGN_OR_RETURN(int64_t stop, jf::Int(j, "stop", path));
  if (content.empty() || start < 0 || stop < 0)
    return Status::Corruption(path + ": Strip needs a non-empty content and non-negative start/stop");
  return std::unique_ptr<Decoder>(new Strip(std::move(content), size_t(start), size_t(stop)));
}

Result<std::unique_ptr<Decoder>> ParseMetaspace(const nlohmann::json& j, const std::string& path) {
  ATP_ASSIGN_OR_RETURN(std::string replacement, jf::String(j, "replacement", path));
  // Older files say add_prefix_space, newer ones prepend_scheme; any prepending means strip it again.
  bool strip_first;
  if (const auto* scheme = jf::Find(j, "prepend_scheme")) {
    strip_first = !(scheme->is_string() && scheme->get<std::string>() == "never");
  } else {
    ATP_ASSIGN_OR_RETURN(strip_first, jf::Bool(j, "add_prefix_space", path, true));
  }
  ATP_ASSIGN_OR_RETURN(Regex re, Regex::Compile(replacement, /*literal=*/true));
  return std::unique_ptr<Decoder>(new Metaspace(std::move(re), strip_first));
}

}  // namespace

Result<std::unique_ptr<Decoder>> ParseDecoder(const nlohmann::json& j, const std::string& path) {
  ATP_ASSIGN_OR_RETURN(std::string type, jf::Type(j, path));
  if (type == "ByteLevel") return std::unique_ptr<Decoder>(new ByteLevel());
  if (type == "ByteFallback") return std::unique_ptr<Decoder>(new ByteFallback());
  if (type == "Fuse") return std::unique_ptr<Decoder>(new Fuse());
  if (type == "Strip") return ParseStrip(j, path);
  if (type == "Metaspace") return ParseMetaspace(j, path);
  if (type == "Replace") {
    ATP_ASSIGN_OR_RETURN(const nlohmann::json* pat, jf::Require(j, "pattern", path));
    ATP_ASSIGN_OR_RETURN(Regex pattern, ParsePattern(*pat, path + ".pattern"));
    ATP_ASSIGN_OR_RETURN(std::string content, jf::String(j, "content", path));
    return std::unique_ptr<Decoder>(new Replace(std::move(pattern), std::move(content)));
  }
  if (type == "Sequence") {
    ATP_ASSIGN_OR_RETURN(const nlohmann::json* list, jf::Array(j, "decoders", path));
    std::vector<std::unique_ptr<Decoder>> steps;
    for (size_t i = 0; i < list->size(); ++i) {
      ATP_ASSIGN_OR_RETURN(auto d, ParseDecoder((*list)[i], path + ".decoders[" + std::to_string(i) + "]"));
      steps.push_back(std::move(d));
    }
    return std::unique_ptr<Decoder>(new Sequence(std::move(steps)));
  }
  return jf::UnknownType(path, "decoder", type);
}

}  // namespace atp
