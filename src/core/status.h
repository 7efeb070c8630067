// Errors as values: a Status names its kind and carries one line for the user.
// Modules return Status / Result<T> across their boundaries instead of throwing (LevelDB's habit);
// the CLI turns a failed Status into a one-line message and a non-zero exit.
#pragma once
#include <cstdlib>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace atp {

class Status {
 public:
  enum class Code { kOk, kInvalidArgument, kNotFound, kCorruption, kIOError, kUnsupported, kResourceExhausted };

  Status() = default;
  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string m) { return Status(Code::kInvalidArgument, std::move(m)); }
  static Status NotFound(std::string m) { return Status(Code::kNotFound, std::move(m)); }
  static Status Corruption(std::string m) { return Status(Code::kCorruption, std::move(m)); }
  static Status IOError(std::string m) { return Status(Code::kIOError, std::move(m)); }
  static Status Unsupported(std::string m) { return Status(Code::kUnsupported, std::move(m)); }
  static Status ResourceExhausted(std::string m) { return Status(Code::kResourceExhausted, std::move(m)); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return msg_; }
  // "invalid argument: <message>" — what the CLI prints.
  std::string ToString() const;
  // Prefixes context ("config.json: ") so the message names the file or field at fault.
  Status WithContext(const std::string& prefix) const {
    return ok() ? *this : Status(code_, prefix + msg_);
  }

 private:
  Status(Code c, std::string m) : code_(c), msg_(std::move(m)) {}
  Code code_ = Code::kOk;
  std::string msg_;
};

// A value or the Status explaining why there is none.
template <typename T>
class Result {
 public:
  Result(T v) : v_(std::move(v)) {}                       // NOLINT: implicit by design
  Result(Status s) : v_(std::move(s)) {                   // NOLINT
    if (std::get<Status>(v_).ok()) std::abort();          // an ok Status carries no value: a bug
  }
  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace atp

#define ATP_RETURN_IF_ERROR(expr)            \
  do {                                       \
    ::atp::Status _st = (expr);              \
    if (!_st.ok()) return _st;               \
  } while (0)

#define ATP_CONCAT_INNER(a, b) a##b
#define ATP_CONCAT(a, b) ATP_CONCAT_INNER(a, b)
#define ATP_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()
#define ATP_ASSIGN_OR_RETURN(lhs, expr) ATP_ASSIGN_OR_RETURN_IMPL(ATP_CONCAT(_res_, __LINE__), lhs, expr)
