// KV memory accounting for the scheduler: a byte budget counted in pages and one charge per running
// sequence. A sequence is charged for what it holds now and for the step about to run, never for the
// length it might reach: the scheduler reserves each step's growth before the step runs and preempts a
// sequence when the pages are not there (engine/scheduler.h). It allocates nothing (each KvPolicy owns
// its buffers), so the budget bounds what the policies' Bytes() report, not what malloc hands out.
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

  // Raises sequence `id`'s reservation to `bytes` (a new id starts at none), provided that leaves at least
  // `keep_free` pages unreserved; false, and nothing changes, otherwise. A reservation never shrinks.
  bool TryReserve(uint64_t id, size_t bytes, size_t keep_free = 0);
  // Records the sequence's measured bytes. A sequence that outgrows its reservation is charged the excess
  // rather than stopped (the pool then runs over budget and reserves nothing until it is back under).
  void Update(uint64_t id, size_t bytes);
  void Release(uint64_t id);

  struct Usage {
    size_t capacity_bytes = 0;
    size_t charged_bytes = 0;  // pages charged, in bytes
    size_t used_bytes = 0;     // measured bytes of all sequences
    size_t sequences = 0;
    size_t page_bytes = 0;
    size_t pages() const { return page_bytes ? capacity_bytes / page_bytes : 0; }
    size_t pages_used() const { return page_bytes ? charged_bytes / page_bytes : 0; }
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

// Bytes one sequence of a policy holds between steps as a function of its length, measured once by
// appending pseudo-random rows to a probe sequence one token at a time, each followed by Update
// (full-rank data, so policies whose size depends on the data show their largest form). Update makes
// that state a function of the length alone, whatever the chunking, so the scheduler can reserve a
// step's pages before it runs. Compression by blocks and windows makes the curve a staircase, which
// is why every length is measured, not sampled.
class KvFootprint {
 public:
  // Measures every length up to `max_len`. Safe beside a running forward pass: it touches no model
  // state, and its kernels run on the calling thread while the pool's workers are busy.
  static KvFootprint Measure(const LlamaModel& model, const KvPolicyFactory& factory, int max_len);
  // Bytes at `len` tokens: measured up to max_len; beyond, the slope of the last 64 measured lengths.
  size_t BytesAt(int len) const;

 private:
  std::vector<size_t> bytes_;  // bytes_[i]: bytes held at length i + 1
};

}  // namespace atp
