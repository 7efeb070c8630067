// Helpers shared by the model, loader and CLI tests: paths to ../shared, temp directories, a reader
// for the reference dump (its I32 tensors are outside what the engine's loader accepts), and a
// way to run the `atp` binary and capture its exit code, stdout and stderr.
#pragma once
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace atp::testing {

inline const std::string kShared = ATP_SOURCE_DIR "/../shared";
inline const std::string kRefModel = kShared + "/models/ref-5m";
inline const std::string kRefModelBf16 = kShared + "/models/ref-5m-bf16";
inline const std::string kValidText = kShared + "/data/valid.txt";
inline constexpr int kRefVocab = 4096;  // ref-5m's vocabulary
// The npm test oracles (tests/js/package.json), installed by scripts/setup.sh --test.
inline const std::string kJsDir = ATP_SOURCE_DIR "/tests/js";

inline bool HaveShared() { return std::filesystem::exists(kRefModel + "/model.safetensors"); }

#define ATP_SKIP_WITHOUT_SHARED()                                                                       \
  do {                                                                                                  \
    if (!::atp::testing::HaveShared())                                                                  \
      GTEST_SKIP() << "reference model not found at " << ::atp::testing::kRefModel                      \
                   << " (the ../shared checkout is absent); skipping";                                  \
  } while (0)

// A fresh directory under the system temp dir, removed when the object dies.
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    std::random_device rd;
    path_ = (std::filesystem::temp_directory_path() /
             ("atp_test_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(rd())))
                .string();
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline std::string Slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline void WriteString(const std::string& path, const std::string& s) {
  std::ofstream f(path, std::ios::binary);
  f << s;
}

// One tensor of the reference dump, widened to what the tests need.
struct RefTensor {
  std::string dtype;            // "I32" or "F32"
  std::vector<int64_t> shape;
  std::vector<int32_t> i32;     // I32 data
  std::vector<float> f32;       // F32 data
};

// A minimal independent safetensors reader (I32 and F32 only) for reference/logits.safetensors.
inline std::map<std::string, RefTensor> ReadRefTensors(const std::string& path) {
  std::map<std::string, RefTensor> out;
  const std::string bytes = Slurp(path);
  if (bytes.size() < 8) return out;
  uint64_t hlen;
  std::memcpy(&hlen, bytes.data(), 8);
  auto h = nlohmann::json::parse(bytes.substr(8, hlen));
  const char* data = bytes.data() + 8 + hlen;
  for (auto& [name, info] : h.items()) {
    if (name == "__metadata__") continue;
    RefTensor t;
    t.dtype = info["dtype"];
    t.shape = info["shape"].get<std::vector<int64_t>>();
    const uint64_t b = info["data_offsets"][0], e = info["data_offsets"][1];
    if (t.dtype == "I32") {
      t.i32.resize((e - b) / 4);
      std::memcpy(t.i32.data(), data + b, e - b);
    } else if (t.dtype == "F32") {
      t.f32.resize((e - b) / 4);
      std::memcpy(t.f32.data(), data + b, e - b);
    }
    out[name] = std::move(t);
  }
  return out;
}

struct CmdResult {
  int exit_code = -1;
  std::string out, err;
};

// Runs `atp <args>` through the shell (args are passed verbatim: quote them), capturing both streams.
inline CmdResult RunAtp(const std::string& args) {
  static int counter = 0;
  const std::string base = (std::filesystem::temp_directory_path() /
                            ("atp_cli_" + std::to_string(::getpid()) + "_" + std::to_string(counter++)))
                               .string();
  const std::string cmd = std::string("'") + ATP_BINARY + "' " + args + " >'" + base + ".out' 2>'" + base + ".err'";
  CmdResult r;
  int st = std::system(cmd.c_str());
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  r.out = Slurp(base + ".out");
  r.err = Slurp(base + ".err");
  std::filesystem::remove(base + ".out");
  std::filesystem::remove(base + ".err");
  return r;
}

inline double MaxAbsDiff(const float* a, const float* b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, double(std::abs(double(a[i]) - double(b[i]))));
  return m;
}

}  // namespace atp::testing
