// KV memory accounting for the scheduler: a byte budget counted in pages, one charge per admitted
// sequence, and per-policy footprints that estimate a request before it runs. It allocates nothing
// (each KvPolicy owns its buffers); it only decides who may start, so the budget is a promise, not a wall.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "kv/kv_policy.h"
#include "model/llama.h"

namespace atp {

// Each sequence is charged max(its reservation, its measured bytes), rounded up to whole pages.
// Thread-safety: every method may be called from any thread.
class KvPool {
 public:
  KvPool(size_t capacity_bytes, size_t page_bytes);

  size_t page_bytes() const { return page_bytes_; }
  size_t capacity_bytes() const { return capacity_pages_ * page_bytes_; }
  // Whether a sequence needing `bytes` could be admitted into an empty pool.
  bool Fits(size_t bytes) const { return Pages(bytes) <= capacity_pages_; }

  // Admits sequence `id` with an estimate of its largest footprint; false (and nothing changes) when
  // that many pages are not free.
  bool TryReserve(uint64_t id, size_t estimate_bytes);
  // Records the sequence's measured bytes. A sequence that outgrows its estimate is charged the excess
  // rather than stopped (the pool then runs over budget and admits nobody until it is back under).
  void Update(uint64_t id, size_t bytes);
  void Release(uint64_t id);

  struct Usage {
    size_t capacity_bytes = 0;
    size_t charged_bytes = 0;  // pages charged, in bytes
    size_t used_bytes = 0;     // measured bytes of all sequences
    size_t sequences = 0;
  };
  Usage usage() const;

 private:
  struct Charge {
    size_t reserved_pages = 0, used_bytes = 0;
    size_t pages(size_t page) const { return std::max(reserved_pages, (used_bytes + page - 1) / page); }
  };
  size_t Pages(size_t bytes) const { return (bytes + page_bytes_ - 1) / page_bytes_; }

  const size_t page_bytes_, capacity_pages_;
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, Charge> seqs_;
  size_t charged_pages_ = 0, used_bytes_ = 0;
};

// Bytes one sequence of a policy holds as a function of its length, measured once by appending
// pseudo-random rows to a probe sequence (full-rank data, so policies whose size depends on the data
// show their largest form). Compression that depends on length (blocks, windows) is captured per step.
class KvFootprint {
 public:
  // Measures every `step` tokens up to `max_len`. Safe beside a running forward pass: it touches no
  // model state, and its kernels run on the calling thread while the pool's workers are busy.
  static KvFootprint Measure(const LlamaModel& model, const KvPolicyFactory& factory, int max_len, int step = 64);
  // Bytes at `len` tokens: linear between measured points, rounded up.
  size_t BytesAt(int len) const;

 private:
  int step_ = 64;
  std::vector<size_t> bytes_;  // bytes_[i]: bytes held at length (i + 1) * step_
};

}  // namespace atp
