#include "server/session.h"

namespace atp {

Session::Session(const Tokenizer& tok, std::vector<std::string> stop, ServerMetrics& metrics, Clock::time_point arrival)
    : text_(tok, std::move(stop)), metrics_(metrics), arrival_(arrival) {}

bool Session::OnToken(const TokenEvent& ev) {
  const auto since = [](Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); };
  if (tokens_++ == 0) {
    ttft_ = since(arrival_, ev.time);
    metrics_.ObserveFirstToken(ttft_);
  } else {
    metrics_.ObserveInterToken(since(last_token_, ev.time));
  }
  last_token_ = ev.time;
  Piece p;
  p.text = text_.Push(ev.id, &stopped_);
  p.has_token = true;
  p.token = ev;
  {
    std::lock_guard<std::mutex> lk(mu_);
    pending_.pieces.push_back(std::move(p));
  }
  cv_.notify_all();
  return !stopped_;
}

void Session::OnFinish(const std::string& reason, const Status& error) {
  Piece rest;
  if (!stopped_) rest.text = text_.Flush();
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!rest.text.empty()) pending_.pieces.push_back(std::move(rest));
    pending_.finished = finished_ = true;
    pending_.finish_reason = reason;
    pending_.error = error;
  }
  cv_.notify_all();
}

Session::Update Session::Wait(std::chrono::milliseconds timeout, bool until_finished) {
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait_for(lk, timeout, [&] { return (!until_finished && !pending_.pieces.empty()) || pending_.finished; });
  Update u = std::move(pending_);
  pending_ = Update();
  pending_.finished = finished_;
  pending_.finish_reason = u.finish_reason;
  pending_.error = u.error;
  return u;
}

bool Session::finished() const {
  std::lock_guard<std::mutex> lk(mu_);
  return finished_;
}

}  // namespace atp
