#include "server/session.h"

namespace atp {

Session::Session(const Tokenizer& tok, std::vector<std::string> stop, int choices, ServerMetrics& metrics,
                 Clock::time_point arrival)
    : metrics_(metrics), arrival_(arrival) {
  choices_.reserve(size_t(choices));
  for (int i = 0; i < choices; ++i) choices_.emplace_back(tok, stop);
}

void Session::Release(Choice& c, size_t end, Piece* p) {
  while (!c.held.empty() && c.held.front().first < end) {
    p->tokens.push_back(std::move(c.held.front().second));
    c.held.pop_front();
  }
}

bool Session::OnToken(int choice, const TokenEvent& ev) {
  Choice& c = choices_[size_t(choice)];
  const auto since = [](Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); };
  if (!first_token_seen_) {
    ttft_ = since(arrival_, ev.time);
    metrics_.ObserveFirstToken(ttft_);
  } else if (c.tokens > 0) {
    metrics_.ObserveInterToken(since(c.last_token, ev.time));
  }
  first_token_seen_ = true;
  ++c.tokens;
  ++tokens_;
  c.last_token = ev.time;
  Piece p;
  p.choice = choice;
  p.generated = 1;
  c.held.emplace_back(c.text.offset(), ev);
  p.text = c.text.Push(ev.id, &c.stopped);
  // Text is final up to emitted(); on a stop that is where the stop string begins, and nothing after it
  // will ever be returned: the tokens still held then began inside it.
  Release(c, c.text.emitted(), &p);
  if (c.stopped) c.held.clear();
  Push(std::move(p), false, "", Status::Ok());
  return !c.stopped;
}

void Session::OnFinish(int choice, const std::string& reason, const Status& error) {
  Choice& c = choices_[size_t(choice)];
  Piece p;
  p.choice = choice;
  if (!c.stopped) {
    p.text = c.text.Flush();
    Release(c, SIZE_MAX, &p);
  }
  p.last = true;
  p.finish_reason = reason;
  Push(std::move(p), true, reason, error);
}

void Session::Push(Piece p, bool finishing, const std::string& reason, const Status& error) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    pending_.pieces.push_back(std::move(p));
    if (finishing) {
      pending_.finished = ++finished_choices_ == int(choices_.size());
      pending_.cancelled = pending_.cancelled || reason == "cancelled";
      if (pending_.error.ok()) pending_.error = error;
    }
  }
  cv_.notify_all();
}

Session::Update Session::Wait(std::chrono::milliseconds timeout, bool until_finished) {
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait_for(lk, timeout, [&] { return (!until_finished && !pending_.pieces.empty()) || pending_.finished; });
  Update u = std::move(pending_);
  // What has ended stays ended for the next Wait.
  pending_ = Update();
  pending_.finished = u.finished;
  pending_.cancelled = u.cancelled;
  pending_.error = u.error;
  return u;
}

bool Session::finished() const {
  std::lock_guard<std::mutex> lk(mu_);
  return pending_.finished;
}

}  // namespace atp
