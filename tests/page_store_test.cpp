// PageStore and PagedRows against a plain vector of rows (the reference): every sequence of appends,
// drops from the front, truncations and retains leaves the same rows in the same order, the runs that
// ForEachRun hands out cover exactly the asked range, and the store's count of leased bytes is what
// the live PagedRows hold.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kv/dense_policy.h"
#include "kv/exact_rows.h"
#include "kv/page_store.h"
#include "kv/kv_policy.h"

namespace atp {
namespace {

constexpr int64_t P = PagedRows::kRowsPerPage;

// Rows as 8-byte records holding their own id, so any misplaced row shows.
void Put(PagedRows& r, int64_t i, uint64_t id) { std::memcpy(r.Row(i), &id, 8); }
uint64_t Get(const PagedRows& r, int64_t i) {
  uint64_t id;
  std::memcpy(&id, r.Row(i), 8);
  return id;
}

void ExpectSame(const PagedRows& r, const std::vector<uint64_t>& ref, const PageStore& store) {
  ASSERT_EQ(r.size(), int64_t(ref.size()));
  for (int64_t i = 0; i < r.size(); ++i) ASSERT_EQ(Get(r, i), ref[size_t(i)]) << "row " << i;
  EXPECT_EQ(store.leased_bytes(), r.LeasedBytes());
  // Pages held: those the rows' slots touch, no more (at most one partial page at each end).
  EXPECT_LE(r.LeasedBytes(), size_t((r.size() + 2 * P - 2) / P) * size_t(P) * 8);
  // Runs cover every range in order, each within one page.
  for (int64_t b : {int64_t(0), r.size() / 3}) {
    int64_t next = b;
    r.ForEachRun(b, r.size() - b, [&](int64_t first, int64_t n, const uint8_t* data) {
      ASSERT_EQ(first, next);
      ASSERT_GT(n, 0);
      ASSERT_LE(n, P);
      for (int64_t j = 0; j < n; ++j) ASSERT_EQ(data + j * 8, r.Row(first + j));
      next += n;
    });
    EXPECT_EQ(next, r.size());
  }
}

TEST(PagedRows, RandomEditsMatchAVectorOfRows) {  // appends, drops, truncations, retains
  PageStore store;
  std::mt19937 rng(7);
  PagedRows r(store, 8);
  std::vector<uint64_t> ref;
  uint64_t next_id = 1, dropped = 0;
  for (int step = 0; step < 400; ++step) {
    const int op = int(rng() % 10);
    if (op < 5) {  // append 0..150 rows
      const int64_t n = int64_t(rng() % 151), first = r.size();
      r.Grow(n);
      for (int64_t i = 0; i < n; ++i) Put(r, first + i, next_id), ref.push_back(next_id++);
    } else if (op < 8) {  // drop 0..size rows from the front
      const int64_t n = ref.empty() ? 0 : int64_t(rng() % (ref.size() + 1));
      r.DropFront(n);
      ref.erase(ref.begin(), ref.begin() + n);
      dropped += uint64_t(n);
    } else if (op < 9) {  // truncate
      const int64_t n = ref.empty() ? 0 : int64_t(rng() % (ref.size() + 1));
      r.Truncate(n);
      ref.resize(size_t(n));
    } else {  // retain a random subset, in order
      std::vector<char> keep(ref.size());
      std::vector<uint64_t> kept;
      for (size_t i = 0; i < ref.size(); ++i)
        if ((keep[i] = char(rng() % 3 != 0))) kept.push_back(ref[i]);
      r.Retain(keep.data());
      ref = kept;
    }
    ExpectSame(r, ref, store);
    if (HasFatalFailure()) return;
  }
  EXPECT_GT(dropped, 0u);
  r.Clear();
  EXPECT_EQ(store.leased_bytes(), 0u);
  EXPECT_GT(store.peak_bytes(), 0u);
}

// Where a run breaks depends on the rows ever appended, not on when rows were dropped: the same rows
// dropped in one go or one by one (or all, then more appended) give the same runs.
TEST(PagedRows, RunsDependOnPositionsAlone) {
  PageStore store;
  auto runs = [&](const std::vector<int64_t>& drops) {
    PagedRows r(store, 4);
    r.Grow(100);
    for (int64_t d : drops) r.DropFront(d);
    r.Grow(50);
    std::vector<int64_t> out;
    r.ForEachRun(0, r.size(), [&](int64_t first, int64_t n, const uint8_t*) { out.push_back(first), out.push_back(n); });
    return out;
  };
  const auto once = runs({100});
  EXPECT_EQ(once, runs({30, 70}));
  EXPECT_EQ(once, runs({1, 1, 98}));
  // 100 dropped, 50 appended: rows 100..149 of all ever appended, slots 100 % P on.
  ASSERT_FALSE(once.empty());
  EXPECT_EQ(once[1], std::min<int64_t>(50, P - 100 % P));
}

TEST(PageStore, ReusesReturnedPagesAndCountsThem) {
  PageStore store;
  uint8_t* a = store.Lease(4096);
  uint8_t* b = store.Lease(512);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 64, 0u);
  EXPECT_EQ(store.leased_bytes(), 4608u);
  EXPECT_EQ(store.leased_pages(), 2u);
  store.Return(a, 4096);
  EXPECT_EQ(store.Lease(4096), a);  // a free page of that size comes back first
  EXPECT_NE(store.Lease(4096), a);
  store.Return(b, 512);
  EXPECT_EQ(store.leased_bytes(), 8192u);
  EXPECT_EQ(store.peak_bytes(), 8192u + 512u);
}

// A policy made with an engine's store leases its rows there and gives them all back when it dies;
// Bytes() (the rows' data) is what its pages hold, up to the partial page at the end. Dense rows hold
// both KV heads in one row; MX stores keep one store per head, packed.
TEST(PageStore, PolicyRowsLiveInTheStoreOfItsShape) {
  for (const char* spec : {"dense:dtype=bf16", "mx:fmt=fp8_e4m3", "streaming:budget=100+mx:fmt=fp4"}) {
    PageStore store;
    KvShape s;
    s.d_model = 64, s.n_heads = 4, s.n_kv_heads = 2, s.head_dim = 32;
    s.pages = &store;
    auto f = ParseKvPolicy(spec);
    ASSERT_TRUE(f.ok()) << f.status().message();
    {
      auto kv = (*f)->Create(s);
      const int T = 150;
      std::vector<float> X(size_t(T) * 64, 0.5f), K(size_t(T) * 64, 0.25f), V(size_t(T) * 64, -1.f);
      std::vector<int32_t> pos(T);
      for (int i = 0; i < T; ++i) pos[size_t(i)] = i;
      ASSERT_TRUE(kv->Append(pos, X.data(), K.data(), V.data()).ok()) << spec;
      ASSERT_TRUE(kv->Update().ok()) << spec;
      EXPECT_GT(kv->Bytes(), 0u) << spec;
      // Data within the pages: at most one partial page per store (K and V, per head for MX).
      EXPECT_GE(store.leased_bytes(), kv->Bytes()) << spec;
      EXPECT_LE(store.leased_bytes(), kv->Bytes() + 4 * size_t(P) * 64 * 2) << spec;
      if (std::string(spec) == "dense:dtype=bf16") {
        const size_t row = 64 * 2;  // one token's K (or V) row of both heads in bf16
        EXPECT_EQ(kv->Bytes(), size_t(T) * 2 * row);
        EXPECT_EQ(store.leased_bytes(), size_t((T + P - 1) / P) * size_t(P) * 2 * row);
      }
    }
    EXPECT_EQ(store.leased_bytes(), 0u) << spec;
  }
}

// Prefix sharing: pages handed out by FullPage and taken by Adopt are read by both holders, written by
// neither (Grow writes past them, Retain into a private copy), counted once, and free again only when
// the last holder returns them.
TEST(PagedRows, SharedPagesAreNeverWrittenAndFreedByTheLastHolder) {
  PageStore store;
  constexpr int64_t P = PagedRows::kRowsPerPage;
  const auto fill = [](PagedRows& r, int64_t from, int64_t n, uint8_t salt) {
    r.Grow(n);
    for (int64_t i = from; i < from + n; ++i) std::memset(r.Row(i), int(uint8_t(i * 7 + salt)), r.row_bytes());
  };
  const auto holds = [](const PagedRows& r, int64_t i, uint8_t salt) {
    return r.Row(i)[0] == uint8_t(i * 7 + salt) && r.Row(i)[r.row_bytes() - 1] == uint8_t(i * 7 + salt);
  };
  PagedRows a(store, 16);
  fill(a, 0, 2 * P + 5, 1);
  std::vector<BlockPages> blocks(2);
  for (int64_t b = 0; b < 2; ++b) blocks[size_t(b)].push_back(a.FullPage(b));
  const size_t leased = store.leased_bytes();
  {
    PagedRows b(store, 16);
    b.Adopt(blocks, 0);
    EXPECT_EQ(b.size(), 2 * P);
    EXPECT_EQ(store.leased_bytes(), leased) << "a shared page is counted once";
    fill(b, 2 * P, 9, 2);  // past the shared pages: a page of its own
    EXPECT_EQ(b.Row(0), a.Row(0));
    EXPECT_EQ(b.Row(P + 3), a.Row(P + 3));
    // a evicts rows: its compaction goes to private copies, b still reads what was adopted.
    std::vector<char> keep(size_t(a.size()), 1);
    keep[3] = keep[70] = 0;
    a.Retain(keep.data());
    EXPECT_NE(a.Row(0), b.Row(0));
    for (int64_t i = 0; i < 2 * P; ++i) ASSERT_TRUE(holds(b, i, 1)) << i;
    for (int64_t i = 2 * P; i < 2 * P + 9; ++i) ASSERT_TRUE(holds(b, i, 2)) << i;
    EXPECT_TRUE(holds(a, 2, 1));
    EXPECT_EQ(a.Row(3)[0], uint8_t(4 * 7 + 1)) << "a's row 3 is its old row 4";
    // A truncation into a shared page, then growth: the page is copied before it is written.
    PagedRows c(store, 16);
    c.Adopt(blocks, 0);
    std::vector<char> keep_c(size_t(c.size()), 1);
    keep_c[size_t(P + 10)] = 0;
    c.Retain(keep_c.data());
    fill(c, c.size(), 3, 5);
    for (int64_t i = 0; i < 2 * P; ++i) ASSERT_TRUE(holds(b, i, 1)) << i;
  }
  a.Clear();
  // a let go of the originals when it copied them, b and c when they died: every page is free.
  EXPECT_EQ(store.leased_bytes(), 0u);
  EXPECT_EQ(store.leased_pages(), 0u);
}

// A holder beyond the first (PageStore::Share) keeps a page leased until it returns it too.
TEST(PageStore, SharedPagesGoBackWithTheirLastHolder) {
  PageStore store;
  uint8_t* a = store.Lease(256);
  store.Share(a);
  store.Share(a);
  EXPECT_EQ(store.leased_bytes(), 256u);
  store.Return(a, 256);
  store.Return(a, 256);
  EXPECT_EQ(store.leased_pages(), 1u);
  EXPECT_NE(store.Lease(256), a) << "a page with a holder left was reused";
  store.Return(a, 256);
  EXPECT_EQ(store.leased_pages(), 1u);  // the second lease
  EXPECT_EQ(store.Lease(256), a);
}

}  // namespace
}  // namespace atp
