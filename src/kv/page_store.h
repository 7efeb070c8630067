// KV memory in pages (vLLM's block pool, on the host): every row a CPU policy keeps lives in a page
// leased from a PageStore, and goes back to it when the policy drops the row (a window slides, a
// block is compressed, eviction) or dies. The engine owns one store for all its sequences, so what
// the store has leased is the KV memory the server holds; commands without an engine (eval, bench,
// tests) use the process's store. Each sequence leases through an account of its own (a PageStore over
// the engine's), which tells what that sequence holds.
//
// The engine's store is bounded by its KV budget (engine/kv_pool.h: the scheduler reserves each step's
// bound, KvPolicy::StepLeaseBytes, so a refusal means a bound was wrong); a lease past the bound fails
// with ResourceExhausted, which PagedRows and the policies pass up out of Append. The process's store is
// unbounded.
//
// A page holds PagedRows::kRowsPerPage rows of one storage form (one width and dtype), or a fixed
// number of larger rows that each stand for several tokens (a KIVI token group, an ATP or lowrank
// block's state), so its size is fixed per layer and form; the store keeps a free list per page size and gives memory back to the system
// only when bounded and short of room, as a block pool reuses its blocks.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/status.h"

namespace atp {

// A leased page and its size, as PageStore::Return wants them.
struct PageRef {
  uint8_t* data = nullptr;
  size_t bytes = 0;
};

// Prefix caching: the pages holding one block of kRowsPerPage tokens in every PagedRows of a policy, in
// an order the policy defines (each of its stores takes a fixed index).
using BlockPages = std::vector<PageRef>;

// Thread-safety: every method may be called from any thread (sequences of one engine run their
// policies on the pool's workers).
class PageStore {
 public:
  // capacity_bytes: the most memory the store may hold from the system, its pages leased and free
  // (each page counted at its allocation, `bytes` rounded up to 64); 0: unbounded.
  explicit PageStore(size_t capacity_bytes = 0) : capacity_(capacity_bytes) {}
  // An account: a store that leases and returns through `parent` (its pages, bound and free lists are
  // the parent's) and counts what it holds, so that a sequence's share of the engine's store is known.
  // The parent must outlive it; it holds nothing from the system itself.
  explicit PageStore(PageStore& parent) : capacity_(0), parent_(&parent) {}
  PageStore(const PageStore&) = delete;
  PageStore& operator=(const PageStore&) = delete;

  // A page of `bytes` bytes, 64-byte aligned, contents undefined: a free page of that size, else a new
  // one. A bounded store first gives free pages of other sizes back to the system to make room for a
  // new one; where the pages leased leave no room, it fails with ResourceExhausted and allocates nothing.
  Result<uint8_t*> TryLease(size_t bytes);
  // Gives back a page that TryLease(bytes) returned, or one reference to it after Share: the page is free
  // again when its last holder returns it.
  void Return(uint8_t* page, size_t bytes);
  // One more holder of a leased page of `bytes` bytes (prefix caching: a cached block and every
  // sequence that adopted it hold its pages); each holder returns it once. The store counts its bytes
  // once; an account counts every page it holds, shared or not.
  void Share(uint8_t* page, size_t bytes);

  // Bytes of the pages leased now, and the most ever leased at once (an account: those it holds).
  size_t leased_bytes() const;
  size_t peak_bytes() const;
  size_t leased_pages() const;
  // Starts peak_bytes() again from what is leased now (to measure one step's peak).
  void ResetPeak();
  // Bytes the store holds from the system (pages leased and free, as allocated; an account: none), and
  // its bound (0: none).
  size_t held_bytes() const;
  size_t capacity_bytes() const { return capacity_; }

  // The store of policies made without one (KvShape::pages null).
  static PageStore& Process();

 private:
  struct Free {
    void operator()(uint8_t* p) const;
  };
  // Gives free pages back to the system until `need` more bytes fit the capacity; whether they do.
  bool MakeRoom(size_t need);
  void Count(size_t bytes, int pages);  // one page of `bytes` more (1) or less (-1) leased; mu_ held

  const size_t capacity_;
  PageStore* const parent_ = nullptr;  // an account's store; null for a store of its own
  mutable std::mutex mu_;
  std::map<size_t, std::vector<uint8_t*>> free_;  // by page size
  std::vector<std::unique_ptr<uint8_t, Free>> owned_;
  std::unordered_map<uint8_t*, uint32_t> shares_;  // holders beyond the first, of shared pages only
  size_t leased_bytes_ = 0, peak_bytes_ = 0, leased_pages_ = 0, held_bytes_ = 0;
};

// A sequence of fixed-size rows (one storage form) in pages of rows_per_page rows (kRowsPerPage by
// default) leased from a store: row i sits at slot (head + i) % rows_per_page of page
// (head + i) / rows_per_page, where head counts the slots of the first page already dropped. Rows
// never straddle pages, so a run of rows within a page is contiguous; readers walk runs (ForEachRun),
// as attention walks segments.
// Thread-safety: const methods may run concurrently; the rest is exclusive.
class PagedRows {
 public:
  // Tokens per page: vLLM's GPU blocks hold 16, TensorRT-LLM's 64. The CPU kernels score and sum a run
  // of contiguous rows per call (32 at a time), so runs of 64 keep their per-call cost small, and a
  // page of a whole layer's rows (dense bf16 on llama-3.2-1b: 64 x 2 KiB) is still small next to a
  // sequence.
  static constexpr int64_t kRowsPerPage = 64;

