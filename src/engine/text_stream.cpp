#include "engine/text_stream.h"

#include <algorithm>

namespace atp {

namespace {
// Length of the longest suffix of `text` that is a proper prefix of a stop string.
size_t HeldBack(const std::string& text, const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (auto& s : stops)
    for (size_t n = std::min(s.size() - 1, text.size()); n > hold; --n)
      if (text.compare(text.size() - n, n, s, 0, n) == 0) {
        hold = n;
        break;
      }
  return hold;
}
}  // namespace

std::string TextStream::Push(int32_t id, bool* stopped) {
  pending_ += dec_.Push(id);
  size_t cut = std::string::npos;
  for (auto& s : stop_) cut = std::min(cut, pending_.find(s));
  *stopped = cut != std::string::npos;
  const size_t emit = *stopped ? cut : pending_.size() - HeldBack(pending_, stop_);
  std::string out = pending_.substr(0, emit);
  pending_.erase(0, *stopped ? std::string::npos : emit);
  emitted_ += out.size();
  return out;
}

std::string TextStream::Flush() {
  std::string out = std::move(pending_) + dec_.Flush();
  pending_.clear();
  emitted_ += out.size();
  return out;
}

}  // namespace atp
