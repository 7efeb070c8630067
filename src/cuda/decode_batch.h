// The decode items of a GPU forward step, batched across sequences: every item with one token whose
// policies are cuda::DecodePlanners (cuda/device_policy.h) runs a layer in a few launches instead of
// several per item: one StoreKvBatch per storage form for the new rows, FinishDecode per item (no
// launch unless a KIVI group or ATP block completes), one RunDecodeBatch per storage form for the
// attention (split-K over a flat (item, chunk) work list sized for one wave, then one combine;
// cuda/attention.h), then ObserveDecode per item (h2o's votes; the forward pass runs every policy's
// Update once the whole pass is queued). Every layer's descriptors are planned when the step starts
// and reach the device in one host-to-device copy. Other items (prefill chunks, policies without a
// plan: calibrated lowrank, wrappers such as the bench's timing policy, and those whose Batches() is
// false) keep the per-item path.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "cuda/attention.h"
#include "cuda/check.h"
#include "cuda/device_policy.h"
#include "model/llama.h"

namespace atp::cuda {

class BatchedDecode {
 public:
  // The step's rows in device memory, row r of the batch at r * width: K, V (kvd), the layer input X
  // (d; null when no policy reads it), queries Q and attention outputs O (qd).
  struct Rows {
    const float* k = nullptr;
    const float* v = nullptr;
    const float* x = nullptr;
    const float* q = nullptr;
    float* o = nullptr;
    int64_t kvd = 0, d = 0, qd = 0;
  };

  BatchedDecode() = default;
  ~BatchedDecode();
  BatchedDecode(const BatchedDecode&) = delete;
  BatchedDecode& operator=(const BatchedDecode&) = delete;

  // Plans the step for `layers` layers of attention shape a: items[i] (its first row at first_row[i])
  // is batched when it has one token and a DecodePlanner per layer. Each planned policy's PlanDecode
  // runs here, layer after layer; then one copy takes every descriptor to the device. An error
  // leaves the planned policies mid-step (as a failed Append would).
  Status Plan(std::span<const ForwardItem> items, std::span<const int64_t> first_row, const Rows& rows,
              const AttnShape& a, int layers);
  // Whether items[i] of the last Plan runs here (else through the per-item Append/Attend/Update).
  bool Batched(size_t i) const { return i < batched_.size() && batched_[i]; }
  // Layer l of the planned items, on the legacy stream: stores, FinishDecode, attention, ObserveDecode.
  // The caller runs their Update once the pass is queued.
  Status RunLayer(int l);

 private:
  struct StoreGroup {  // one StoreKvBatch
    KvFormat f;
    int dim;
    size_t jobs;  // byte offset of its StoreJobs in the descriptors
    int n;
    int64_t max_elems;
  };
  struct AttendGroup {  // one RunDecodeBatch
    DecodeBatch batch;
    size_t tasks, work;  // byte offsets in the descriptors
  };
  struct Item {
    DecodePlanner* plan;
    KvPolicy* kv;
    const float* x;  // its layer input row, or null
    const float* q;  // its query row
  };
  struct Layer {
    std::vector<StoreGroup> stores;
    std::vector<AttendGroup> attends;
    std::vector<Item> items;
  };
  // Appends n bytes at p to the host descriptors (16-byte aligned); their offset.
  size_t Put(const void* p, size_t n);

  std::vector<bool> batched_;
  std::vector<Layer> layers_;
  uint8_t* host_ = nullptr;  // pinned: the copy runs at full speed without a staging bounce
  size_t host_size_ = 0, host_cap_ = 0;
  DeviceArray<uint8_t> desc_;  // the step's descriptors on the device
  DeviceArray<float> ws_;      // partial results of the largest layer's attention
};

}  // namespace atp::cuda
