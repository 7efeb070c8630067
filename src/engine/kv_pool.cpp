#include "engine/kv_pool.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

namespace atp {

KvPool::KvPool(size_t capacity_bytes, size_t page_bytes)
    : page_bytes_(std::max<size_t>(page_bytes, 1)), capacity_pages_(capacity_bytes / page_bytes_) {}

bool KvPool::TryReserve(uint64_t id, size_t estimate_bytes) {
  std::lock_guard<std::mutex> lk(mu_);
  const size_t pages = Pages(estimate_bytes);
  if (charged_pages_ + pages > capacity_pages_) return false;
  seqs_[id] = Charge{pages, 0};
  charged_pages_ += pages;
  return true;
}

void KvPool::Update(uint64_t id, size_t bytes) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return;
  charged_pages_ -= it->second.pages(page_bytes_);
  used_bytes_ = used_bytes_ - it->second.used_bytes + bytes;
  it->second.used_bytes = bytes;
  charged_pages_ += it->second.pages(page_bytes_);
}

void KvPool::Release(uint64_t id) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return;
  charged_pages_ -= it->second.pages(page_bytes_);
  used_bytes_ -= it->second.used_bytes;
  seqs_.erase(it);
}

KvPool::Usage KvPool::usage() const {
  std::lock_guard<std::mutex> lk(mu_);
  return {capacity_pages_ * page_bytes_, charged_pages_ * page_bytes_, used_bytes_, seqs_.size()};
}

KvFootprint KvFootprint::Measure(const LlamaModel& model, const KvPolicyFactory& factory, int max_len, int step) {
  KvFootprint f;
  f.step_ = std::max(step, 1);
  // One probe per distinct layer shape, counted for each layer of that shape: the probe rows are the
  // same for every layer, so layers of one shape hold the same bytes, and a model of 16 equal layers
  // costs one layer's appends.
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
      probe.push_back(factory.Create(s));
      weight.push_back(0);
    }
    ++weight[i];
  }
  const KvShape s = model.kv_shape(0);
  std::mt19937 rng(1234);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> X(size_t(f.step_) * size_t(s.d_model));  // (step, d_model)
  std::vector<float> K(size_t(f.step_) * size_t(s.kv_dim()));  // (step, kv_dim)
  std::vector<float> V(K.size());                              // (step, kv_dim)
  // One random chunk, appended again and again: each block is still full rank, and drawing
  // fresh numbers for every layer and step would cost more than the appends on a large model.
  for (auto* buf : {&X, &K, &V})
    for (float& x : *buf) x = normal(rng);
  std::vector<int32_t> pos(size_t(f.step_));
  for (int start = 0; start < std::max(max_len, 1); start += f.step_) {
    std::iota(pos.begin(), pos.end(), start);
    size_t bytes = 0;
    for (size_t i = 0; i < probe.size(); ++i) {
      // A probe row the policy refuses would leave the estimate short; the pool then charges what
      // real sequences measure, so the error is only dropped here.
      (void)probe[i]->Append(pos, X.data(), K.data(), V.data());
      bytes += weight[i] * probe[i]->Bytes();
    }
    f.bytes_.push_back(bytes);
  }
  return f;
}

size_t KvFootprint::BytesAt(int len) const {
  if (bytes_.empty() || len <= step_) return bytes_.empty() ? 0 : bytes_[0];
  const size_t i = size_t(len / step_) - 1;  // point at or below len
  const double frac = double(len % step_) / step_;
  if (i + 1 < bytes_.size()) return size_t(std::ceil(bytes_[i] + frac * (double(bytes_[i + 1]) - double(bytes_[i]))));
  // Past the measured range: extend the last segment's slope.
  const size_t n = bytes_.size();
  const double slope = n > 1 ? (double(bytes_[n - 1]) - double(bytes_[n - 2])) / step_ : double(bytes_[0]) / step_;
  return size_t(std::ceil(double(bytes_[n - 1]) + slope * (len - int(n) * step_)));
}

}  // namespace atp