  // rows_per_page >= 1: a row of one token takes the default (or fewer where the rows never outnumber
  // a known count: ATP's filling block); a row that stands for G tokens takes RowsPerPageFor(G), so
  // that a page still holds about kRowsPerPage tokens.
  PagedRows(PageStore& store, size_t row_bytes, int64_t rows_per_page = kRowsPerPage)
      : store_(&store), row_bytes_(row_bytes), rows_per_page_(rows_per_page) {}
  // Rows per page for rows of `tokens` tokens each: kRowsPerPage / tokens, at least 1.
  static int64_t RowsPerPageFor(int64_t tokens) { return std::max<int64_t>(1, kRowsPerPage / std::max<int64_t>(1, tokens)); }
  ~PagedRows() { Clear(); }
  PagedRows(PagedRows&& o) noexcept;
  PagedRows& operator=(PagedRows&& o) noexcept;
  PagedRows(const PagedRows&) = delete;
  PagedRows& operator=(const PagedRows&) = delete;

  int64_t size() const { return n_; }
  size_t row_bytes() const { return row_bytes_; }
  int64_t rows_per_page() const { return rows_per_page_; }
  // Appends n rows of undefined contents (the caller writes them through Row). Where the store refuses
  // a page (a bounded store that is full: ResourceExhausted), nothing changes.
  [[nodiscard]] Status Grow(int64_t n);
  // Bytes of the pages Grow(n) would lease now (whole pages, as the store counts them): none while the
  // last page has room, one more where it is shared (Grow writes into a private copy). Growing by n rows
  // in several calls, with rows dropped in between or not, never holds more pages than this beyond what
  // is held now: row slots keep their alignment to the rows ever appended (DropFront) or stay where
  // they are (Truncate, Retain), so a page boundary is never crossed sooner.
  size_t GrowBytes(int64_t n) const {
    if (n <= 0) return 0;
    const size_t need = size_t((head_ + n_ + n + rows_per_page_ - 1) / rows_per_page_);
    const size_t last = size_t((head_ + n_) / rows_per_page_);
    const bool copy = (head_ + n_) % rows_per_page_ != 0 && last < shared_;
    return (need - pages_.size() + (copy ? 1 : 0)) * page_bytes();
  }
  uint8_t* Row(int64_t i) { return const_cast<uint8_t*>(std::as_const(*this).Row(i)); }
  const uint8_t* Row(int64_t i) const {
    const int64_t s = head_ + i;
    return pages_[size_t(s / rows_per_page_)] + size_t(s % rows_per_page_) * row_bytes_;
  }
  // Drops the first n rows, or all but the first n, returning pages left empty.
  void DropFront(int64_t n);
  void Truncate(int64_t n);
  // Keeps row i iff keep[i] != 0, for keep[0 .. size()), in order (eviction), returning pages left empty.
  // Shared pages are copied first; where the store refuses a copy, the rows are left as they were.
  [[nodiscard]] Status Retain(const char* keep);
  void Clear();
  // fn(first, count, data) for the maximal runs of rows [begin, begin + count) contiguous in memory,
  // in order: data holds rows first .. first + count - 1.
  template <typename Fn>
  void ForEachRun(int64_t begin, int64_t count, Fn&& fn) const {
    while (count > 0) {
      const int64_t in_page = std::min(count, rows_per_page_ - (head_ + begin) % rows_per_page_);
      fn(begin, in_page, Row(begin));
      begin += in_page, count -= in_page;
    }
  }
  // Bytes of the pages this holds (what the store has leased for it).
  size_t LeasedBytes() const { return pages_.size() * page_bytes(); }

  // Prefix sharing (engine/prefix_cache.h). Page b holds rows [b, b + 1) * kRowsPerPage when no row was
  // ever dropped; it is handed out only when full, and from then on this never writes it in place
  // (Grow writes past it; Retain writes into private copies), so sharers may read it for ever.
  // Requires pages of kRowsPerPage rows, no dropped rows and (b + 1) * kRowsPerPage <= size().
  PageRef FullPage(int64_t b);
  // On an empty PagedRows of the same row size: blocks[i][at] as rows [i, i + 1) * kRowsPerPage, each
  // shared (PageStore::Share), as FullPage handed them out.
  void Adopt(std::span<const BlockPages> blocks, size_t at);

 private:
  // A page as the store allocates it (rounded up to 64 bytes), so that what the store counts as leased is
  // the memory the pages take and a bound on it holds for both.
  size_t page_bytes() const { return (size_t(rows_per_page_) * row_bytes_ + 63) / 64 * 64; }
  Status MakePrivate(size_t page);  // page i, if shared, becomes a copy only this holds
  PageStore* store_;
  size_t row_bytes_;
  int64_t rows_per_page_;
  std::vector<uint8_t*> pages_;
  int64_t head_ = 0, n_ = 0;
  // Pages [0, shared_) may have other holders: those handed out by FullPage or taken by Adopt.
  size_t shared_ = 0;
};

// Grows a key and a value PagedRows by n rows together (a row store's two halves stay in step): where
// the store refuses either, neither grows.
[[nodiscard]] Status GrowPair(PagedRows& k, PagedRows& v, int64_t n);

}  // namespace atp
