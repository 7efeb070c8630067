#include "server/kv_request.h"

#include <sys/stat.h>

#include <cctype>

namespace atp {

namespace {

std::string Names(const KvBases& bases) {
  std::string s;
  for (auto& [n, p] : bases) s += (s.empty() ? "" : ", ") + n;
  return s.empty() ? "none (start the server with --kv-basis NAME=PATH)" : s;
}

bool ValidName(const std::string& n) {
  if (n.empty() || n.size() > 64) return false;
  for (char c : n)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') return false;
  return true;
}

}  // namespace

Status AddKvBasis(const std::string& arg, KvBases* bases) {
  const size_t eq = arg.find('=');
  const std::string name = arg.substr(0, eq), path = eq == std::string::npos ? "" : arg.substr(eq + 1);
  if (eq == std::string::npos || !ValidName(name) || path.empty())
    return Status::InvalidArgument("--kv-basis '" + arg + "': expected NAME=PATH, NAME of letters, digits, '-', '_', '.'");
  if (path.find_first_of(",+") != std::string::npos)
    return Status::InvalidArgument("--kv-basis '" + arg + "': the path may not contain ',' or '+' (policy string syntax)");
  struct stat st {};
  if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
    return Status::InvalidArgument("--kv-basis '" + arg + "': " + path + " is not a regular file");
  if (!bases->emplace(name, path).second)
    return Status::InvalidArgument("--kv-basis: the name '" + name + "' is given twice");
  return Status::Ok();
}

Result<std::string> ResolveRequestKv(const std::string& spec, const KvBases& bases) {
  // Lexically, by the policy-string syntax (PolicySpec): parts joined by '+', each "name[:k=v,k=v...]".
  // The registry parses the result and reports anything else that is wrong with it.
  std::string out;
  size_t start = 0;
  while (true) {
    const size_t plus = spec.find('+', start);
    const std::string part = spec.substr(start, plus == std::string::npos ? std::string::npos : plus - start);
    const size_t colon = part.find(':');
    std::string rebuilt = part.substr(0, colon);
    if (colon != std::string::npos) {
      rebuilt += ':';
      size_t k = colon + 1;
      bool first = true;
      while (true) {
        const size_t comma = part.find(',', k);
        std::string kv = part.substr(k, comma == std::string::npos ? std::string::npos : comma - k);
        const size_t eq = kv.find('=');
        const std::string key = kv.substr(0, eq);
        if (key == "file")
          return Status::InvalidArgument("kv: file= is not accepted in a request (the server opens no path a client "
                                         "names); select a basis registered at start-up with basis=NAME; registered: " +
                                         Names(bases));
        if (key == "basis") {
          const std::string name = eq == std::string::npos ? "" : kv.substr(eq + 1);
          auto it = bases.find(name);
          if (it == bases.end())
            return Status::InvalidArgument("kv: no basis named '" + name + "'; registered: " + Names(bases));
          kv = "file=" + it->second;
        }
        rebuilt += (first ? "" : ",") + kv;
        first = false;
        if (comma == std::string::npos) break;
        k = comma + 1;
      }
    }
    out += rebuilt;
    if (plus == std::string::npos) break;
    out += '+';
    start = plus + 1;
  }
  return out;
}

}  // namespace atp
