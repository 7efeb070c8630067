// `atp serve`: the OpenAI-compatible HTTP server (src/server) over one model, until SIGTERM or SIGINT,
// which stop new requests, let in-flight ones finish (up to --shutdown-timeout) and exit 0. A second
// signal while draining exits at once, with 128 + the signal's number.
#include <unistd.h>

#include <cerrno>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <thread>
#include <vector>

#include "cli/common.h"
#include "format/basis_file.h"
#include "server/http_server.h"

namespace atp::cli {

namespace {

// The signal handler only writes to this pipe; a plain thread reads it and shuts the server down.
// (Blocking the signals instead would not do: OpenBLAS starts its threads before main.)
int g_wake[2] = {-1, -1};
std::atomic<int> g_signals{0};
void OnSignal(int sig) {
  if (g_signals.fetch_add(1) > 0) {  // the second: no more waiting (write and _exit are async-signal-safe)
    static const char msg[] = "atp serve: second signal, exiting without draining\n";
    (void)!write(STDERR_FILENO, msg, sizeof msg - 1);
    _exit(128 + sig);
  }
  const char c = 's';
  (void)!write(g_wake[1], &c, 1);
}

// "1073741824", "64M", "1G", "1.5GiB", "512k": powers of 1024.
Result<size_t> ParseBytes(const std::string& text) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  std::string unit = text.substr(used);
  if (!unit.empty() && (unit.back() == 'B' || unit.back() == 'b')) unit.pop_back();
  if (unit.size() == 2 && (unit[1] == 'i' || unit[1] == 'I')) unit.pop_back();
  const std::string units = "KMGT";
  double scale = 1;
  if (unit.size() == 1 && units.find(char(std::toupper(unit[0]))) != std::string::npos)
    scale = double(size_t(1) << (10 * (units.find(char(std::toupper(unit[0]))) + 1)));
  else if (!unit.empty())
    used = 0;
  if (used == 0 || !(v > 0)) return Status::InvalidArgument("--kv-memory: '" + text + "' is not a size such as 512M or 2G");
  return size_t(v * scale);
}

}  // namespace

