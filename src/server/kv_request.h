// The `kv` field of a request, made safe to parse: a client must never make the server open a path.
// `file=` is refused in every part of the string; `basis=NAME` selects a basis file that the operator
// registered at start-up (`atp serve --kv-basis NAME=PATH`) and becomes `file=PATH` for the parser.
#pragma once
#include <map>
#include <string>

#include "core/status.h"

namespace atp {

// NAME -> PATH, fixed at start-up.
using KvBases = std::map<std::string, std::string>;

// Parses "NAME=PATH" of --kv-basis: NAME of letters, digits, '-', '_' and '.'; PATH an existing regular
// file (not a FIFO or a device, which would block its reader) without the policy-string syntax
// characters ',' and '+'.
Status AddKvBasis(const std::string& arg, KvBases* bases);

// The request's spec with basis=NAME resolved, or InvalidArgument naming the problem.
Result<std::string> ResolveRequestKv(const std::string& spec, const KvBases& bases);

}  // namespace atp
