#include "cuda/decode_batch.h"

#include <algorithm>
#include <cstring>

namespace atp::cuda {

BatchedDecode::~BatchedDecode() {
  if (host_) cudaFreeHost(host_);
}

size_t BatchedDecode::Put(const void* p, size_t n) {
  const size_t at = (host_size_ + 15) / 16 * 16;
  if (at + n > host_cap_) {  // grow by doubling, keeping what is written
    const size_t cap = std::max<size_t>(2 * (at + n), 64 * 1024);
    uint8_t* next = nullptr;
    if (cudaMallocHost(&next, cap) != cudaSuccess) {
      cudaGetLastError();
      return SIZE_MAX;
    }
    if (host_) {
      std::memcpy(next, host_, host_size_);
      cudaFreeHost(host_);
    }
    host_ = next, host_cap_ = cap;
  }
  if (n > 0) std::memcpy(host_ + at, p, n);
  host_size_ = at + n;
  return at;
}

Status BatchedDecode::Plan(std::span<const ForwardItem> items, std::span<const int64_t> first_row, const Rows& rows,
                           const AttnShape& a, int layers) {
  batched_.assign(items.size(), false);
  layers_.assign(size_t(layers), {});
  host_size_ = 0;
  std::vector<std::vector<DecodePlanner*>> planners(items.size());
  bool any = false;
  for (size_t i = 0; i < items.size(); ++i) {
    if (items[i].tokens.size() != 1) continue;
    for (KvPolicy* kv : items[i].kv) {
      // A cross-cast per policy and step (~50 ns); KvPolicy has no hook for backends to hang it on.
      auto* p = dynamic_cast<DecodePlanner*>(kv);
      if (!p || !p->Batches()) break;
      planners[i].push_back(p);
    }
    batched_[i] = planners[i].size() == items[i].kv.size();
    any = any || batched_[i];
  }
  if (!any) return Status::Ok();

  int64_t ws = 0;
  std::vector<RowStore> stores;
  std::vector<StoreJob> jobs;
  std::vector<DecodeQuery> queries;
  for (int l = 0; l < layers; ++l) {
    Layer& L = layers_[size_t(l)];
    jobs.clear(), queries.clear();
    for (size_t i = 0; i < items.size(); ++i) {
      if (!batched_[i]) continue;
      const int64_t r = first_row[i];
      const float* x = rows.x ? rows.x + r * rows.d : nullptr;
      stores.clear();
      DecodeQuery q;
      ATP_RETURN_IF_ERROR(planners[i][size_t(l)]->PlanDecode(items[i].start_pos, &stores, &q));
      for (const RowStore& s : stores) {
        if (s.input && !x) return Status::InvalidArgument("batched decode: a policy stores X, which was not formed");
        jobs.push_back(
            {s.k, s.v, s.row, s.n, s.input ? x : rows.k + r * rows.kvd, s.input ? nullptr : rows.v + r * rows.kvd});
      }
      q.q = rows.q + r * rows.qd, q.o = rows.o + r * rows.qd;
      queries.push_back(q);
      L.items.push_back({planners[i][size_t(l)], items[i].kv[size_t(l)], x, q.q});
    }
    // Stores grouped by form (NVFP4 also by row width: its kernel is compiled per width).
    std::vector<bool> done(jobs.size(), false);
    for (size_t j = 0; j < jobs.size(); ++j) {
      if (done[j]) continue;
      const KvFormat f = jobs[j].k.fmt;
      const int dim = f == KvFormat::kNvFp4 ? jobs[j].k.dim : 0;
      std::vector<StoreJob> group;
      int64_t max_elems = 0;
      for (size_t m = j; m < jobs.size(); ++m) {
        if (done[m] || jobs[m].k.fmt != f || (dim && jobs[m].k.dim != dim)) continue;
        done[m] = true;
        group.push_back(jobs[m]);
        max_elems = std::max(max_elems, jobs[m].n * jobs[m].k.n_kv * jobs[m].k.dim);
      }
      const size_t at = Put(group.data(), group.size() * sizeof(StoreJob));
      if (at == SIZE_MAX) return Status::ResourceExhausted("batched decode: pinned host memory for descriptors");
      L.stores.push_back({f, jobs[j].k.dim, at, int(group.size()), max_elems});
    }
    for (DecodeBatch& b : PlanDecodeBatches(a, queries.data(), queries.size(), SmCount())) {
      const size_t tasks = Put(b.tasks.data(), b.tasks.size() * sizeof(DecodeTask));
      const size_t work = Put(b.work.data(), b.work.size() * sizeof(DecodeWork));
      if (tasks == SIZE_MAX || work == SIZE_MAX)
        return Status::ResourceExhausted("batched decode: pinned host memory for descriptors");
      ws = std::max(ws, b.ws_floats);  // layers and forms run one after another: one workspace
      L.attends.push_back({std::move(b), tasks, work});
    }
  }
  ATP_RETURN_IF_ERROR(desc_.Grow(host_size_));
  ATP_RETURN_IF_ERROR(ws_.Grow(size_t(ws)));
  ATP_CUDA_RETURN(cudaMemcpy(desc_.get(), host_, host_size_, cudaMemcpyHostToDevice));
  return Status::Ok();
}

Status BatchedDecode::RunLayer(int l) {
  if (size_t(l) >= layers_.size()) return Status::Ok();
  const Layer& L = layers_[size_t(l)];
  if (L.items.empty()) return Status::Ok();
  for (const StoreGroup& g : L.stores)
    StoreKvBatch(g.f, g.dim, reinterpret_cast<const StoreJob*>(desc_.get() + g.jobs), g.n, g.max_elems, nullptr);
  ATP_RETURN_IF_ERROR(LastLaunch("batched kv store"));
  for (const Item& it : L.items) ATP_RETURN_IF_ERROR(it.plan->FinishDecode(it.x));
  for (const AttendGroup& g : L.attends)
    RunDecodeBatch(g.batch, reinterpret_cast<const DecodeTask*>(desc_.get() + g.tasks),
                   reinterpret_cast<const DecodeWork*>(desc_.get() + g.work), ws_.get(), nullptr);
  ATP_RETURN_IF_ERROR(LastLaunch("batched decode attention"));
  for (const Item& it : L.items) ATP_RETURN_IF_ERROR(it.plan->ObserveDecode(it.q));
  return Status::Ok();
}

}  // namespace atp::cuda