void AddServe(CLI::App& app, Runner* run) {
  struct Opts {
    CommonFlags f;
    ServerOptions s;
    std::string kv_memory = "1G";
    double shutdown_timeout = 30;
    double request_timeout = 10;
    std::vector<std::string> kv_bases;
    std::string log_format = "text";
    std::vector<std::string> names;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("serve", "OpenAI-compatible HTTP server with continuous batching");
  AddModelFlags(cmd, &o->f);
  cmd->remove_option(cmd->get_option("--json"));
  cmd->add_option("--host", o->s.host, "address to listen on")->capture_default_str();
  cmd->add_option("--port", o->s.port, "port to listen on (0: any free port)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  cmd->add_option("--kv-memory", o->kv_memory, "KV cache budget, e.g. 512M, 4G")->capture_default_str();
  cmd->add_option("--max-batch-tokens", o->s.scheduler.max_batch_tokens, "tokens per forward pass (decode + prefill chunks)")
      ->capture_default_str();
  cmd->add_option("--max-seqs", o->s.scheduler.max_seqs, "sequences running at once")->capture_default_str();
  cmd->add_option("--max-queue", o->s.scheduler.max_queue, "requests waiting for admission before 429")->capture_default_str();
  o->s.scheduler.prefix_caching = true;
  cmd->add_flag("!--no-prefix-caching", o->s.scheduler.prefix_caching,
                "turn off automatic prefix caching (on by default: whole 64-token blocks of KV stay in the pool's "
                "free room, and prompts that start with them skip their prefill; dense and mx policies on the CPU; "
                "off with --device cuda)");
  cmd->add_option("--name", o->names,
                  "model id reported by /v1/models (default: the directory name); more names, comma-separated or "
                  "repeated, are aliases that requests may use")
      ->delimiter(',');
  cmd->add_option("--api-key", o->s.api_key,
                  "require 'Authorization: Bearer KEY' on /v1/* and /(de)tokenize (default: $ATP_API_KEY; none: open)");
  cmd->add_option("--shutdown-timeout", o->shutdown_timeout, "seconds in-flight requests get on SIGTERM/SIGINT")
      ->capture_default_str();
  cmd->add_option("--max-connections", o->s.gate.max_connections, "connections open at once; more are answered 503")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--max-connections-per-client", o->s.gate.max_per_client,
                  "connections open at once from one client address; more are answered 503")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--request-timeout", o->request_timeout,
                  "seconds a connection gets to deliver a whole request (also the keep-alive idle limit)")
      ->check(CLI::Range(0.1, 3600.0))
      ->capture_default_str();
  cmd->add_option("--kv-basis", o->kv_bases,
                  "NAME=PATH: a lowrank basis file requests may select with kv \"lowrank:...,basis=NAME\" "
                  "(requests never name paths; repeatable)");
  cmd->add_option("--log-format", o->log_format, "access log on stderr, a line per request: text, json or off")
      ->check(CLI::IsMember({"text", "json", "off"}))
      ->capture_default_str();
  cmd->callback([o, run] {
    *run = [o]() -> int {
      if (pipe(g_wake) != 0) return Fail("serve", Status::IOError("pipe failed"));
      struct sigaction sa {};
      sa.sa_handler = OnSignal;
      sa.sa_flags = SA_RESTART;
      sigaction(SIGINT, &sa, nullptr);
      sigaction(SIGTERM, &sa, nullptr);

      auto bytes = ParseBytes(o->kv_memory);
      if (!bytes.ok()) return Fail("serve", bytes.status());
      auto l = Load(o->f, true);
      if (!l.ok()) return Fail("serve", l.status());
      auto chat = LoadChatTemplate(o->f.model, *l);
      if (!chat.ok()) return Fail("serve", chat.status());
      const bool default_template = chat->is_default();
      ServerOptions& s = o->s;
      s.default_kv = o->f.kv;
      // Requests build their own policies from their kv strings: on the GPU, its policies.
      s.parse_kv = KvParserFor(o->f.device);
      // The GPU policies' rows are not in pages, so none of them shares: no lookups to count.
      if (o->f.device != "cpu") s.scheduler.prefix_caching = false;
      s.scheduler.context = o->f.ctx;
      s.scheduler.kv_memory = *bytes;
      s.shutdown_timeout = std::chrono::milliseconds(int64_t(o->shutdown_timeout * 1000));
      s.gate.request_timeout = std::chrono::milliseconds(int64_t(o->request_timeout * 1000));
      s.log_format = o->log_format == "json" ? LogFormat::kJson : o->log_format == "off" ? LogFormat::kOff : LogFormat::kText;
      for (const std::string& b : o->kv_bases)
        if (Status st = AddKvBasis(b, &s.kv_bases); !st.ok()) return Fail("serve", st);
      // The model's own calibrated basis (`atp calibrate`'s default output) is registered as "model".
      if (const std::string own = DefaultKvBasisPath(o->f.model); !s.kv_bases.count("model") && std::filesystem::is_regular_file(own))
        (void)AddKvBasis("model=" + own, &s.kv_bases);
      for (const std::string& name : o->names) {
        if (name.empty()) return Fail("serve", Status::InvalidArgument("--name: an empty model name"));
        (s.model_name.empty() ? s.model_name : s.model_aliases.emplace_back()) = name;
      }
      if (s.api_key.empty())
        if (const char* key = std::getenv("ATP_API_KEY")) s.api_key = key;
      if (s.model_name.empty()) s.model_name = std::filesystem::path(o->f.model).lexically_normal().filename();
      if (s.model_name.empty()) s.model_name = std::filesystem::path(o->f.model).parent_path().filename();
      auto server = HttpServer::Create(*l->model, *l->tokenizer, std::move(chat).value(), s);
      if (!server.ok()) return Fail("serve", server.status());
      auto port = (*server)->Bind();
      if (!port.ok()) return Fail("serve", port.status());
      const auto& so = (*server)->scheduler().options();
      // One write: whoever watches stderr for the address (a supervisor, the tests) reads the whole line.
      std::ostringstream banner;
      banner << "atp serve: http://" << s.host << ":" << *port << " model " << s.model_name << ", kv " << s.default_kv
             << ", context " << so.context << ", kv-memory " << (*bytes >> 20) << " MiB, max-batch-tokens "
             << so.max_batch_tokens << ", max-seqs " << so.max_seqs << ", max-queue " << so.max_queue
             << (so.prefix_caching ? ", prefix caching" : "")
             << (default_template ? ", default chat template" : "") << (s.api_key.empty() ? "" : ", API key required")
             << "\n";
      std::cerr << banner.str() << std::flush;
      const size_t full = (*server)->scheduler().Prepare(*l->kv);
      std::cerr << "atp serve: a full-context sequence holds " << (full >> 10) << " KiB of KV under " << l->kv->Describe()
                << ": at least " << *bytes / std::max<size_t>(full, 1) << " fit in --kv-memory" << std::endl;

      std::thread watcher([&] {
        char c = 0;
        while (read(g_wake[0], &c, 1) < 0 && errno == EINTR) {
        }
        if (c != 's') return;
        std::cerr << "atp serve: draining (up to " << o->shutdown_timeout << " s; a second signal exits at once)" << std::endl;
        (*server)->Shutdown();
      });
      const Status st = (*server)->Serve();
      const char quit = 'q';  // wakes the watcher when Serve ended without a signal
      (void)!write(g_wake[1], &quit, 1);
      watcher.join();
      if (!st.ok()) return Fail("serve", st);
      std::cerr << "atp serve: stopped" << std::endl;
      return 0;
    };
  });
}

}  // namespace atp::cli
