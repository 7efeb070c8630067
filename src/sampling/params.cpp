#include "sampling/params.h"

#include <string>

namespace atp {

Status SamplingParams::Validate() const {
  if (!(temperature >= 0 && temperature <= 100)) return Status::InvalidArgument("temperature must be in [0, 100]");
  if (top_k < 0) return Status::InvalidArgument("top_k must be >= 0");
  if (!(top_p > 0 && top_p <= 1)) return Status::InvalidArgument("top_p must be in (0, 1]");
  if (!(min_p >= 0 && min_p <= 1)) return Status::InvalidArgument("min_p must be in [0, 1]");
  if (!(repetition_penalty > 0 && repetition_penalty <= 10))
    return Status::InvalidArgument("repetition_penalty must be in (0, 10]");
  return Status::Ok();
}

Status TokenQuery::Check(int64_t rows) const {
  if (row < 0 || row >= rows)
    return Status::InvalidArgument("token query: row " + std::to_string(row) + " outside the " + std::to_string(rows) +
                                   " logit rows of the last forward pass");
  if (top_logprobs < -1 || top_logprobs > kMaxTopLogprobs)
    return Status::InvalidArgument("token query: top_logprobs must be in [-1, " + std::to_string(kMaxTopLogprobs) + "]");
  return params.Validate();
}

}  // namespace atp
