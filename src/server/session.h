// One request in flight between two threads: the scheduler thread pushes its tokens through the
// SeqRequest callbacks (turned into text here, stop strings included), and the HTTP handler thread
// waits for them. Shared by both through a shared_ptr, so either may leave first.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include "engine/scheduler.h"
#include "server/metrics.h"
#include "engine/text_stream.h"

namespace atp {

class Session {
 public:
  using Clock = std::chrono::steady_clock;
  // metrics receives the time to first token (from `arrival`) and the gaps between tokens.
  Session(const Tokenizer& tok, std::vector<std::string> stop, ServerMetrics& metrics, Clock::time_point arrival);

  // The callbacks of SeqRequest (scheduler thread).
  bool OnToken(const TokenEvent& ev);
  void OnFinish(const std::string& reason, const Status& error);

  struct Piece {
    std::string text;        // text made final by this piece (may be empty)
    bool has_token = false;  // false for the text flushed at the end
    TokenEvent token;
  };
  struct Update {
    std::vector<Piece> pieces;
    bool finished = false;
    std::string finish_reason;  // "stop", "length" or "cancelled" once finished
    Status error;
  };
  // Handler thread: waits up to `timeout` for news (or, with until_finished, for the end) and takes
  // all of it.
  Update Wait(std::chrono::milliseconds timeout, bool until_finished = false);
  bool finished() const;
  // For the request log, from any thread: tokens generated so far, and the seconds from arrival to
  // the first of them (negative before it).
  int tokens() const { return tokens_.load(); }
  double ttft() const { return ttft_.load(); }

 private:
  TextStream text_;
  ServerMetrics& metrics_;
  const Clock::time_point arrival_;
  Clock::time_point last_token_;
  bool stopped_ = false;  // a stop string matched (scheduler thread only)
  std::atomic<int> tokens_{0};      // written by the scheduler thread only
  std::atomic<double> ttft_{-1.0};  // likewise

  mutable std::mutex mu_;
  std::condition_variable cv_;
  Update pending_;  // not yet taken by Wait
  bool finished_ = false;
};

}  // namespace atp
