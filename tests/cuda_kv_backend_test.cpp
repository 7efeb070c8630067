// Registers the GPU as a backend of the policy family tests (tests/kv_backend.h); compiled only with
// the CUDA backend. The tests themselves live with their families (evict_policy_test.cpp, ...).
#include "cuda/backend.h"
#include "kv_backend.h"

namespace atp::kvtest {
namespace {

const RegisterKvBackend kCuda("cuda", {ParseCudaKvPolicy, CudaDeviceStatus, 5e-2, 1e-4});

}  // namespace
}  // namespace atp::kvtest
