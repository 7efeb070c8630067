#include "cuda/device_policy.h"

#include <algorithm>
#include <string>

#include "cuda/evict_votes.h"

namespace atp::cuda {

bool PointerKind::Query(const void* p) {
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    cudaGetLastError();  // a plain host pointer may report an error on old drivers; it is not sticky
    return false;
  }
  return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
}

const float* DeviceInput::Get(const float* p, size_t n) {
  if (kind_.OnDevice(p)) return p;
  if (!stage_.Grow(n).ok()) return nullptr;
  cudaMemcpy(stage_.get(), p, n * sizeof(float), cudaMemcpyHostToDevice);
  return stage_.get();
}

float* DeviceOutput::Get(float* p, size_t n) {
  if (kind_.OnDevice(p)) return p;
  return stage_.Grow(n).ok() ? stage_.get() : nullptr;
}

void DeviceOutput::Finish(float* p, size_t n) {
  if (!kind_.OnDevice(p)) cudaMemcpy(p, stage_.get(), n * sizeof(float), cudaMemcpyDeviceToHost);
}

KvFormat ExactFormat(DType dt) {
  return dt == DType::kF32 ? KvFormat::kF32 : dt == DType::kF16 ? KvFormat::kF16 : KvFormat::kBF16;
}

KvFormat MxRowsFormat(MxFormat f) {
  switch (f) {
    case MxFormat::kFp8E4M3: return KvFormat::kMxFp8E4M3;
    case MxFormat::kFp8E5M2: return KvFormat::kMxFp8E5M2;
    case MxFormat::kFp6E2M3: return KvFormat::kMxFp6E2M3;
    case MxFormat::kFp6E3M2: return KvFormat::kMxFp6E3M2;
    case MxFormat::kFp4E2M1: return KvFormat::kMxFp4;
    case MxFormat::kInt8: return KvFormat::kMxInt8;
    case MxFormat::kNvFp4: return KvFormat::kNvFp4;
  }
  return KvFormat::kMxFp8E4M3;  // unreachable: every MxFormat is listed
}

Status CheckContinues(const char* policy, int64_t first, int64_t len) {
  if (first == len) return Status::Ok();
  return Status::InvalidArgument(std::string(policy) + ": position " + std::to_string(first) + " appended after " +
                                 std::to_string(len) + " tokens");
}

Status RowBuffer::Move(int64_t cap, int64_t from, int64_t keep) {
  cap = std::max<int64_t>(cap, 256);
  const int64_t eb = TokenElemBytes(f_, dim_, n_kv_), sb = TokenScaleBytes(f_, dim_, n_kv_);
  DeviceArray<uint8_t> next;
  ATP_RETURN_IF_ERROR(next.Grow(size_t(cap * (eb + sb))));
  if (keep > 0) {
    ATP_CUDA_RETURN(cudaMemcpy(next.get(), buf_.get() + from * eb, size_t(keep * eb), cudaMemcpyDeviceToDevice));
    if (sb) ATP_CUDA_RETURN(cudaMemcpy(next.get() + cap * eb, buf_.get() + cap_ * eb + from * sb, size_t(keep * sb),
                                       cudaMemcpyDeviceToDevice));
  }
  buf_ = std::move(next);
  cap_ = cap;
  return Status::Ok();
}

Status RowBuffer::Gather(const int32_t* idx, int64_t n, int64_t tokens) {
  // Room for up to 64 more rows: h2o gathers at every decode step and then appends a row, which into a
  // buffer of exactly `tokens` rows would move every row again, into one twice the size.
  RowBuffer next(f_, dim_, n_kv_);
  ATP_RETURN_IF_ERROR(next.Reserve(tokens + std::min<int64_t>(tokens, 64), 0));
  GatherRows(rows(), next.rows(), idx, n, nullptr);
  ATP_RETURN_IF_ERROR(LastLaunch("row gather"));
  *this = std::move(next);
  return Status::Ok();
}

Status StoreRows(const std::vector<RowStore>& stores, const float* K, const float* V, const float* X) {
  for (const RowStore& r : stores) StoreKv(r.k, r.v, r.row, r.input ? X : K, r.input ? nullptr : V, r.n, nullptr);
  return LastLaunch("kv append");
}

Result<int64_t> ExactTail::Room(int64_t len, int64_t keep_from, int64_t T, const std::function<void()>& before_move) {
  keep_from_ = std::max(keep_from_, keep_from);
  if (len + T - first_ > k_.capacity()) {  // full: move the rows still needed to the front
    before_move();
    const int64_t keep = len - keep_from_, from = keep_from_ - first_;
    ATP_RETURN_IF_ERROR(k_.Compact(from, keep, keep + T));
    ATP_RETURN_IF_ERROR(v_.Compact(from, keep, keep + T));
    first_ = keep_from_;
  }
  return len - first_;
}

RebuiltRows& ThreadRebuiltRows() {
  thread_local RebuiltRows rows;
  return rows;
}

