#include "kv/page_store.h"

#include <algorithm>
#include <cassert>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <new>
#include <string>
#include <unordered_set>
#include <utility>

namespace atp {

void PageStore::Free::operator()(uint8_t* p) const { std::free(p); }

namespace {
size_t Allocated(size_t bytes) { return (bytes + 63) / 64 * 64; }
}  // namespace

Result<uint8_t*> PageStore::TryLease(size_t bytes) {
  if (parent_) {
    Result<uint8_t*> page = parent_->TryLease(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    if (page.ok()) Count(bytes, 1);
    return page;
  }
  std::lock_guard<std::mutex> lock(mu_);
  uint8_t* page = nullptr;
  auto it = free_.find(bytes);
  if (it != free_.end() && !it->second.empty()) {
    page = it->second.back();
    it->second.pop_back();
  } else {
    if (!MakeRoom(Allocated(bytes)))
      return Status::ResourceExhausted("page store: no room for a page of " + std::to_string(bytes) + " bytes: " +
                                       std::to_string(leased_pages_) + " pages leased (" + std::to_string(leased_bytes_) +
                                       " bytes), " + std::to_string(capacity_ - std::min(capacity_, leased_bytes_)) +
                                       " of its capacity of " + std::to_string(capacity_) + " bytes free");
    page = static_cast<uint8_t*>(std::aligned_alloc(64, Allocated(bytes)));
    if (!page) throw std::bad_alloc();
    owned_.emplace_back(page);
    held_bytes_ += Allocated(bytes);
  }
  Count(bytes, 1);
  return page;
}

void PageStore::Count(size_t bytes, int pages) {
  if (pages > 0) {
    leased_bytes_ += bytes, ++leased_pages_;
    peak_bytes_ = std::max(peak_bytes_, leased_bytes_);
  } else {
    leased_bytes_ -= bytes, --leased_pages_;
  }
}

bool PageStore::MakeRoom(size_t need) {
  if (capacity_ == 0 || held_bytes_ + need <= capacity_) return true;
  size_t free_bytes = 0;
  for (const auto& [size, pages] : free_) free_bytes += Allocated(size) * pages.size();
  if (held_bytes_ - free_bytes + need > capacity_) return false;  // the leased pages alone leave no room
  std::unordered_set<uint8_t*> gone;
  for (auto it = free_.begin(); it != free_.end() && held_bytes_ + need > capacity_;) {
    while (!it->second.empty() && held_bytes_ + need > capacity_) {
      gone.insert(it->second.back());
      it->second.pop_back();
      held_bytes_ -= Allocated(it->first);
    }
    it = it->second.empty() ? free_.erase(it) : std::next(it);
  }
  std::erase_if(owned_, [&](const auto& p) { return gone.count(p.get()) > 0; });
  return true;
}

void PageStore::Return(uint8_t* page, size_t bytes) {
  if (parent_) {
    parent_->Return(page, bytes);
    std::lock_guard<std::mutex> lock(mu_);
    Count(bytes, -1);
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = shares_.find(page); it != shares_.end()) {
    if (--it->second == 0) shares_.erase(it);
    return;
  }
  free_[bytes].push_back(page);
  Count(bytes, -1);
}

void PageStore::Share(uint8_t* page, size_t bytes) {
  if (parent_) {
    parent_->Share(page, bytes);
    std::lock_guard<std::mutex> lock(mu_);
    Count(bytes, 1);
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  ++shares_[page];
}

size_t PageStore::leased_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return leased_bytes_;
}

size_t PageStore::peak_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return peak_bytes_;
}

void PageStore::ResetPeak() {
  std::lock_guard<std::mutex> lock(mu_);
  peak_bytes_ = leased_bytes_;
}

size_t PageStore::held_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return held_bytes_;
}

size_t PageStore::leased_pages() const {
  std::lock_guard<std::mutex> lock(mu_);
  return leased_pages_;
}

PageStore& PageStore::Process() {
  static PageStore* store = new PageStore();  // never destroyed: policies may outlive static destruction
  return *store;
}

PagedRows::PagedRows(PagedRows&& o) noexcept
    : store_(o.store_), row_bytes_(o.row_bytes_), rows_per_page_(o.rows_per_page_), pages_(std::move(o.pages_)),
      head_(o.head_), n_(o.n_), shared_(o.shared_) {
  o.pages_.clear();
  o.head_ = o.n_ = 0;
  o.shared_ = 0;
}

PagedRows& PagedRows::operator=(PagedRows&& o) noexcept {
  if (this != &o) {
    Clear();
    store_ = o.store_, row_bytes_ = o.row_bytes_, rows_per_page_ = o.rows_per_page_, pages_ = std::move(o.pages_), head_ = o.head_, n_ = o.n_;
    shared_ = o.shared_;
    o.pages_.clear();
    o.head_ = o.n_ = 0;
    o.shared_ = 0;
  }
  return *this;
}

