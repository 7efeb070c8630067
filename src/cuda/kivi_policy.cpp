// KIVI with rows in device memory: every token's keys quantized per channel over token groups of
// G, values per token over channel groups of G, b bits, f16 scales and zeros, the newest R rows
// exact (kv/kivi_codec.h). A group is packed (cuda::KiviPack, the CPU encoders' codes bit for bit)
// once G rows lie before the newest R, and a query sees packed groups and exact rows through
// cuda::Visibility: block G, window R - 1, one packed row per position. Bytes() counts what the CPU
// store holds: the exact rows still read, codes, per-group key and per-row value parameters.
#include "cuda/kivi_policy.h"

#include <algorithm>

#include "cuda/device_policy.h"

namespace atp {

namespace {

using cuda::DeviceArray;
using cuda::KvFormat;

// A byte buffer that grows by doubling and keeps its first `keep` bytes.
Status GrowKeeping(DeviceArray<uint8_t>* a, size_t bytes, size_t keep) {
  if (bytes <= a->size()) return Status::Ok();
  DeviceArray<uint8_t> next;
  ATP_RETURN_IF_ERROR(next.Grow(std::max(bytes, 2 * a->size())));
  if (keep > 0) ATP_CUDA_RETURN(cudaMemcpyAsync(next.get(), a->get(), keep, cudaMemcpyDeviceToDevice, nullptr));
  *a = std::move(next);
  return Status::Ok();
}

class CudaKiviPolicy : public cuda::DevicePolicy {
 public:
  struct Params {
    int bits = 2, group = 32, residual = 128;
    KvFormat exact = KvFormat::kF32;
    KvFormat packed() const { return bits == 2 ? KvFormat::kKivi2 : bits == 4 ? KvFormat::kKivi4 : KvFormat::kKivi8; }
  };
  CudaKiviPolicy(const KvShape& s, const Params& p)
      : DevicePolicy(s, "kivi"), p_(p), exact_(p.exact, s.head_dim, s.n_kv_heads) {}
  static Status CheckShape(const KvShape& s, const Params& p) {
    if (p.group % 8 != 0 || s.head_dim % p.group != 0)
      return Status::Unsupported("cuda kivi: group=" + std::to_string(p.group) +
                                 " must be a multiple of 8 dividing head_dim " + std::to_string(s.head_dim));
    return cuda::CheckAttnShape({s.n_heads, s.n_kv_heads, s.head_dim}, p.exact);
  }

  size_t Bytes() const override {
    return size_t(exact_.Bytes(Length()) + groups_ * (KeyParamBytes() + p_.group * (2 * CodeBytes() + ValueParamBytes())));
  }
  Status Update() override {  // as the CPU policy: every later query reads the packed groups packed
    exact_.Release(groups_ * p_.group);
    return Status::Ok();
  }
  bool ReadsInput() const override { return false; }

 private:
  // Room for T tokens from position first (= Length()): their exact rows (those of groups packed
  // before this step are read packed by every later query), and the groups packed once they are in,
  // so that Finish's packing moves no buffer.
  Status Reserve(int64_t first, int64_t T, bool, std::vector<cuda::RowStore>* stores) override {
    ATP_ASSIGN_OR_RETURN(const int64_t row, exact_.Room(first, groups_ * p_.group, T, [] {}));
    stores->push_back({exact_.k(), exact_.v(), row, T});
    return ReservePacked(first + T);
  }
  Status Finish(int64_t T, const float*, bool) override {
    Pack(Length() + T);
    return cuda::LastLaunch("kivi append");
  }

  // Per token (all KV heads): codes of one row; f16 scale and zero per value channel group; per
  // token group: f16 scale and zero per key channel.
  int64_t CodeBytes() const { return int64_t(shape().kv_dim()) * p_.bits / 8; }
  int64_t ValueParamBytes() const { return int64_t(shape().n_kv_heads) * (shape().head_dim / p_.group) * 4; }
  int64_t KeyParamBytes() const { return int64_t(shape().kv_dim()) * 4; }

