#include "core/status.h"

namespace atp {

std::string Status::ToString() const {
  const char* kind = "";
  switch (code_) {
    case Code::kOk: return "ok";
    case Code::kInvalidArgument: kind = "invalid argument"; break;
    case Code::kNotFound: kind = "not found"; break;
    case Code::kCorruption: kind = "corrupt input"; break;
    case Code::kIOError: kind = "I/O error"; break;
    case Code::kUnsupported: kind = "unsupported"; break;
    case Code::kResourceExhausted: kind = "resource exhausted"; break;
  }
  return std::string(kind) + ": " + msg_;
}

}  // namespace atp
