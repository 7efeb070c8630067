// One request in flight between two threads: the scheduler thread pushes the tokens of its choices
// (one sequence each) through the SeqRequest callbacks, turned into text here, stop strings included,
// and the HTTP handler thread waits for them. Shared by both through a shared_ptr, so either may leave first.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "engine/scheduler.h"
#include "server/metrics.h"
#include "engine/text_stream.h"

namespace atp {

class Session {
 public:
  using Clock = std::chrono::steady_clock;
  // `choices` sequences, numbered from 0. metrics receives the time to first token of the request
  // (from `arrival`) and the gaps between tokens of each choice.
  Session(const Tokenizer& tok, std::vector<std::string> stop, int choices, ServerMetrics& metrics, Clock::time_point arrival);

  // The callbacks of choice `choice`'s SeqRequest (scheduler thread).
  bool OnToken(int choice, const TokenEvent& ev);
  void OnFinish(int choice, const std::string& reason, const Status& error);

  struct Piece {
    int choice = 0;
    std::string text;                // text made final by this piece (may be empty)
    // The tokens whose text begins inside the returned text, once that text is final: only these have
    // their logprobs reported. A token that begins inside a stop string (or after it) never appears.
    std::vector<TokenEvent> tokens;
    int generated = 0;               // tokens sampled (usage counts them all, those of a stop string too)
    bool last = false;               // the choice's last piece: finish_reason is set
    std::string finish_reason;       // "stop", "length" or "cancelled" ("" with an error)
  };
  struct Update {
    std::vector<Piece> pieces;
    bool finished = false;   // every choice has finished
    bool cancelled = false;  // a choice was cancelled
    Status error;            // the first error of any choice
  };
  // Handler thread: waits up to `timeout` for news (or, with until_finished, for the end) and takes
  // all of it.
  Update Wait(std::chrono::milliseconds timeout, bool until_finished = false);
  bool finished() const;
  // For the request log, from any thread: tokens generated so far (all choices), and the seconds from
  // arrival to the first of them (negative before it).
  int tokens() const { return tokens_.load(); }
  double ttft() const { return ttft_.load(); }

 private:
  // Scheduler thread only.
  struct Choice {
    explicit Choice(const Tokenizer& tok, const std::vector<std::string>& stop) : text(tok, stop) {}
    TextStream text;
    std::deque<std::pair<size_t, TokenEvent>> held;  // tokens by the offset where their text begins
    bool stopped = false;                            // a stop string matched
    Clock::time_point last_token;
    int tokens = 0;
  };
  // Moves the held tokens whose text begins before `end` into p.
  static void Release(Choice& c, size_t end, Piece* p);
  void Push(Piece p, bool finishing, const std::string& reason, const Status& error);

  std::vector<Choice> choices_;
  ServerMetrics& metrics_;
  const Clock::time_point arrival_;
  bool first_token_seen_ = false;  // (scheduler thread only)
  std::atomic<int> tokens_{0};      // all choices; written by the scheduler thread only
  std::atomic<double> ttft_{-1.0};  // likewise

  mutable std::mutex mu_;
  std::condition_variable cv_;
  Update pending_;  // not yet taken by Wait
  int finished_choices_ = 0;
};

}  // namespace atp
