// libFuzzer target: SafeTensors::Open on a .safetensors file, or on a directory whose
// model.safetensors.index.json is the input (an input starting with '{') over fixed valid shards.
// Every view handed out must lie inside its mapping: the target reads each one's first and last byte.
#include <cstdint>
#include <string>

#include "format/safetensors.h"
#include "fuzz_util.h"

namespace {

std::string g_single;   // a file holding the input
std::string g_sharded;  // a directory with shards; the input becomes its index

void WriteShards(const std::string& dir) {
  using atp::DType;
  const float a[2] = {1, 2};
  const uint16_t b[2] = {0x3f80, 0x4000};
  atp::WriteSafeTensors(dir + "/model-00001-of-00002.safetensors", {{"a", DType::kF32, {2}, a}});
  atp::WriteSafeTensors(dir + "/model-00002-of-00002.safetensors", {{"b", DType::kBF16, {2, 1}, b}});
  atp::WriteSafeTensors(dir + "/also-a.safetensors", {{"a", DType::kF16, {1, 2}, b}});  // collides with shard 1
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const std::string scratch = atp::fuzz::ScratchDir("safetensors");
  g_single = scratch + "/input.safetensors";
  g_sharded = scratch + "/sharded";
  std::filesystem::create_directories(g_sharded);
  WriteShards(g_sharded);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const bool index = !in.empty() && in[0] == '{';
  atp::fuzz::WriteBytes(index ? g_sharded + "/model.safetensors.index.json" : g_single, in);
  auto st = atp::SafeTensors::Open(index ? g_sharded : g_single);
  if (!st.ok()) return 0;
  volatile uint8_t sink = 0;
  for (const auto& [name, view] : (*st)->tensors()) {
    const size_t n = view.nbytes();
    if (n == 0) continue;
    const auto* p = static_cast<const uint8_t*>(view.data);
    sink = sink ^ p[0] ^ p[n - 1];
  }
  return 0;
}
