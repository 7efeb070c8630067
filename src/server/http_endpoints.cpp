// HttpServer's submission of a request's choices, one sequence each. The rest of the server: http_server.cpp.
#include "server/http_server.h"
#include "server/session.h"

namespace atp {

Result<std::vector<uint64_t>> HttpServer::SubmitChoices(const ApiRequest& a, const SeqRequest& sr,
                                                        const std::shared_ptr<Session>& session) {
  std::vector<uint64_t> seqs;
  for (int i = 0; i < a.n; ++i) {
    SeqRequest r = sr;
    // Choices differ, and a seeded request repeats all of them.
    r.sampling.seed = sr.sampling.seed + uint64_t(i);
    r.on_token = [session, i](const TokenEvent& ev) { return session->OnToken(i, ev); };
    r.on_finish = [session, i](const std::string& reason, const Status& error) { session->OnFinish(i, reason, error); };
    auto id = scheduler_->Submit(std::move(r));
    if (!id.ok()) {
      Cancel(seqs);
      return id.status();
    }
    seqs.push_back(*id);
  }
  return seqs;
}

void HttpServer::Cancel(const std::vector<uint64_t>& seqs) {
  for (uint64_t seq : seqs) scheduler_->Cancel(seq);
}

}  // namespace atp