Status PagedRows::Grow(int64_t n) {
  if (n <= 0) return Status::Ok();
  // The last page is written from its first empty slot on: a shared one is only ever full (FullPage),
  // unless Truncate cut into it.
  if (const size_t last = size_t((head_ + n_) / rows_per_page_); (head_ + n_) % rows_per_page_ != 0) {
    ATP_RETURN_IF_ERROR(MakePrivate(last));
    shared_ = std::min(shared_, last);
  }
  const size_t had = pages_.size(), need = size_t((head_ + n_ + n + rows_per_page_ - 1) / rows_per_page_);
  while (pages_.size() < need) {
    Result<uint8_t*> page = store_->TryLease(page_bytes());
    if (!page.ok()) {  // all or nothing: the pages of this call go back
      for (size_t i = had; i < pages_.size(); ++i) store_->Return(pages_[i], page_bytes());
      pages_.resize(had);
      return Status::ResourceExhausted(page.status().message() + "; " + std::to_string(need - had) + " pages of " +
                                       std::to_string(page_bytes()) + " bytes needed for " + std::to_string(n) + " rows");
    }
    pages_.push_back(*page);
  }
  n_ += n;
  return Status::Ok();
}

void PagedRows::DropFront(int64_t n) {
  // Row slots keep their alignment to the rows ever appended (slot = (rows dropped + i) mod
  // rows_per_page_), also when the rows run out: where runs break then depends on positions alone, not
  // on when a policy dropped what, so attention sums in the same order however a prompt was chunked.
  const int64_t before = (head_ + n) / rows_per_page_;
  n_ -= n;
  head_ = (head_ + n) % rows_per_page_;
  const size_t empty = n_ == 0 ? pages_.size() : size_t(before);
  for (size_t i = 0; i < empty; ++i) store_->Return(pages_[i], page_bytes());
  pages_.erase(pages_.begin(), pages_.begin() + std::ptrdiff_t(empty));
  shared_ -= std::min(shared_, empty);
}

void PagedRows::Truncate(int64_t n) {
  n_ = n;
  const size_t need = n_ == 0 ? 0 : size_t((head_ + n_ + rows_per_page_ - 1) / rows_per_page_);
  while (pages_.size() > need) {
    store_->Return(pages_.back(), page_bytes());
    pages_.pop_back();
  }
  shared_ = std::min(shared_, pages_.size());
}

Status PagedRows::Retain(const char* keep) {
  for (; shared_ > 0; --shared_) ATP_RETURN_IF_ERROR(MakePrivate(shared_ - 1));
  // Each run of kept rows moves down as a few memmoves, split where a page ends on either side (rows
  // move to lower indexes in order, so a row is overwritten only once it has moved).
  int64_t w = 0;
  for (int64_t i = 0; i < n_;) {
    if (!keep[i]) {
      ++i;
      continue;
    }
    int64_t end = i;
    while (end < n_ && keep[end]) ++end;
    if (w == i) {
      w = i = end;
      continue;
    }
    while (i < end) {
      const int64_t src_left = rows_per_page_ - (head_ + i) % rows_per_page_;
      const int64_t dst_left = rows_per_page_ - (head_ + w) % rows_per_page_;
      const int64_t n = std::min({end - i, src_left, dst_left});
      std::memmove(Row(w), Row(i), size_t(n) * row_bytes_);
      i += n, w += n;
    }
  }
  Truncate(w);
  return Status::Ok();
}

void PagedRows::Clear() {
  for (uint8_t* p : pages_) store_->Return(p, page_bytes());
  pages_.clear();
  head_ = n_ = 0;
  shared_ = 0;
}

PageRef PagedRows::FullPage(int64_t b) {
  assert(head_ == 0 && rows_per_page_ == kRowsPerPage && (b + 1) * kRowsPerPage <= n_);
  shared_ = std::max(shared_, size_t(b) + 1);
  return {pages_[size_t(b)], page_bytes()};
}

void PagedRows::Adopt(std::span<const BlockPages> blocks, size_t at) {
  assert(n_ == 0 && pages_.empty());
  for (const BlockPages& block : blocks) {
    const PageRef& p = block[at];
    assert(p.bytes == page_bytes());
    store_->Share(p.data, p.bytes);
    pages_.push_back(p.data);
  }
  assert(rows_per_page_ == kRowsPerPage);
  n_ = int64_t(blocks.size()) * kRowsPerPage;
  shared_ = pages_.size();
}

Status PagedRows::MakePrivate(size_t page) {
  if (page >= shared_) return Status::Ok();
  ATP_ASSIGN_OR_RETURN(uint8_t* copy, store_->TryLease(page_bytes()));
  std::memcpy(copy, pages_[page], page_bytes());
  store_->Return(pages_[page], page_bytes());
  pages_[page] = copy;
  return Status::Ok();
}

Status GrowPair(PagedRows& k, PagedRows& v, int64_t n) {
  const int64_t had = k.size();
  ATP_RETURN_IF_ERROR(k.Grow(n));
  if (Status st = v.Grow(n); !st.ok()) {
    k.Truncate(had);
    return st;
  }
  return Status::Ok();
}

}  // namespace atp