Status GrowKeeping(DeviceArray<uint8_t>* a, size_t bytes, size_t keep) {
  if (bytes <= a->size()) return Status::Ok();
  DeviceArray<uint8_t> next;
  ATP_RETURN_IF_ERROR(next.Grow(std::max(bytes, 2 * a->size())));
  if (keep > 0) ATP_CUDA_RETURN(cudaMemcpyAsync(next.get(), a->get(), keep, cudaMemcpyDeviceToDevice, nullptr));
  *a = std::move(next);
  return Status::Ok();
}

Status KiviRows::Reserve(int64_t groups, int64_t kept) {
  const size_t rows = size_t(groups * group_), had = size_t(kept * group_);
  ATP_RETURN_IF_ERROR(GrowKeeping(&kcodes_, rows * CodeBytes(), had * CodeBytes()));
  ATP_RETURN_IF_ERROR(GrowKeeping(&vcodes_, rows * CodeBytes(), had * CodeBytes()));
  ATP_RETURN_IF_ERROR(GrowKeeping(&kparams_, size_t(groups) * KeyParamBytes(), size_t(kept) * KeyParamBytes()));
  return GrowKeeping(&vparams_, rows * ValueParamBytes(), had * ValueParamBytes());
}

DeviceRows KiviRows::rows(bool keys) const {
  DeviceRows r;
  r.fmt = bits_ == 2 ? KvFormat::kKivi2 : bits_ == 4 ? KvFormat::kKivi4 : KvFormat::kKivi8;
  r.dim = dim_, r.n_kv = n_kv_;
  r.group = group_, r.channel_params = keys;
  r.elems = (keys ? kcodes_ : vcodes_).get(), r.scales = (keys ? kparams_ : vparams_).get();
  return r;
}

Status DevicePolicy::CheckInput(const float* X) const {
  if (ReadsInput() && !X) return Status::InvalidArgument(std::string(name_) + ": the layer input X is needed");
  return Status::Ok();
}

Status DevicePolicy::Append(std::span<const int32_t> positions, const float* X, const float* K, const float* V) {
  const int64_t T = int64_t(positions.size());
  if (T == 0) return Status::Ok();
  ATP_RETURN_IF_ERROR(CheckContinues(name_, positions[0], len_));
  ATP_RETURN_IF_ERROR(CheckInput(X));
  std::vector<RowStore> stores;
  ATP_RETURN_IF_ERROR(Reserve(positions[0], T, false, &stores));
  const size_t n = size_t(T) * size_t(shape_.kv_dim());
  const float* dk = k_in_.Get(K, n);
  const float* dv = v_in_.Get(V, n);
  const float* dx = ReadsInput() ? x_in_.Get(X, size_t(T) * size_t(shape_.d_model)) : nullptr;
  if (!dk || !dv || (ReadsInput() && !dx))
    return Status::ResourceExhausted(std::string("cuda ") + name_ + " policy: cannot stage appended rows");
  ATP_RETURN_IF_ERROR(StoreRows(stores, dk, dv, dx));
  ATP_RETURN_IF_ERROR(Finish(T, dx, false));
  len_ += T;
  return Status::Ok();
}

Status DevicePolicy::Attend(std::span<const int32_t> positions, const float* Q, float* O) {
  const int64_t T = int64_t(positions.size());
  if (T == 0) return Status::Ok();
  ATP_RETURN_IF_ERROR(Prepare(positions.back()));
  const DecodeQuery view = View(positions.back());
  const size_t nq = size_t(T) * size_t(shape_.q_dim());
  const AttnShape a{shape_.n_heads, shape_.n_kv_heads, shape_.head_dim};
  const float* dq = q_in_.Get(Q, nq);
  float* o = o_out_.Get(O, nq);
  if (!dq || !o) return Status::ResourceExhausted("GPU attention: staging the queries or the output failed");
  ATP_RETURN_IF_ERROR(ws_.Grow(size_t(AttendWorkspaceFloats(a, RowsSeen(view), SmCount()))));
  cuda::Attend(a, view.k, view.v, view.vis, dq, T, positions[0], o, ws_.get(), SmCount(), nullptr);
  ATP_RETURN_IF_ERROR(LastLaunch("attention"));
  ATP_RETURN_IF_ERROR(Observe(dq, T, positions[0]));
  o_out_.Finish(O, nq);
  return Status::Ok();
}

Status DevicePolicy::PlanDecode(int32_t pos, std::vector<RowStore>* stores, DecodeQuery* query) {
  ATP_RETURN_IF_ERROR(CheckContinues(name_, pos, len_));
  ATP_RETURN_IF_ERROR(Reserve(pos, 1, true, stores));
  *query = View(pos);
  return Status::Ok();
}

Status DevicePolicy::FinishDecode(const float* X) {
  ATP_RETURN_IF_ERROR(CheckInput(X));
  ATP_RETURN_IF_ERROR(Finish(1, X, true));
  ++len_;
  return Status::Ok();
}

DeviceRows RowBuffer::rows() const {
  const int64_t eb = TokenElemBytes(f_, dim_, n_kv_);
  return {f_, buf_.get(), IsMx(f_) ? buf_.get() + cap_ * eb : nullptr, dim_, n_kv_};
}

}  // namespace atp::cuda
