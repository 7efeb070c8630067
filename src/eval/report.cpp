#include "eval/report.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace atp {

std::string CpuModelName() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(" \t", colon + 1));
    }
  return "unknown";
}

std::string HostName() {
  char b[256] = {};
  return gethostname(b, sizeof b - 1) == 0 ? std::string(b) : std::string();
}

std::string ShortName(const std::string& path) {
  const std::string n = std::filesystem::path(path).lexically_normal().filename().string();
  return n.empty() ? path : n;
}

}  // namespace atp
