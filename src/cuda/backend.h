// The CUDA backend (built with -DATP_CUDA=ON): the Llama forward pass on one NVIDIA GPU (cuBLAS bf16
// projections, fused elementwise kernels, attention kernels per KV representation) and the KV
// policies whose rows live in device memory. It refuses policies it has no kernels for instead of
// falling back to the CPU. The CPU path is untouched: nothing here is used unless `--device cuda`.
#pragma once
#include <memory>
#include <string>

#include "core/status.h"
#include "kv/kv_policy.h"
#include "kv/policy_config.h"
#include "model/llama.h"

namespace atp {

// Ok when a CUDA device is usable; otherwise why not (no driver, no device, ...).
Status CudaDeviceStatus();

// A forward pass on the GPU for `model` (device 0): uploads every weight as bf16 (norm weights and
// biases f32) and keeps it for the backend's lifetime. The model must outlive the backend. Items
// handed to Forward must carry policies from MakeCudaKvFactory (possibly wrapped, e.g. by the
// bench's timing wrapper): the backend calls their Append/Attend/Update with device pointers, except
// for decode items (one token) whose every policy is a cuda::DecodePlanner that Batches()
// (cuda/device_policy.h: dense, mx, atp, kivi, streaming, h2o, snapkv; not atp residual=, lowrank or a
// wrapper): those it plans when the step starts
// and runs per layer in batched launches across sequences (cuda/decode_batch.h), with the same
// results up to the attention's summation order.
Result<std::unique_ptr<ForwardBackend>> MakeCudaBackend(const LlamaModel& model);

// KV policies in device memory for a parsed policy (the one parser of both backends), with the same
// canonical Describe() and the same Bytes(). Supported: dense:dtype=f32|f16|bf16,
// mx (every format, nvfp4 included), for head_dim 32, 64 or 128 and at most 8 query heads per KV head (CheckShape);
// atp with proj=dense and block <= 64, keep= below block, residual= and rope=pre too (cuda/atp_policy.h); kivi alone
// (cuda/kivi_policy.h);
// calibrated lowrank:rk=R,rv=R with R = 16, 32, 64 or 128, its coefficient rows in any of those forms or
// kivi's (as the layer of head_dim R they make allows), online lowrank in f32
// (cuda/lowrank_policy.h); streaming, h2o and snapkv
// alone or with those dense or MX rows (cuda/streaming_policy.h, cuda/evict_policy.h); other policies fail
// naming what is supported.
// Their Append/Attend take device or host pointers (host buffers are staged through the device),
// so the CPU tests can drive them through the plain KvPolicy interface.
Result<std::shared_ptr<KvPolicyFactory>> MakeCudaKvFactory(const KvPolicyConfig& config);
// ParseKvConfig (kv/policy_config.h), then the above: the GPU's KvPolicyParser.
Result<std::shared_ptr<KvPolicyFactory>> ParseCudaKvPolicy(const std::string& spec, const std::string& model_dir = "");

}  // namespace atp
