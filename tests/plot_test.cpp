// The report figures checked as a reader would: each SVG (synthetic, the ones `atp eval` and
// `atp analyze` write for ref-5m, and `atp plot serving`'s of a server_bench.py report) renders to PNG with rsvg-convert, and its geometry, read back from
// the SVG text, holds up: every text box, marker and line point inside the canvas, no two text boxes
// overlapping, no text over a marker. Text boxes are estimated independently of the renderer's
// layout: width 0.6 x font-size per character, ascent 0.8 and descent 0.25 of the font size
// (DejaVu Sans, rsvg's sans-serif here, averages ~0.55 em per character and descends 0.24 em).
#include <gtest/gtest.h>

#include <regex>

#include "eval/serving_plot.h"
#include "eval/svg_plot.h"
#include "eval/sweep.h"
#include "test_util.h"

namespace atp {
namespace {

using testing::RunAtp;
using testing::TempDir;

struct Rect {
  double x0, y0, x1, y1;
  std::string what;
};

double Attr(const std::string& attrs, const std::string& name, double fallback = NAN) {
  std::smatch m;
  if (std::regex_search(attrs, m, std::regex("(^|\\s)" + name + "=\"([-0-9.eE]+)\""))) return std::stod(m[2]);
  return fallback;
}

std::string StrAttr(const std::string& attrs, const std::string& name) {
  std::smatch m;
  return std::regex_search(attrs, m, std::regex("(^|\\s)" + name + "=\"([^\"]*)\"")) ? m[2].str() : "";
}

std::vector<std::pair<double, double>> Points(const std::string& attrs) {
  std::vector<std::pair<double, double>> p;
  std::stringstream ss(StrAttr(attrs, "points"));
  std::string xy;
  while (ss >> xy) {
    const size_t c = xy.find(',');
    p.push_back({std::stod(xy.substr(0, c)), std::stod(xy.substr(c + 1))});
  }
  return p;
}

std::string Unescape(std::string s) {
  for (auto [from, to] : {std::pair{"&lt;", "<"}, {"&gt;", ">"}, {"&quot;", "\""}, {"&amp;", "&"}})
    for (size_t i = s.find(from); i != std::string::npos; i = s.find(from, i + 1)) s.replace(i, std::strlen(from), to);
  return s;
}

// What the SVG draws, as boxes: texts, markers (class="marker") and line points.
struct Geometry {
  double width = 0, height = 0;
  std::vector<Rect> texts, markers, points;
  std::vector<std::string> strings;  // every text's content
  int polylines = 0;
};

Geometry Parse(const std::string& svg) {
  Geometry g;
  double root_font_size = 16;  // SVG's default, unless the root sets one that texts inherit
  const std::regex element("<(svg|text|circle|polygon|polyline|line|rect)\\b([^>]*)>");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), element); it != std::sregex_iterator(); ++it) {
    const std::string tag = (*it)[1], a = (*it)[2];
    if (tag == "svg") {
      g.width = Attr(a, "width");
      g.height = Attr(a, "height");
      root_font_size = Attr(a, "font-size", root_font_size);
    } else if (tag == "text") {
      const size_t start = size_t(it->position() + it->length()), end = svg.find("</text>", start);
      const std::string t = Unescape(svg.substr(start, end - start));
      size_t chars = 0;
      for (unsigned char c : t) chars += (c & 0xC0) != 0x80;
      const double x = Attr(a, "x"), y = Attr(a, "y"), fs = Attr(a, "font-size", root_font_size), w = 0.6 * fs * double(chars);
      const std::string anchor = StrAttr(a, "text-anchor");
      const double x0 = anchor == "middle" ? x - w / 2 : anchor == "end" ? x - w : x;
      Rect r{x0, y - 0.8 * fs, x0 + w, y + 0.25 * fs, "text '" + t + "'"};
      if (StrAttr(a, "transform").find("rotate(-90") != std::string::npos)  // about (x, y): a column
        r = {x - 0.8 * fs, y - (x0 + w - x), x + 0.25 * fs, y + (x - x0), r.what + " (rotated)"};
      g.texts.push_back(r);
      g.strings.push_back(t);
    } else if (tag == "circle") {
      const double x = Attr(a, "cx"), y = Attr(a, "cy"), rad = Attr(a, "r");
      g.markers.push_back({x - rad, y - rad, x + rad, y + rad, "circle"});
    } else if (tag == "polygon" || tag == "polyline") {
      auto p = Points(a);
      Rect r{1e300, 1e300, -1e300, -1e300, tag};
      for (auto [x, y] : p) {
        r = {std::min(r.x0, x), std::min(r.y0, y), std::max(r.x1, x), std::max(r.y1, y), tag};
        g.points.push_back({x, y, x, y, tag + " point"});
      }
      if (tag == "polygon") g.markers.push_back(r);
      g.polylines += tag == "polyline";
    } else if (tag == "line") {
      g.points.push_back({Attr(a, "x1"), Attr(a, "y1"), Attr(a, "x1"), Attr(a, "y1"), "line end"});
      g.points.push_back({Attr(a, "x2"), Attr(a, "y2"), Attr(a, "x2"), Attr(a, "y2"), "line end"});
    } else if (tag == "rect") {
      const double x = Attr(a, "x", 0), y = Attr(a, "y", 0);
      g.points.push_back({x, y, x + Attr(a, "width"), y + Attr(a, "height"), "rect"});
    }
  }
  return g;
}

