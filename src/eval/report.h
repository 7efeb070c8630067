// What reports name: the machine a measurement ran on, and files by their short names.
#pragma once
#include <string>

namespace atp {

// The CPU model as lscpu prints it (the first "model name" of /proc/cpuinfo), or "unknown".
std::string CpuModelName();
// gethostname(), or "" when it fails.
std::string HostName();
// The last component of a path ("../shared/models/ref-5m/" -> "ref-5m"), or the path when it has none.
std::string ShortName(const std::string& path);

}  // namespace atp
