// Reduces a post-processor to the ids before and after the text. Offsets and type ids are not kept:
// the engine needs neither. Bert/Roberta processing and pair sequences are refused.
#include "tokenizer/post_processor.h"

#include "tokenizer/json_fields.h"

namespace atp {
namespace {

Result<SpecialTemplate> ParseTemplate(const nlohmann::json& j, const std::string& path,
                                      const std::function<int32_t(std::string_view)>& token_to_id) {
  SpecialTemplate t;
  ATP_ASSIGN_OR_RETURN(const nlohmann::json* single, jf::Array(j, "single", path));
  const nlohmann::json* table = jf::Find(j, "special_tokens");
  bool seen_text = false;
  for (size_t i = 0; i < single->size(); ++i) {
    const std::string ipath = path + ".single[" + std::to_string(i) + "]";
    const auto& item = (*single)[i];
    if (const auto* seq = jf::Find(item, "Sequence")) {
      ATP_ASSIGN_OR_RETURN(std::string which, jf::String(*seq, "id", ipath + ".Sequence"));
      if (which != "A")
        return Status::Unsupported(ipath + ".Sequence.id: single template uses '" + which + "'");
      seen_text = true;
      continue;
    }
    const auto* special = jf::Find(item, "SpecialToken");
    if (!special) return Status::Corruption(ipath + ": expected SpecialToken or Sequence");
    ATP_ASSIGN_OR_RETURN(std::string name, jf::String(*special, "id", ipath + ".SpecialToken"));
    std::vector<int32_t> ids;
    if (const auto* entry = table ? jf::Find(*table, name) : nullptr) {
      ATP_ASSIGN_OR_RETURN(const nlohmann::json* list,
                           jf::Array(*entry, "ids", path + ".special_tokens." + name));
      for (const auto& id : *list) {
        ATP_ASSIGN_OR_RETURN(int32_t v, jf::TokenId(id, path + ".special_tokens." + name + ".ids"));
        ids.push_back(v);
      }
    } else if (int32_t id = token_to_id(name); id >= 0) {
      ids.push_back(id);
    } else {
      return Status::Corruption(ipath + ".SpecialToken.id: '" + name + "' is not a known token");
    }
    auto& side = seen_text ? t.suffix : t.prefix;
    side.insert(side.end(), ids.begin(), ids.end());
  }
  return t;
}

}  // namespace

Result<SpecialTemplate> ParsePostProcessor(const nlohmann::json& j, const std::string& path,
                                           const std::function<int32_t(std::string_view)>& token_to_id) {
  ATP_ASSIGN_OR_RETURN(std::string type, jf::Type(j, path));
  if (type == "TemplateProcessing") return ParseTemplate(j, path, token_to_id);
  if (type == "ByteLevel") return SpecialTemplate{};  // it only trims offsets
  if (type == "Sequence") {
    ATP_ASSIGN_OR_RETURN(const nlohmann::json* list, jf::Array(j, "processors", path));
    SpecialTemplate all;
    for (size_t i = 0; i < list->size(); ++i) {
      ATP_ASSIGN_OR_RETURN(
          SpecialTemplate t,
          ParsePostProcessor((*list)[i], path + ".processors[" + std::to_string(i) + "]", token_to_id));
      // Each processor wraps what the ones before it produced.
      all.prefix.insert(all.prefix.begin(), t.prefix.begin(), t.prefix.end());
      all.suffix.insert(all.suffix.end(), t.suffix.begin(), t.suffix.end());
    }
    return all;
  }
  return jf::UnknownType(path, "post-processor", type);
}

}  // namespace atp