std::string Where(const Rect& r) {
  char b[160];
  std::snprintf(b, sizeof b, " at [%.1f,%.1f]-[%.1f,%.1f]", r.x0, r.y0, r.x1, r.y1);
  return r.what + b;
}

bool Overlap(const Rect& a, const Rect& b) { return a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1; }

// What a reader would object to: anything outside the canvas, overlapping texts, text over a
// marker, or a coordinate that is not a number (which would hide the others).
std::vector<std::string> Problems(const std::string& svg) {
  const Geometry g = Parse(svg);
  std::vector<std::string> p;
  if (!(g.width > 0 && g.height > 0)) p.push_back("no canvas size");
  if (g.texts.empty()) p.push_back("no text");
  for (auto* set : {&g.texts, &g.markers, &g.points})
    for (const Rect& r : *set) {
      if (!(std::isfinite(r.x0) && std::isfinite(r.y0) && std::isfinite(r.x1) && std::isfinite(r.y1)))
        p.push_back(r.what + ": a coordinate is not a number");
      else if (!(r.x0 >= 0 && r.y0 >= 0 && r.x1 <= g.width && r.y1 <= g.height))
        p.push_back(Where(r) + " is outside the canvas");
    }
  for (size_t i = 0; i < g.texts.size(); ++i) {
    for (size_t j = i + 1; j < g.texts.size(); ++j)
      if (Overlap(g.texts[i], g.texts[j])) p.push_back(Where(g.texts[i]) + " overlaps " + Where(g.texts[j]));
    for (const Rect& m : g.markers)
      if (Overlap(g.texts[i], m)) p.push_back(Where(g.texts[i]) + " covers a marker" + Where(m));
  }
  return p;
}

void ExpectReadable(const std::string& svg, const std::string& name) {
  std::string all;
  for (auto& q : Problems(svg)) all += "\n  " + q;
  EXPECT_TRUE(all.empty()) << name << ":" << all;
}

// rsvg-convert renders the figure to a PNG (Debian's librsvg2-bin: scripts/setup.sh --test installs it).
void ExpectRenders(const std::string& svg_path) {
  const std::string png = svg_path + ".png";
  const int st = std::system(("rsvg-convert -o '" + png + "' '" + svg_path + "' 2>/dev/null").c_str());
  ASSERT_EQ(st, 0) << "rsvg-convert failed on " << svg_path;
  const std::string bytes = testing::Slurp(png);
  ASSERT_GT(bytes.size(), 1000u) << png;
  EXPECT_EQ(bytes.substr(1, 3), "PNG") << png;
}

#define SKIP_WITHOUT_RSVG()                                                                           \
  do {                                                                                                \
    if (std::system("command -v rsvg-convert >/dev/null 2>&1") != 0)                                  \
      GTEST_SKIP() << "rsvg-convert not found (Debian package librsvg2-bin: scripts/setup.sh --test)"; \
  } while (0)

