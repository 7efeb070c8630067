// The scheduler's KV budget (--kv-memory) over the engine's page store: what the store has leased now
// (every host policy's rows, the prefix cache's blocks, each page once however many hold it), plus what
// each running sequence has reserved beyond what it holds (the step about to run, a prompt admitted and
// not yet run), counted in pages of page_bytes. Before a step the scheduler reserves the most each
// sequence may hold during it: its policies' step bound (KvPolicy::StepLeaseBytes, which counts the rows
// an Append leases and its Update drops: an ATP block's exact rows while its principal rows form, a
// prompt chunk's rows before eviction) or its footprint after the step, whichever is more; it preempts
// a sequence when the pages are not there (engine/scheduler.h). So the store's leases stay within the
// budget within a step too, and the store is bounded by it (Capacity): a lease past it, which a correct
// bound never lets happen, fails the step's Append with ResourceExhausted rather than growing the store.
//
// Device policies (--device cuda) keep buffers of their own and lease no pages: a sequence of theirs is
// charged what its policies' Bytes() report, as before the store existed.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kv/kv_policy.h"
#include "kv/page_store.h"
#include "model/llama.h"

namespace atp {

// Each sequence is charged max(its reservation, what it holds) beyond the pages it holds in the store
// (those are the store's); the total is rounded up to whole pages.
// Thread-safety: every method may be called from any thread; the numbers are consistent while the
// store's leases do not change (between the scheduler's steps): while a step runs, the pages it has
// leased so far are charged both as leased and as reserved, until Update records them.
class KvPool {
 public:
  // `store` (where the sequences lease their pages) must outlive the pool.
  KvPool(size_t capacity_bytes, size_t page_bytes, const PageStore& store);

  size_t page_bytes() const { return page_bytes_; }
  size_t capacity_bytes() const { return capacity_pages_ * page_bytes_; }
  // The budget as the pool counts it: whole pages of page_bytes (at least 1) within capacity_bytes.
  static size_t Capacity(size_t capacity_bytes, size_t page_bytes) {
    page_bytes = std::max<size_t>(page_bytes, 1);
    return capacity_bytes / page_bytes * page_bytes;
  }
  // Whether a sequence needing `bytes` could be admitted into an empty pool.
  bool Fits(size_t bytes) const { return Pages(bytes) <= capacity_pages_; }

  // Raises sequence `id`'s reservation to `bytes` (a new id starts at none), provided that leaves at least
  // `keep_free` pages unreserved; false, and nothing changes, otherwise. A reservation never shrinks here (Settle lowers it).
  bool TryReserve(uint64_t id, size_t bytes, size_t keep_free = 0);
  // Lowers sequence `id`'s reservation to `bytes` where it is more (never raises it: that is TryReserve's,
  // within the budget): after a step, to what its next steps still need, so that a large step's
  // transient is charged only while it runs. Unknown ids are ignored.
  void Settle(uint64_t id, size_t bytes);
  // Records what the sequence holds: `bytes` its policies' Bytes(), `leased` the bytes of the store's
  // pages it holds; it holds the larger, as KvFootprint counts. A sequence that outgrows its reservation
  // is charged the excess rather than stopped (the pool then runs over budget and reserves nothing until
  // it is back under).
  void Update(uint64_t id, size_t bytes, size_t leased);
  void Release(uint64_t id);

  struct Usage {
    size_t capacity_bytes = 0;
    size_t charged_bytes = 0;  // pages charged (the store's leases and the reservations beyond them), in bytes
    size_t used_bytes = 0;     // held now: the store's leases and device policies' buffers
    size_t sequences = 0;
    size_t page_bytes = 0;
    size_t pages() const { return page_bytes ? capacity_bytes / page_bytes : 0; }
    size_t pages_used() const { return page_bytes ? charged_bytes / page_bytes : 0; }
  };
  Usage usage() const;

 private:
  struct Charge {
    size_t reserved = 0, held = 0, leased = 0;
    size_t beyond_store() const { return std::max(reserved, held) - std::min(leased, std::max(reserved, held)); }
    size_t unleased() const { return held - std::min(held, leased); }  // held outside the store (device buffers)
  };
  size_t Pages(size_t bytes) const { return (bytes + page_bytes_ - 1) / page_bytes_; }

  const size_t page_bytes_, capacity_pages_;
  const PageStore& store_;
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, Charge> seqs_;
  size_t beyond_ = 0;  // sum of beyond_store() over seqs_
  size_t unleased_ = 0;  // sum of unleased() over seqs_
};

// Bytes one sequence of a policy holds between steps as a function of its length: the pages its rows
// lease from a store (whole pages of rows, as the engine's store counts them), or what Bytes() reports
// where that is more (device policies lease none; a few host ones keep small per-row metadata beside
// their pages). Measured once by appending pseudo-random rows to a probe sequence one token at a time,
// each followed by Update (full-rank data, so policies whose size depends on the data show their
// largest form). Update makes that state a function of the length alone, whatever the chunking, so the
// scheduler can reserve a step's pages before it runs. Pages, blocks and windows make the curve a
// staircase, which is why every length is measured, not sampled.
class KvFootprint {
 public:
  // Measures every length up to `max_len`. Safe beside a running forward pass: it touches no model
  // state, and its kernels run on the calling thread while the pool's workers are busy.
  static KvFootprint Measure(const LlamaModel& model, const KvPolicyFactory& factory, int max_len);
  // Bytes at `len` tokens: measured up to max_len; beyond, the last 64 measured lengths repeated, each
  // repetition adding what they added (a staircase of 64-row pages, or of blocks that divide 64, goes
  // on exactly).
  size_t BytesAt(int len) const;
  // An upper bound on the bytes of pages a sequence leases at any point of its first step, of `tokens`
  // tokens (KvPolicy::StepLeaseBytes from empty): what admission must find free besides BytesAt.
  size_t FirstStepBytes(int tokens) const;

 private:
  std::vector<size_t> bytes_;  // bytes_[i]: bytes held at length i + 1
  // An empty policy per distinct layer shape, and the layers of that shape (they lease nothing).
  std::vector<std::pair<std::shared_ptr<const KvPolicy>, size_t>> empty_;
};

}  // namespace atp
