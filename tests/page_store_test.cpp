// PageStore and PagedRows against a plain vector of rows (the reference): every sequence of appends,
// drops from the front, truncations and retains leaves the same rows in the same order, the runs that
// ForEachRun hands out cover exactly the asked range, and the store's count of leased bytes is what
// the live PagedRows hold.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "format/basis_file.h"
#include "kv/dense_policy.h"
#include "kv/exact_rows.h"
#include "kv/page_store.h"
#include "kv/kv_policy.h"
#include "test_util.h"

namespace atp {
namespace {

using testing::TempDir;

constexpr int64_t P = PagedRows::kRowsPerPage;

// Rows as 8-byte records holding their own id, so any misplaced row shows.
void Put(PagedRows& r, int64_t i, uint64_t id) { std::memcpy(r.Row(i), &id, 8); }
uint64_t Get(const PagedRows& r, int64_t i) {
  uint64_t id;
  std::memcpy(&id, r.Row(i), 8);
  return id;
}

void ExpectSame(const PagedRows& r, const std::vector<uint64_t>& ref, const PageStore& store) {
  const int64_t P = r.rows_per_page();
  ASSERT_EQ(r.size(), int64_t(ref.size()));
  for (int64_t i = 0; i < r.size(); ++i) ASSERT_EQ(Get(r, i), ref[size_t(i)]) << "row " << i;
  EXPECT_EQ(store.leased_bytes(), r.LeasedBytes());
  // Pages held: those the rows' slots touch, no more (at most one partial page at each end), each as
  // allocated (rounded up to 64 bytes).
  EXPECT_LE(r.LeasedBytes(), size_t((r.size() + 2 * P - 2) / P) * ((size_t(P) * 8 + 63) / 64 * 64));
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

// Appends, drops, truncations, retains; in pages of the default 64 rows, and of 1 and 3 rows (rows
// that each hold a group of tokens).
class PagedRowsEdits : public ::testing::TestWithParam<int64_t> {};

TEST_P(PagedRowsEdits, RandomEditsMatchAVectorOfRows) {
  PageStore store;
  std::mt19937 rng(7);
  PagedRows r(store, 8, GetParam());
  ASSERT_EQ(r.rows_per_page(), GetParam());
  std::vector<uint64_t> ref;
  uint64_t next_id = 1, dropped = 0;
  for (int step = 0; step < 400; ++step) {
    const int op = int(rng() % 10);
    if (op < 5) {  // append 0..150 rows
      const int64_t n = int64_t(rng() % 151), first = r.size();
      ASSERT_TRUE(r.Grow(n).ok());
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
      ASSERT_TRUE(r.Retain(keep.data()).ok());
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

INSTANTIATE_TEST_SUITE_P(PagedRows, PagedRowsEdits, ::testing::Values(P, int64_t(1), int64_t(3)));

TEST(PagedRows, RowsPerPageForGroupsOfTokens) {
  EXPECT_EQ(PagedRows::RowsPerPageFor(1), P);
  EXPECT_EQ(PagedRows::RowsPerPageFor(32), P / 32);
  EXPECT_EQ(PagedRows::RowsPerPageFor(24), P / 24);  // rounds down: a page holds at most about P tokens
  EXPECT_EQ(PagedRows::RowsPerPageFor(P), 1);
  EXPECT_EQ(PagedRows::RowsPerPageFor(4 * P), 1);  // a group larger than a page still gets a page of its own
}

// Where a run breaks depends on the rows ever appended, not on when rows were dropped: the same rows
// dropped in one go or one by one (or all, then more appended) give the same runs.
TEST(PagedRows, RunsDependOnPositionsAlone) {
  PageStore store;
  auto runs = [&](const std::vector<int64_t>& drops) {
    PagedRows r(store, 4);
    EXPECT_TRUE(r.Grow(100).ok());
    for (int64_t d : drops) r.DropFront(d);
    EXPECT_TRUE(r.Grow(50).ok());
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
  uint8_t* a = store.TryLease(4096).value();
  uint8_t* b = store.TryLease(512).value();
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 64, 0u);
  EXPECT_EQ(store.leased_bytes(), 4608u);
  EXPECT_EQ(store.leased_pages(), 2u);
  store.Return(a, 4096);
  EXPECT_EQ(store.TryLease(4096).value(), a);  // a free page of that size comes back first
  EXPECT_NE(store.TryLease(4096).value(), a);
  store.Return(b, 512);
  EXPECT_EQ(store.leased_bytes(), 8192u);
  EXPECT_EQ(store.peak_bytes(), 8192u + 512u);
}

// A bounded store never holds more than its capacity from the system: a page that does not fit is
// refused with ResourceExhausted and nothing allocated; a free page of the size asked is reused, and
// free pages of other sizes go back to the system to make room.
TEST(PageStore, BoundedStoreRefusesWhatDoesNotFit) {
  PageStore store(3 * 4096);
  EXPECT_EQ(store.capacity_bytes(), 3u * 4096);
  std::vector<uint8_t*> pages;
  for (int i = 0; i < 3; ++i) {
    auto p = store.TryLease(4096);
    ASSERT_TRUE(p.ok()) << p.status().message();
    pages.push_back(*p);
  }
  auto over = store.TryLease(4096);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.status().code(), Status::Code::kResourceExhausted);
  EXPECT_NE(over.status().message().find("capacity of 12288 bytes"), std::string::npos) << over.status().message();
  EXPECT_EQ(store.leased_bytes(), 3u * 4096);
  EXPECT_EQ(store.held_bytes(), 3u * 4096);
  store.Return(pages[0], 4096);
  auto again = store.TryLease(4096);  // the free page, nothing new
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, pages[0]);
  // Two pages free of 4096: an 8192-byte page fits once they go back to the system; a second does not,
  // and a refused lease leaves the free pages where they were.
  store.Return(pages[1], 4096);
  store.Return(pages[2], 4096);
  auto big = store.TryLease(8192);
  ASSERT_TRUE(big.ok()) << big.status().message();
  EXPECT_EQ(store.held_bytes(), 3u * 4096);
  EXPECT_FALSE(store.TryLease(8192).ok());
  store.Return(*again, 4096);
  EXPECT_FALSE(store.TryLease(8192).ok());
  EXPECT_EQ(store.held_bytes(), 3u * 4096);
  EXPECT_TRUE(store.TryLease(4096).ok());  // the one free 4096-byte page is still there
  // Sizes are counted as allocated, rounded up to 64 bytes: 65 bytes take 128.
  PageStore small(128);
  EXPECT_TRUE(small.TryLease(65).ok());
  EXPECT_FALSE(small.TryLease(1).ok());
  // Unbounded (the default): no refusal.
  PageStore unbounded;
  EXPECT_EQ(unbounded.capacity_bytes(), 0u);
  for (int i = 0; i < 8; ++i) EXPECT_TRUE(unbounded.TryLease(1 << 20).ok());
  EXPECT_EQ(unbounded.held_bytes(), 8u << 20);
}

// A calibrated-lowrank basis for layers of 2 KV heads of head_dim 32 (its values need not be orthonormal:
// the store tests count pages, not attention).
KvBasis SmallBasis() {
  KvBasis basis;
  basis.layers = 1, basis.kv_heads = 2, basis.head_dim = 32;
  basis.k.assign(1, std::vector<float>(2 * 32 * 32)), basis.v = basis.k;
  for (size_t i = 0; i < basis.k[0].size(); ++i) basis.k[0][i] = float(i % 7) - 3, basis.v[0][i] = float(i % 5) - 2;
  return basis;
}

// A policy made with an engine's store leases its rows there and gives them all back when it dies;
// Bytes() lies within its pages, and what they hold beyond it does not grow with the length. Dense
// rows hold both KV heads in one row; MX stores keep one store per head, packed; KIVI a page row per
// token group beside its exact rows; ATP its window, principal and kept rows, each block's U_r and
// offsets (residual=, rope=pre with keep=), the residual codec's rows and the filling block's layer
// input; lowrank its coefficient rows (the calibrated one here through a KIVI codec) and, online,
// each block's bases.
TEST(PageStore, PolicyRowsLiveInTheStoreOfItsShape) {
  TempDir dir("pages");
  const std::string basis_file = dir / "b.safetensors";
  ASSERT_TRUE(WriteKvBasis(basis_file, SmallBasis()).ok());
  const int64_t T = 1200;
  const std::vector<std::string> specs = {
      "dense:dtype=bf16",
      "mx:fmt=fp8_e4m3",
      "streaming:budget=100+mx:fmt=fp4",
      "kivi:bits=2,group=32,residual=16",
      "kivi:bits=4,group=8,residual=8,dtype=bf16",
      "snapkv:budget=100+kivi:bits=2,group=16,residual=16",
      "atp:block=32,rank=4,window=64,basis=key,residual=kivi2,dtype=bf16,rope=pre",
      "atp:block=16,rank=3,window=32,proj=lowrank,keep=2,residual=kivi4",
      "atp:block=16,rank=4,window=16,basis=key,keep=3,residual=mx_fp4,rope=pre",
      "atp:block=16,rank=4,window=32",
      "lowrank:rk=8,rv=16,mode=online,block=16",
      "lowrank:rk=8,rv=8,file=" + basis_file + "+kivi:bits=2,group=8,residual=16",
  };
  for (const std::string& spec : specs) {
    PageStore store;
    KvShape s;
    s.d_model = 64, s.n_heads = 4, s.n_kv_heads = 2, s.head_dim = 32;
    for (int i = 0; i < 16; ++i) s.rope_inv_freq.push_back(std::pow(10000.f, -float(i) / 16));
    s.pages = &store;
    auto f = ParseKvPolicy(spec);
    ASSERT_TRUE(f.ok()) << f.status().message();
    {
      auto kv = (*f)->Create(s);
      std::mt19937 rng(5);
      std::normal_distribution<float> normal;
      for (int64_t t = 0; t < T; t += T / 8) {  // eight steps, as a prompt in chunks and then more
        const int n = int(T / 8);
        std::vector<float> X(size_t(n) * 64), K(size_t(n) * 64), V(size_t(n) * 64);
        for (auto* v : {&X, &K, &V})
          for (float& x : *v) x = normal(rng);
        std::vector<int32_t> pos(static_cast<size_t>(n));
        for (int i = 0; i < n; ++i) pos[size_t(i)] = int32_t(t + i);
        ASSERT_TRUE(kv->Append(pos, X.data(), K.data(), V.data()).ok()) << spec;
        ASSERT_TRUE(kv->Update().ok()) << spec;
        EXPECT_GT(kv->Bytes(), 0u) << spec;
        // The data lies within the pages, and the pages beyond it do not grow with the length: at most a
        // partial page at each end of each paged form, here less than ten of the largest page (16 KiB: 64
        // f32 rows of both heads; ATP has a dozen forms, most with smaller pages).
        EXPECT_GE(store.leased_bytes(), kv->Bytes()) << spec << " at " << t + n;
        EXPECT_LE(store.leased_bytes(), kv->Bytes() + 10 * 16384) << spec << " at " << t + n;
      }
      if (spec == "dense:dtype=bf16") {
        const size_t row = 64 * 2;  // one token's K (or V) row of both heads in bf16
        EXPECT_EQ(kv->Bytes(), size_t(T) * 2 * row);
        EXPECT_EQ(store.leased_bytes(), size_t((T + P - 1) / P) * size_t(P) * 2 * row);
      }
    }
    EXPECT_EQ(store.leased_bytes(), 0u) << spec;
  }
}

// A policy's step bound (KvPolicy::StepLeaseBytes): what it holds before a step plus the bound is at
// least the most its store leases at any point of the step (Append, Attend, Update), for every family,
// at lengths before, at and past page, block and window edges, for a one-token decode, prompt chunks
// and a whole prompt. Families whose forms do not depend on the data lease exactly the bound; ATP's
// ranks and the layer input it clears when a block completes leave it above (tau= here well above:
// random rows need fewer directions than the most a block may have).
TEST(PageStore, StepLeaseBytesBoundEveryStepsPeak) {
  TempDir dir("steps");
  const std::string basis_file = dir / "b.safetensors";
  ASSERT_TRUE(WriteKvBasis(basis_file, SmallBasis()).ok());
  struct Case {
    std::string spec;
    bool exact;  // the bound is what the step leases at its peak
  };
  const std::vector<Case> cases = {
      {"dense", true},
      {"dense:dtype=bf16", true},
      {"mx:fmt=fp8_e4m3", true},
      {"kivi:bits=2,group=32,residual=16", true},
      {"kivi:bits=4,group=8,residual=8,dtype=bf16", true},
      {"streaming:budget=100", true},
      {"streaming:budget=100+mx:fmt=fp4", true},
      {"h2o:budget=40,recent=10", true},
      {"snapkv:budget=100+kivi:bits=2,group=16,residual=16", true},
      {"lowrank:rk=8,rv=16,mode=online,block=16", true},
      {"lowrank:rk=8,rv=8,file=" + basis_file, true},
      {"lowrank:rk=8,rv=8,file=" + basis_file + "+kivi:bits=2,group=8,residual=16", true},
      {"atp:block=16,rank=4,window=32", false},
      {"atp:block=16,tau=0.9,window=16", false},
      {"atp:block=128,rank=8,window=128,dtype=bf16", false},
      {"atp:block=32,rank=4,window=64,basis=key,residual=kivi2,dtype=bf16,rope=pre", false},
      {"atp:block=16,rank=3,window=32,proj=lowrank,keep=2,residual=kivi4", false},
      {"atp:block=16,rank=4,window=16,basis=key,keep=3,residual=mx_fp4,rope=pre", false},
      {"atp:block=16,tau=0.8,window=16,keep=16", false},
  };
  KvShape s;
  s.d_model = 64, s.n_heads = 4, s.n_kv_heads = 2, s.head_dim = 32;
  for (int i = 0; i < 16; ++i) s.rope_inv_freq.push_back(std::pow(10000.f, -float(i) / 16));
  std::mt19937 rng(9);
  std::normal_distribution<float> normal;
  // One step of n tokens from position `at`: X and K, V rows of 64 floats, Q of 128.
  const auto step = [&](KvPolicy& kv, int64_t at, int64_t n) {
    std::vector<float> X(size_t(n) * 64), K(X.size()), V(X.size()), Q(size_t(n) * 128), O(Q.size());
    for (auto* v : {&X, &K, &V, &Q})
      for (float& x : *v) x = normal(rng);
    std::vector<int32_t> pos(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) pos[size_t(i)] = int32_t(at + i);
    std::vector<InputBasis*> bases(pos.size());
    Status st = kv.InputBases(pos, X.data(), bases);
    if (st.ok()) st = kv.Append(pos, X.data(), K.data(), V.data());
    if (st.ok()) st = kv.Attend(pos, Q.data(), O.data());
    if (st.ok()) st = kv.Update();
    return st;
  };
  for (const Case& c : cases) {
    auto f = ParseKvPolicy(c.spec);
    ASSERT_TRUE(f.ok()) << f.status().message();
    int reached = 0, steps = 0;
    for (int64_t len : {0, 1, 31, 63, 64, 150, 257}) {
      for (int64_t T : {1, 5, 64, 100, 300}) {
        PageStore store;
        KvShape shape = s;
        shape.pages = &store;
        auto kv = (*f)->Create(shape);
        for (int64_t at = 0; at < len; at += 37) ASSERT_TRUE(step(*kv, at, std::min<int64_t>(37, len - at)).ok()) << c.spec;
        const size_t bound = store.leased_bytes() + kv->StepLeaseBytes(T);
        store.ResetPeak();
        ASSERT_TRUE(step(*kv, len, T).ok()) << c.spec;
        EXPECT_LE(store.peak_bytes(), bound) << c.spec << ": " << T << " tokens after " << len;
        if (c.exact) {
          EXPECT_EQ(store.peak_bytes(), bound) << c.spec << ": " << T << " tokens after " << len;
        }
        reached += store.peak_bytes() == bound;
        ++steps;
      }
    }
    std::printf("%-72s bound reached in %d of %d steps\n", c.spec.c_str(), reached, steps);
  }
}

// A bounded store that is full refuses a page: the policy's Append returns ResourceExhausted naming the
// pages, nothing aborts, and every page comes back when the policy dies (whatever state an error leaves
// it in is fit for that: KvPolicy::Append). Exact rows change all or nothing: a dense policy refused its
// next page still holds its tokens and attends to them as before.
TEST(PageStore, AFullStoreFailsAnAppendWithAStatus) {
  KvShape s;
  s.d_model = 64, s.n_heads = 4, s.n_kv_heads = 2, s.head_dim = 32;
  for (int i = 0; i < 16; ++i) s.rope_inv_freq.push_back(std::pow(10000.f, -float(i) / 16));
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::vector<float> X(64 * 64), K(X.size()), V(X.size()), Q(64 * 128), O(Q.size()), again(Q.size());
  for (auto* v : {&X, &K, &V, &Q})
    for (float& x : *v) x = normal(rng);
  const auto positions = [](int64_t at, int64_t n) {
    std::vector<int32_t> p(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) p[size_t(i)] = int32_t(at + i);
    return p;
  };
  for (const std::string spec : {"dense", "mx:fmt=fp8_e4m3", "kivi:bits=2,group=16,residual=16", "streaming:budget=100",
                                  "h2o:budget=40,recent=10", "atp:block=16,rank=4,window=16,residual=kivi4",
                                  "lowrank:rk=8,rv=16,mode=online,block=16"}) {
    SCOPED_TRACE(spec);
    // Two pages of 64 f32 rows of both heads (16 KiB each): dense's keys and values for 64 tokens.
    PageStore store(2 * 16384);
    KvShape shape = s;
    shape.pages = &store;
    auto kv = ParseKvPolicy(spec).value()->Create(shape);
    Status st;
    int64_t len = 0;
    for (; len < 64 * 16 && st.ok(); len += 64) {
      const auto pos = positions(len, 64);
      st = kv->Append(pos, X.data(), K.data(), V.data());
      if (st.ok()) st = kv->Attend(pos, Q.data(), O.data());
      if (st.ok()) st = kv->Update();
    }
    ASSERT_FALSE(st.ok()) << "the store never ran out";
    EXPECT_EQ(st.code(), Status::Code::kResourceExhausted) << st.ToString();
    EXPECT_NE(st.message().find("pages of"), std::string::npos) << st.ToString();
    EXPECT_NE(st.message().find("free"), std::string::npos) << st.ToString();
    EXPECT_LE(store.peak_bytes(), store.capacity_bytes());
    kv.reset();
    EXPECT_EQ(store.leased_bytes(), 0u) << "pages kept after the policy died";
  }
  // Dense: the first 64 tokens fill both pages; the 65th needs two more and gets none.
  PageStore store(2 * 16384);
  KvShape shape = s;
  shape.pages = &store;
  auto dense = ParseKvPolicy("dense").value()->Create(shape);
  const auto pos = positions(0, 64);
  ASSERT_TRUE(dense->Append(pos, X.data(), K.data(), V.data()).ok());
  ASSERT_TRUE(dense->Attend(pos, Q.data(), O.data()).ok());
  const Status st = dense->Append(positions(64, 1), X.data(), K.data(), V.data());
  EXPECT_EQ(st.code(), Status::Code::kResourceExhausted) << st.ToString();
  EXPECT_EQ(dense->Length(), 64);
  EXPECT_EQ(store.leased_bytes(), 2u * 16384);
  ASSERT_TRUE(dense->Attend(pos, Q.data(), again.data()).ok());
  EXPECT_EQ(again, O) << "the refused append changed the rows";
}

// Prefix sharing: pages handed out by FullPage and taken by Adopt are read by both holders, written by
// neither (Grow writes past them, Retain into a private copy), counted once, and free again only when
// the last holder returns them.
TEST(PagedRows, SharedPagesAreNeverWrittenAndFreedByTheLastHolder) {
  PageStore store;
  constexpr int64_t P = PagedRows::kRowsPerPage;
  const auto fill = [](PagedRows& r, int64_t from, int64_t n, uint8_t salt) {
    ASSERT_TRUE(r.Grow(n).ok());
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
    ASSERT_TRUE(a.Retain(keep.data()).ok());
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
    ASSERT_TRUE(c.Retain(keep_c.data()).ok());
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
  uint8_t* a = store.TryLease(256).value();
  store.Share(a, 256);
  store.Share(a, 256);
  EXPECT_EQ(store.leased_bytes(), 256u);
  store.Return(a, 256);
  store.Return(a, 256);
  EXPECT_EQ(store.leased_pages(), 1u);
  EXPECT_NE(store.TryLease(256).value(), a) << "a page with a holder left was reused";
  store.Return(a, 256);
  EXPECT_EQ(store.leased_pages(), 1u);  // the second lease
  EXPECT_EQ(store.TryLease(256).value(), a);
}

// An account (a sequence's view of the engine's store) leases through its parent and counts what it
// holds, shared pages included, while the parent counts every page once and keeps the bound.
TEST(PageStore, AnAccountCountsWhatItHoldsOfItsParent) {
  PageStore store;
  {
    PageStore a(store), b(store);
    uint8_t* p = a.TryLease(256).value();
    uint8_t* q = b.TryLease(512).value();
    EXPECT_EQ(a.leased_bytes(), 256u);
    EXPECT_EQ(b.leased_bytes(), 512u);
    EXPECT_EQ(store.leased_bytes(), 768u);
    EXPECT_EQ(a.held_bytes(), 0u) << "the parent holds the memory";
    b.Share(p, 256);
    EXPECT_EQ(b.leased_bytes(), 768u);
    EXPECT_EQ(store.leased_bytes(), 768u) << "a shared page is counted once";
    a.Return(p, 256);
    EXPECT_EQ(a.leased_bytes(), 0u);
    EXPECT_EQ(store.leased_bytes(), 768u) << "b still holds p";
    b.Return(p, 256);
    b.Return(q, 512);
    EXPECT_EQ(b.leased_pages(), 0u);
  }
  EXPECT_EQ(store.leased_bytes(), 0u);
  EXPECT_EQ(store.leased_pages(), 0u);
  PageStore bounded(1024);
  PageStore account(bounded);
  Result<uint8_t*> big = account.TryLease(2048);
  EXPECT_EQ(big.status().code(), Status::Code::kResourceExhausted) << "the parent's bound holds";
  EXPECT_EQ(account.leased_bytes(), 0u);
}

}  // namespace
}  // namespace atp