// The checker itself finds what the issue saw in the old plots: a legend running off the canvas,
// a legend over the next panel's axis label, a marker cut at the edge.
TEST(SvgPlot, CheckerFindsWhatAReaderWould) {
  const std::string bad =
      "<svg width=\"200\" height=\"100\" font-size=\"11\">\n"
      "<text x=\"180\" y=\"20\">snapkv</text>\n"                                    // runs off the right edge
      "<text x=\"10\" y=\"60\">legend</text><text x=\"20\" y=\"62\">label</text>\n"  // overlap
      "<circle cx=\"2\" cy=\"90\" r=\"3\"/>\n"                                     // cut at the left edge
      "</svg>\n";
  auto p = Problems(bad);
  ASSERT_EQ(p.size(), 3u);
  EXPECT_NE(p[0].find("'snapkv'"), std::string::npos) << p[0];
  EXPECT_NE(p[1].find("circle"), std::string::npos) << p[1];
  EXPECT_NE(p[2].find("overlaps"), std::string::npos) << p[2];
  EXPECT_TRUE(Problems("<svg width=\"200\" height=\"100\"><text x=\"10\" y=\"20\" font-size=\"11\">ok</text></svg>").empty());
}

// Outliers, points at the axis ends, coincident points, labelled points, long names, a 128-point line.
TEST(SvgPlot, SyntheticFigureIsReadable) {
  SKIP_WITHOUT_RSVG();
  PlotPanel q{"Perplexity vs KV bytes/token", "KV bytes per token (log scale)", "perplexity (lower is better)", {}, true, -1, true};
  q.series.push_back({"dense", {6144, 3072}, {43.1, 43.1}, {"f32", "bf16"}, false});
  q.series.push_back({"mx", {1584, 1584, 1584, 1200, 1200, 816, 960}, {43.3, 43.2, 43.2, 43.3, 43.25, 44.9, 43.4},
                      {"fp8_e4m3", "fp8_e5m2", "int8", "fp6_e2m3", "fp6_e3m2", "fp4", "nvfp4"}, false});
  q.series.push_back({"atp (rank)", {2959, 3632, 4979}, {211.3, 190.2, 160.7}, {"8", "16", "32"}, true});
  q.series.push_back({"a very long method name that needs its own legend width (budget)", {776, 1551, 3102},
                      {47.0, 44.1, 43.4}, {"64", "128", "256"}, true});
  for (int i = 0; i < 8; ++i)
    q.series.push_back({"family " + std::to_string(i), {800.0 + 500 * i}, {44.0 + 0.2 * i}, {"x"}, false});
  PlotPanel s{"Spectrum", "rank r (log scale)", "energy", {}, true};
  s.y_min = 0, s.y_max = 1;
  s.y_guides = {{0.9, "90%"}, {0.99, "99%"}, {1.5, "out of range: not drawn"}};
  PlotSeries line{"layer 0", {}, {}, {}, true};
  for (int r = 1; r <= 128; ++r) line.x.push_back(r), line.y.push_back(1 - std::exp(-r / 20.0));
  s.series.push_back(line);
  const std::string svg = RenderSvg({"A figure title naming model, text and machine", {"a subtitle line"}, {q, s}});
  ExpectReadable(svg, "synthetic");
  const Geometry g = Parse(svg);
  auto has = [&](const std::string& t) { return std::find(g.strings.begin(), g.strings.end(), t) != g.strings.end(); };
  // ATP's 160-211 is off the bulk's scale: arrows labelled with the values, and the axis ends near the bulk.
  EXPECT_TRUE(has("8: 211.3")) << svg;
  EXPECT_TRUE(has("32: 160.7")) << svg;
  for (auto& t : g.strings) EXPECT_NE(t, "150") << "the y axis should not stretch to the outliers";
  EXPECT_TRUE(has("fp4") && has("nvfp4") && has("f32")) << "format points are labelled";
  EXPECT_TRUE(has("Pareto frontier") && has("off scale (value shown)"));
  EXPECT_TRUE(has("90%") && has("99%") && !has("out of range: not drawn"));
  // Nice log ticks: 1, 2, 3 or 5 x 10^k; never "-0".
  for (const char* t : {"1000", "2000", "5000", "1", "10", "100"}) EXPECT_TRUE(has(t)) << t;
  for (auto& t : g.strings) EXPECT_NE(t, "-0");
  TempDir d("plot");
  testing::WriteString(d / "synthetic.svg", svg);
  ExpectRenders(d / "synthetic.svg");
}

