// KIVI with rows in device memory: every token's keys quantized per channel over token groups of
// G, values per token over channel groups of G, b bits, f16 scales and zeros, the newest R rows
// exact (kv/kivi_codec.h). A group is packed (cuda::KiviPack, the CPU encoders' codes bit for bit)
// once G rows lie before the newest R, and a query sees packed groups and exact rows through
// cuda::Visibility: block G, window R - 1, one packed row per position. Bytes() counts what the CPU
// store holds: the exact rows still read, codes, per-group key and per-row value parameters.
#include "cuda/kivi_policy.h"

#include "cuda/device_policy.h"

namespace atp {

namespace {

using cuda::KvFormat;

class CudaKiviPolicy : public cuda::DevicePolicy {
 public:
  struct Params {
    int bits = 2, group = 32, residual = 128;
    KvFormat exact = KvFormat::kF32;
  };
  CudaKiviPolicy(const KvShape& s, const Params& p)
      : DevicePolicy(s, "kivi"), p_(p), exact_(p.exact, s.head_dim, s.n_kv_heads),
        packed_(p.bits, p.group, s.head_dim, s.n_kv_heads) {}
  static Status CheckShape(const KvShape& s, const Params& p) {
    if (p.group % 8 != 0 || s.head_dim % p.group != 0)
      return Status::Unsupported("cuda kivi: group=" + std::to_string(p.group) +
                                 " must be a multiple of 8 dividing head_dim " + std::to_string(s.head_dim));
    return cuda::CheckAttnShape({s.n_heads, s.n_kv_heads, s.head_dim}, p.exact);
  }

  size_t Bytes() const override {
    return size_t(exact_.Bytes(Length()) + packed_.Bytes(groups_));
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

  // Token groups packed once len tokens are in: those before the newest R rows.
  int64_t GroupsAt(int64_t len) const { return len >= p_.residual ? (len - p_.residual) / p_.group : 0; }

  // Room for the groups packed at len tokens (the packed ones kept), so that Pack moves no buffer.
  Status ReservePacked(int64_t len) {
    const int64_t want = GroupsAt(len);
    if (want <= groups_) return Status::Ok();
    return packed_.Reserve(want, groups_);
  }

  // Packs the groups complete at len tokens (their exact rows stored, room reserved).
  void Pack(int64_t len) {
    const int64_t want = GroupsAt(len), G = p_.group;
    if (want <= groups_) return;
    cuda::KiviPack(exact_.k(), exact_.v(), groups_ * G - exact_.first(), int(want - groups_), packed_.rows(true),
                   packed_.rows(false), groups_ * G, nullptr);
    groups_ = want;
  }

  // What a query at `last` sees: packed groups, then exact rows (block G, window R - 1).
  cuda::DecodeQuery View(int64_t last) override {
    cuda::DecodeQuery q;
    q.k = exact_.k(), q.v = exact_.v(), q.pos = last;
    cuda::Visibility& vis = q.vis;
    vis.first = exact_.first(), vis.block = p_.group, vis.window = p_.residual - 1;
    vis.pk = packed_.rows(true), vis.pv = packed_.rows(false), vis.rows_per_block = p_.group;
    vis.last_pre = cuda::CompressedBlocks(vis.block, vis.window, last) * vis.rows_per_block;
    return q;
  }

  Params p_;
  int64_t groups_ = 0;     // token groups packed (positions [0, groups_ * G))
  cuda::ExactTail exact_;  // from the first position not yet packed
  cuda::KiviRows packed_;  // groups [0, groups_)
};

}  // namespace

Result<std::shared_ptr<KvPolicyFactory>> MakeCudaKiviFactory(const KiviParams& k, const std::string& describe) {
  if (k.group % 8 != 0)
    return Status::Unsupported("kv policy '" + describe + "' has no CUDA kernels; --device cuda supports kivi with group "
                               "a multiple of 8 dividing head_dim");
  return cuda::MakeDevicePolicyFactory<CudaKiviPolicy>({k.bits, k.group, k.residual, cuda::ExactFormat(k.dtype)}, describe);
}

}  // namespace atp