  // Token groups packed once len tokens are in: those before the newest R rows.
  int64_t GroupsAt(int64_t len) const { return len >= p_.residual ? (len - p_.residual) / p_.group : 0; }

  // Room for the groups packed at len tokens (the packed ones kept), so that Pack moves no buffer.
  Status ReservePacked(int64_t len) {
    const int64_t want = GroupsAt(len);
    if (want <= groups_) return Status::Ok();
    const size_t rows = size_t(want * p_.group), had = size_t(groups_ * p_.group);
    ATP_RETURN_IF_ERROR(GrowKeeping(&kcodes_, rows * CodeBytes(), had * CodeBytes()));
    ATP_RETURN_IF_ERROR(GrowKeeping(&vcodes_, rows * CodeBytes(), had * CodeBytes()));
    ATP_RETURN_IF_ERROR(GrowKeeping(&kparams_, size_t(want) * KeyParamBytes(), size_t(groups_) * KeyParamBytes()));
    return GrowKeeping(&vparams_, rows * ValueParamBytes(), had * ValueParamBytes());
  }

  // Packs the groups complete at len tokens (their exact rows stored, room reserved).
  void Pack(int64_t len) {
    const int64_t want = GroupsAt(len), G = p_.group;
    if (want <= groups_) return;
    cuda::KiviPack(exact_.k(), exact_.v(), groups_ * G - exact_.first(), int(want - groups_), Packed(true),
                   Packed(false), groups_ * G, nullptr);
    groups_ = want;
  }

  // What a query at `last` sees: packed groups, then exact rows (block G, window R - 1).
  cuda::DecodeQuery View(int64_t last) override {
    cuda::DecodeQuery q;
    q.k = exact_.k(), q.v = exact_.v(), q.pos = last;
    cuda::Visibility& vis = q.vis;
    vis.first = exact_.first(), vis.block = p_.group, vis.window = p_.residual - 1;
    vis.pk = Packed(true), vis.pv = Packed(false), vis.rows_per_block = p_.group;
    vis.last_pre = cuda::CompressedBlocks(vis.block, vis.window, last) * vis.rows_per_block;
    return q;
  }

  cuda::DeviceRows Packed(bool keys) const {
    cuda::DeviceRows r;
    r.fmt = p_.packed(), r.dim = shape().head_dim, r.n_kv = shape().n_kv_heads;
    r.group = p_.group, r.channel_params = keys;
    r.elems = (keys ? kcodes_ : vcodes_).get(), r.scales = (keys ? kparams_ : vparams_).get();
    return r;
  }

  Params p_;
  int64_t groups_ = 0;     // token groups packed (positions [0, groups_ * G))
  cuda::ExactTail exact_;  // from the first position not yet packed
  DeviceArray<uint8_t> kcodes_, vcodes_, kparams_, vparams_;
};

}  // namespace

Result<std::shared_ptr<KvPolicyFactory>> MakeCudaKiviFactory(const PolicySpec& canon, const std::string& describe) {
  CudaKiviPolicy::Params p;
  ATP_ASSIGN_OR_RETURN(std::string bits, canon.Choice("bits", "2", {"2", "4", "8"}));
  p.bits = std::stoi(bits);
  ATP_ASSIGN_OR_RETURN(p.group, canon.Int("group", 32, 1, 1 << 16));
  if (p.group % 8 != 0)
    return Status::Unsupported("kv policy '" + describe + "' has no CUDA kernels; --device cuda supports kivi with group "
                               "a multiple of 8 dividing head_dim");
  ATP_ASSIGN_OR_RETURN(p.residual, canon.Int("residual", 128, 0, 1 << 24));
  ATP_ASSIGN_OR_RETURN(DType dt, canon.Dtype("dtype", DType::kF32));
  p.exact = cuda::ExactFormat(dt);
  return cuda::MakeDevicePolicyFactory<CudaKiviPolicy>(p, describe);
}

}  // namespace atp