SweepRow Row(const std::string& method, const std::string& budget, const std::string& policy, double bytes, double ppl) {
  SweepRow r;
  r.entry = {method, budget, policy};
  r.kv = policy;
  r.kv_bytes_per_token = bytes;
  r.ppl = ppl;
  return r;
}

// Series per method: the numeric parameter that varies most is the line; other varying parameters
// it does not determine split the lines; formats are points, never joined.
TEST(SvgPlot, SweepSeriesFollowTheSweptParameter) {
  std::vector<SweepRow> rows = {
      Row("dense", "f32", "dense", 6144, 90.6), Row("dense", "bf16", "dense:dtype=bf16", 3072, 90.6),
      Row("mx", "fp8_e4m3", "mx:fmt=fp8_e4m3", 1584, 90.7), Row("mx", "fp4", "mx:fmt=fp4", 816, 91.8),
      Row("atp", "a", "atp:block=32,rank=16,window=32", 5173, 116.3), Row("atp", "b", "atp:block=32,rank=8,window=32", 3730, 120.8),
      Row("atp", "c", "atp:block=64,rank=32,window=64", 5749, 104.7), Row("atp", "d", "atp:block=64,rank=16,window=64", 4402, 107.7),
      Row("lowrank", "e", "lowrank:rk=32,rv=32,file=B", 3072, 92.3), Row("lowrank", "f", "lowrank:rk=16,rv=16,file=B", 1536, 111.7)};
  auto plots = SweepPlots(rows, {{"model", "../shared/models/ref-5m"}, {"file", "valid.txt"}, {"context", 384},
                                 {"scored_per_window", 128}, {"machine", "CPU X"}, {"host", "h1"}, {"threads", 2}});
  ASSERT_EQ(plots.size(), 1u);  // no accuracy, no speed: one figure of one panel
  EXPECT_EQ(plots[0].first, "quality_vs_bytes.svg");
  const Geometry g = Parse(plots[0].second);
  auto has = [&](const std::string& t) { return std::find(g.strings.begin(), g.strings.end(), t) != g.strings.end(); };
  for (const char* t : {"dense", "mx", "atp block=32,window=32 (rank)", "atp block=64,window=64 (rank)", "lowrank (rk)",
                        "KV compression on ref-5m", "fp4", "bf16"})
    EXPECT_TRUE(has(t)) << t << "\n" << plots[0].second;
  bool machine = false;
  for (auto& t : g.strings) machine |= t.find("CPU X (host h1), 2 threads") != std::string::npos;
  EXPECT_TRUE(machine);
  // Lines: the two atp lines, lowrank's, and the Pareto frontier; dense and mx are points only.
  EXPECT_EQ(g.polylines, 4) << plots[0].second;
  ExpectReadable(plots[0].second, "sweep series");
}

