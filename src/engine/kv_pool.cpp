#include "engine/kv_pool.h"

#include <algorithm>
#include <numeric>
#include <random>

namespace atp {

KvPool::KvPool(size_t capacity_bytes, size_t page_bytes, const PageStore& store)
    : page_bytes_(std::max<size_t>(page_bytes, 1)), capacity_pages_(capacity_bytes / page_bytes_), store_(store) {}

bool KvPool::TryReserve(uint64_t id, size_t bytes, size_t keep_free) {
  std::lock_guard<std::mutex> lk(mu_);
  Charge& c = seqs_[id];  // a new id starts with nothing reserved and nothing held
  Charge grown = c;
  grown.reserved = std::max(c.reserved, bytes);
  const size_t after = Pages(store_.leased_bytes() + beyond_ - c.beyond_store() + grown.beyond_store());
  if (grown.beyond_store() > c.beyond_store() && after + keep_free > capacity_pages_) {
    if (c.reserved == 0 && c.held == 0) seqs_.erase(id);
    return false;
  }
  beyond_ = beyond_ - c.beyond_store() + grown.beyond_store();
  c = grown;
  return true;
}

void KvPool::Settle(uint64_t id, size_t bytes) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return;
  beyond_ -= it->second.beyond_store();
  it->second.reserved = std::min(it->second.reserved, bytes);
  beyond_ += it->second.beyond_store();
}

void KvPool::Update(uint64_t id, size_t bytes, size_t leased) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return;
  Charge& c = it->second;
  beyond_ -= c.beyond_store();
  unleased_ -= c.unleased();
  c.held = std::max(bytes, leased), c.leased = leased;
  beyond_ += c.beyond_store();
  unleased_ += c.unleased();
}

void KvPool::Release(uint64_t id) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return;
  beyond_ -= it->second.beyond_store();
  unleased_ -= it->second.unleased();
  seqs_.erase(it);
}

KvPool::Usage KvPool::usage() const {
  std::lock_guard<std::mutex> lk(mu_);
  const size_t leased = store_.leased_bytes();
  return {capacity_pages_ * page_bytes_, Pages(leased + beyond_) * page_bytes_, leased + unleased_, seqs_.size(), page_bytes_};
}

KvFootprint KvFootprint::Measure(const LlamaModel& model, const KvPolicyFactory& factory, int max_len) {
  KvFootprint f;
  constexpr int kRows = 64;  // distinct random rows, appended again and again
  // One probe per distinct layer shape, counted for each layer of that shape: the probe rows are the
  // same for every layer, so layers of one shape hold the same bytes, and a model of 16 equal layers
  // costs one layer's appends.
  // Each probe leases from a store of its own (declared first: the probes return their pages as they die).
  std::vector<std::unique_ptr<PageStore>> stores;
  std::vector<std::unique_ptr<KvPolicy>> probe;
  std::vector<size_t> weight;
  std::vector<KvShape> shapes;
  for (int l = 0; l < model.config().num_layers; ++l) {
    const KvShape s = model.kv_shape(l);
    size_t i = 0;
    while (i < shapes.size() && !(shapes[i].d_model == s.d_model && shapes[i].n_heads == s.n_heads &&
                                  shapes[i].n_kv_heads == s.n_kv_heads && shapes[i].head_dim == s.head_dim))
      ++i;
    if (i == shapes.size()) {
      shapes.push_back(s);
      stores.push_back(std::make_unique<PageStore>());
      KvShape shape = s;
      shape.pages = stores.back().get();
      probe.push_back(factory.Create(shape));
      weight.push_back(0);
    }
    ++weight[i];
  }
  for (size_t i = 0; i < shapes.size(); ++i) f.empty_.emplace_back(factory.Create(shapes[i]), weight[i]);
  const KvShape s = model.kv_shape(0);
  std::mt19937 rng(1234);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> X(size_t(kRows) * size_t(s.d_model));  // (kRows, d_model)
  std::vector<float> K(size_t(kRows) * size_t(s.kv_dim()));  // (kRows, kv_dim)
  std::vector<float> V(K.size());                            // (kRows, kv_dim)
  // One random chunk, appended again and again: each block is still full rank, and drawing
  // fresh numbers for every layer and step would cost more than the appends on a large model.
  for (auto* buf : {&X, &K, &V})
    for (float& x : *buf) x = normal(rng);
  for (int32_t pos = 0; pos < std::max(max_len, 1); ++pos) {
    const size_t row = size_t(pos % kRows);
    size_t bytes = 0;
    for (size_t i = 0; i < probe.size(); ++i) {
      // A probe row the policy refuses would leave the estimate short; the pool then charges what
      // real sequences measure, so the error is only dropped here.
      (void)probe[i]->Append(std::span<const int32_t>(&pos, 1), &X[row * size_t(s.d_model)], &K[row * size_t(s.kv_dim())],
                             &V[row * size_t(s.kv_dim())]);
      (void)probe[i]->Update();  // as the forward pass ends each step: the compact state
      bytes += weight[i] * std::max(stores[i]->leased_bytes(), probe[i]->Bytes());
    }
    f.bytes_.push_back(bytes);
  }
  return f;
}

size_t KvFootprint::FirstStepBytes(int tokens) const {
  size_t n = 0;
  for (const auto& [policy, layers] : empty_) n += layers * policy->StepLeaseBytes(tokens);
  return n;
}

size_t KvFootprint::BytesAt(int len) const {
  if (bytes_.empty()) return 0;
  const size_t n = bytes_.size();
  if (len <= int(n)) return bytes_[size_t(std::max(len, 1)) - 1];
  // Past the measured range: the last `back` lengths (64, or all but the first when fewer) repeated.
  const size_t back = std::min<size_t>(64, n - 1);
  if (back == 0) return bytes_[0] * size_t(len);
  const size_t over = size_t(len) - n, reps = (over + back - 1) / back;
  const size_t step = bytes_[n - 1] - std::min(bytes_[n - 1], bytes_[n - 1 - back]);  // never negative
  return bytes_[n - 1 + over - reps * back] + reps * step;
}

}  // namespace atp