// The figures `atp eval` and `atp analyze` write for a tiny run on ref-5m, and `--replot` redrawing
// the same figures from sweep.json.
TEST(SvgPlot, EvalAndAnalyzeFiguresAreReadable) {
  ATP_SKIP_WITHOUT_SHARED();
  SKIP_WITHOUT_RSVG();
  TempDir out("plot_cli");
  testing::CmdResult r = RunAtp(
      "eval -m '" + testing::kRefModel + "' -f '" + testing::kValidText + "' --retrieval '" + testing::kShared +
      "/data/valid_retrieval.jsonl' -o '" + out.path() + "' --kv dense --kv dense:dtype=bf16 --kv mx:fmt=fp8_e4m3 --kv mx:fmt=fp4"
      " --kv 'snapkv:budget={b}' --kv 'streaming:budget={b}' --kv 'atp:block=16,rank={b},window=16' --budgets 4,8,16"
      " --window-context 48 --scored 8 --max-windows 1 --max-cases 2 --decode-context 32 --decode-tokens 2 --decode-repeats 1 -t 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* f : {"quality_vs_bytes.svg", "speed_vs_bytes.svg"}) {
    const std::string svg = testing::Slurp(out / f);
    ExpectReadable(svg, f);
    ExpectRenders(out / f);
    EXPECT_NE(svg.find("KV compression on ref-5m"), std::string::npos) << f;
  }
  TempDir again("plot_replot");
  std::filesystem::copy_file(out / "sweep.json", again / "sweep.json");
  r = RunAtp("eval --replot '" + again.path() + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* f : {"quality_vs_bytes.svg", "speed_vs_bytes.svg"})
    EXPECT_EQ(testing::Slurp(again / f), testing::Slurp(out / f)) << f << " redrawn from sweep.json differs";
  r = RunAtp("analyze -m '" + testing::kRefModel + "' -f '" + testing::kValidText + "' --window 32 --max-windows 2 --svg '" +
             (out / "spectra.svg") + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ExpectReadable(testing::Slurp(out / "spectra.svg"), "spectra.svg");
  ExpectRenders(out / "spectra.svg");
}

// The figures committed under docs/ (drawn by `atp eval --replot` and `atp analyze`) hold up too.
TEST(SvgPlot, CommittedFiguresAreReadable) {
  SKIP_WITHOUT_RSVG();
  TempDir d("plot_docs");
  int n = 0;
  for (auto& e : std::filesystem::recursive_directory_iterator(ATP_SOURCE_DIR "/docs")) {
    if (e.path().extension() != ".svg") continue;
    ExpectReadable(testing::Slurp(e.path().string()), e.path().string());
    const std::string copy = d / (std::to_string(n++) + ".svg");
    std::filesystem::copy_file(e.path(), copy);
    ExpectRenders(copy);
  }
  EXPECT_GE(n, 5);
}

// A server_bench.py report as the script writes it: four policies (long names) at concurrency 1-8,
// one level without successful requests (nulls), latencies spanning two orders of magnitude.
nlohmann::json ServingReport() {
  nlohmann::json policies = nlohmann::json::array();
  const char* kv[] = {"dense", "mx:fmt=fp8_e4m3", "kivi:bits=4", "atp:block=64,rank=16,window=64"};
  for (int p = 0; p < 4; ++p) {
    nlohmann::json levels = nlohmann::json::array();
    for (int c : {1, 2, 4, 8}) {
      const double tok_s = 100.0 * (1 + 0.1 * p) * std::min(c, 3), ttft = 40.0 * c * (1 + 0.2 * p);
      levels.push_back({{"concurrency", c}, {"requests", std::max(8, 3 * c)}, {"repeats", 3}, {"errors", nlohmann::json::array()},
                        {"tok_s", tok_s}, {"wall_s", 2.5}, {"tokens", 256}, {"ttft_p50_ms", ttft}, {"ttft_p99_ms", 3 * ttft},
                        {"itl_p50_ms", 1000.0 * c / tok_s}, {"itl_p99_ms", 25.0 * c}});
    }
    if (p == 2) levels[3]["tok_s"] = levels[3]["ttft_p50_ms"] = levels[3]["itl_p99_ms"] = nullptr;
    policies.push_back({{"kv", kv[p]}, {"levels", levels}, {"capacity", {{"peak_running", 7}}}});
  }
  return {{"model", "../shared/models/atp-40m"}, {"prompt_words", 48}, {"prompt_tokens", 61}, {"max_tokens", 32},
          {"repeat", 3}, {"cpus", 2}, {"machine", "AMD EPYC 7B13"}, {"host", "h1"},
          {"load_average", {{"before", {1.62, 1.5, 1.8}}, {"after", {2.4, 1.9, 1.9}}}}, {"commit", "abc1234"},
          {"date", "2026-12-06"}, {"policies", policies}};
}

// The serving figures: one series per policy, concurrency on a log2 axis (ticks 1, 2, 4, 8 and no
// others), titles naming model, context, machine and the run's parameters; readable and renderable.
TEST(SvgPlot, ServingFiguresAreReadable) {
  SKIP_WITHOUT_RSVG();
  auto plots = ServingPlots(ServingReport());
  ASSERT_TRUE(plots.ok()) << plots.status().ToString();
  ASSERT_EQ(plots->size(), 3u);
  TempDir d("plot_serving");
  const char* names[] = {"throughput_vs_concurrency.svg", "ttft_vs_concurrency.svg", "itl_vs_concurrency.svg"};
  for (size_t i = 0; i < 3; ++i) {
    auto& [name, svg] = (*plots)[i];
    EXPECT_EQ(name, names[i]);
    ExpectReadable(svg, name);
    const Geometry g = Parse(svg);
    auto has = [&](const std::string& t) { return std::find(g.strings.begin(), g.strings.end(), t) != g.strings.end(); };
    for (const char* t : {"dense", "mx:fmt=fp8_e4m3", "kivi:bits=4", "atp:block=64,rank=16,window=64", "concurrent clients (log2 scale)"})
      EXPECT_TRUE(has(t)) << name << ": '" << t << "' missing\n" << svg;
    EXPECT_FALSE(has("Pareto frontier")) << name;
    if (i == 0) {  // throughput's y ticks are 0, 100, ..., 400: every small number is an x tick
      for (const char* t : {"1", "2", "4", "8"}) EXPECT_TRUE(has(t)) << "x tick " << t << " missing\n" << svg;
      for (const char* t : {"3", "5", "10"}) EXPECT_FALSE(has(t)) << "x tick " << t << " is not a power of 2\n" << svg;
    }
    std::string all;
    for (auto& t : g.strings) all += t + "\n";
    for (const char* t : {"atp serve on atp-40m", "61-token prompt (48 words) + 32 generated tokens", "8-24 requests per level",
                          "median of 3 runs", "AMD EPYC 7B13 (host h1), 2 CPUs, load average 1.6 before / 2.4 after",
                          "commit abc1234, 2026-12-06"})
      EXPECT_NE(all.find(t), std::string::npos) << name << ": '" << t << "' missing\n" << all;
    // One line per policy per panel (two panels for the latencies); kivi's level 8 is null: its line stops at 4.
    EXPECT_EQ(g.polylines, i == 0 ? 4 : 8) << name;
    testing::WriteString(d / name, svg);
    ExpectRenders(d / name);
  }
}

// The committed report of a real run (docs/results/serving-atp40m) redraws readably with today's code.
TEST(SvgPlot, CommittedServingReportRedraws) {
  const std::string path = ATP_SOURCE_DIR "/docs/results/serving-atp40m/serving.json";
  const nlohmann::json report = nlohmann::json::parse(testing::Slurp(path), nullptr, false);
  ASSERT_FALSE(report.is_discarded()) << path;
  auto plots = ServingPlots(report);
  ASSERT_TRUE(plots.ok()) << plots.status().ToString();
  for (auto& [name, svg] : *plots) ExpectReadable(svg, name + " of " + path);
}

// `atp plot serving` writes the same three files beside the JSON (or into -o), and a malformed report
// is one line naming the file and the field.
TEST(SvgPlot, PlotServingCommand) {
  TempDir d("plot_serving_cli");
  testing::WriteString(d / "serving.json", ServingReport().dump(1));
  testing::CmdResult r = RunAtp("plot serving '" + (d / "serving.json") + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto plots = ServingPlots(ServingReport());
  ASSERT_TRUE(plots.ok());
  for (auto& [name, svg] : *plots) EXPECT_EQ(testing::Slurp(d / name), svg) << name;
  r = RunAtp("plot serving '" + (d / "serving.json") + "' -o '" + (d / "out") + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::exists(d.path() + "/out/itl_vs_concurrency.svg"));
  nlohmann::json bad = ServingReport();
  bad["policies"][1]["levels"][2]["ttft_p99_ms"] = "slow";
  testing::WriteString(d / "bad.json", bad.dump());
  r = RunAtp("plot serving '" + (d / "bad.json") + "'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("bad.json: serving results: policies[1].levels[2]: 'ttft_p99_ms' is not a number"), std::string::npos) << r.err;
  bad = ServingReport();
  bad["policies"][0]["levels"][0].erase("concurrency");
  testing::WriteString(d / "bad.json", bad.dump());
  r = RunAtp("plot serving '" + (d / "bad.json") + "'");
  EXPECT_NE(r.err.find("policies[0].levels[0]: 'concurrency' missing"), std::string::npos) << r.err;
  testing::WriteString(d / "bad.json", "{\"results\": []}");
  r = RunAtp("plot serving '" + (d / "bad.json") + "'");
  EXPECT_NE(r.err.find("non-empty \"policies\" array"), std::string::npos) << r.err;
  r = RunAtp("plot");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("subcommand"), std::string::npos) << r.err;
}

TEST(SvgPlot, ReplotErrorsNameTheFile) {
  TempDir d("plot_bad");
  testing::WriteString(d / "sweep.json", "{\"results\": [{\"method\": 3}]}");
  testing::CmdResult r = RunAtp("eval --replot '" + d.path() + "'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("sweep.json: sweep results row 0: 'method'"), std::string::npos) << r.err;
  r = RunAtp("eval -f x.txt");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("-m/--model is required"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace atp
