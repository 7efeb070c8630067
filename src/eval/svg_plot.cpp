#include "eval/svg_plot.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>

namespace atp {

namespace {

constexpr double kCharWidth = 0.6;           // em per character: TextWidth's estimate
constexpr double kAscent = 0.8, kDescent = 0.25;  // of the font size, around the baseline
constexpr double kTitleSize = 15, kSubtitleSize = 11, kPanelTitleSize = 12, kAxisSize = 11, kTickSize = 10,
                 kLegendSize = 11, kPointSize = 9;
constexpr double kPlotW = 400, kPlotH = 300, kMarkerR = 3.5;
constexpr double kPad = 0.08;  // of the data range, on each side: markers at the ends stay whole
// Series with more points than this are drawn as lines only (e.g. spectra over 128 ranks).
constexpr size_t kMaxMarkers = 40;

const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                         "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"};
constexpr int kNumColors = sizeof kColors / sizeof *kColors, kNumShapes = 6;

struct Pt {
  double x, y;
};

struct Box {
  double x0, y0, x1, y1;
  bool Overlaps(const Box& o) const { return x0 < o.x1 && o.x0 < x1 && y0 < o.y1 && o.y0 < y1; }
  bool Within(const Box& o) const { return x0 >= o.x0 && x1 <= o.x1 && y0 >= o.y0 && y1 <= o.y1; }
};

std::string F(double v) {  // a coordinate
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", v);
  return b;
}

// A value for people: 4 significant digits, thousands as "k" from 10000 on, never "-0".
std::string Value(double v) {
  if (std::fabs(v) < 1e-12) v = 0;
  char b[32];
  if (std::fabs(v) >= 1e4 && std::fmod(v, 1000) == 0)
    std::snprintf(b, sizeof b, "%gk", v / 1000);
  else
    std::snprintf(b, sizeof b, "%.4g", v);
  return b;
}

std::string Escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else if (c == '"') o += "&quot;";
    else o += c;
  }
  return o;
}

struct Svg {
  std::string s;
  void Text(double x, double y, const std::string& t, double size, char anchor, const std::string& extra = "") {
    s += "<text x=\"" + F(x) + "\" y=\"" + F(y) + "\" font-size=\"" + F(size) + "\" text-anchor=\"" +
         (anchor == 's' ? "start" : anchor == 'm' ? "middle" : "end") + "\"" + extra + ">" + Escape(t) + "</text>\n";
  }
  void Line(double x1, double y1, double x2, double y2, const std::string& style) {
    s += "<line x1=\"" + F(x1) + "\" y1=\"" + F(y1) + "\" x2=\"" + F(x2) + "\" y2=\"" + F(y2) + "\" " + style + "/>\n";
  }
  void Polyline(const std::vector<Pt>& p, const std::string& style) {
    std::string pts;
    for (auto& q : p) pts += F(q.x) + "," + F(q.y) + " ";
    s += "<polyline fill=\"none\" points=\"" + pts + "\" " + style + "/>\n";
  }
  void Polygon(const std::vector<Pt>& p, const std::string& style) {
    std::string pts;
    for (auto& q : p) pts += F(q.x) + "," + F(q.y) + " ";
    s += "<polygon class=\"marker\" points=\"" + pts + "\" " + style + "/>\n";
  }
  // Marker shape `shape` mod kNumShapes, radius r, centred on (x, y); with kNumColors colours the
  // (colour, shape) pairs of styles 0..29 all differ.
  void Marker(int shape, double x, double y, double r, const std::string& color) {
    const std::string style = "fill=\"" + color + "\" stroke=\"white\" stroke-width=\"0.6\"";
    switch (shape % kNumShapes) {
      case 0: s += "<circle class=\"marker\" cx=\"" + F(x) + "\" cy=\"" + F(y) + "\" r=\"" + F(r) + "\" " + style + "/>\n"; break;
      case 1: Polygon({{x - r, y - r}, {x + r, y - r}, {x + r, y + r}, {x - r, y + r}}, style); break;
      case 2: Polygon({{x, y - r}, {x + r, y + r}, {x - r, y + r}}, style); break;
      case 3: Polygon({{x, y - r}, {x + r, y}, {x, y + r}, {x - r, y}}, style); break;
      case 4: Polygon({{x - r, y - r}, {x + r, y - r}, {x, y + r}}, style); break;
      default: Polygon({{x - r, y - r}, {x + r, y}, {x - r, y + r}}, style); break;
    }
  }
  // An arrow pointing up (dir -1) or down (+1) with its tip at (x, tip): a value beyond the axis.
  void Arrow(double x, double tip, int dir, const std::string& color) {
    const double h = 10, r = 4, b = tip - dir * 5;
    Polygon({{x, tip}, {x + r, b}, {x + 1.2, b}, {x + 1.2, tip - dir * h}, {x - 1.2, tip - dir * h}, {x - 1.2, b}, {x - r, b}},
            "fill=\"" + color + "\"");
  }
};

// Splits a polyline at the horizontal band [top, bottom], keeping the pieces inside it.
std::vector<std::vector<Pt>> ClipToBand(const std::vector<Pt>& p, double top, double bottom) {
  std::vector<std::vector<Pt>> out;
  std::vector<Pt> cur;
  auto flush = [&] {
    if (cur.size() >= 2) out.push_back(cur);
    cur.clear();
  };
  for (size_t i = 0; i + 1 < p.size(); ++i) {
    const Pt a = p[i], b = p[i + 1];
    const double dy = b.y - a.y;
    double t0 = 0, t1 = 1;
    if (dy == 0) {
      if (a.y < top || a.y > bottom) t0 = 2;
    } else {
      const double ta = (top - a.y) / dy, tb = (bottom - a.y) / dy;
      t0 = std::max(0.0, std::min(ta, tb));
      t1 = std::min(1.0, std::max(ta, tb));
    }
    if (t0 > t1) {
      flush();
      continue;
    }
    const Pt A{a.x + t0 * (b.x - a.x), a.y + t0 * dy}, B{a.x + t1 * (b.x - a.x), a.y + t1 * dy};
    if (cur.empty() || std::fabs(cur.back().x - A.x) + std::fabs(cur.back().y - A.y) > 1e-6) {
      flush();
      cur.push_back(A);
    }
    cur.push_back(B);
    if (t1 < 1) flush();
  }
  flush();
  return out;
}

// Linear ticks at 1, 2 or 5 x 10^k covering [lo, hi], 4 to 8 of them.
std::vector<double> LinearTicks(double lo, double hi) {
  const double span = hi - lo;
  double step = std::pow(10, std::floor(std::log10(span / 4)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (span / (step * m) <= 8) {
      step *= m;
      break;
    }
  std::vector<double> t;
  for (double v = std::ceil(lo / step) * step; v <= hi + 1e-9 * span; v += step) t.push_back(std::fabs(v) < 1e-9 * step ? 0 : v);
  return t;
}

// Log ticks in [10^lo, 10^hi]: powers of 10 when that gives 4 or more (or the range spans 3
// decades), else the sparsest of {1,2,5}, {1,2,3,5} and {1,...,9} x 10^k giving at least 3.
std::vector<double> LogTicks(double lo, double hi) {
  const std::vector<std::vector<double>> sets = {{1}, {1, 2, 5}, {1, 2, 3, 5}, {1, 2, 3, 4, 5, 6, 7, 8, 9}};
  std::vector<double> t;
  for (size_t k = 0; k < sets.size(); ++k) {
    t.clear();
    for (int d = int(std::floor(lo)) - 1; d <= int(std::ceil(hi)); ++d)
      for (double m : sets[k]) {
        const double v = m * std::pow(10, d), l = std::log10(v);
        if (l >= lo - 1e-9 && l <= hi + 1e-9) t.push_back(v);
      }
    if (t.size() >= (k == 0 ? 4 : 3) || (k == 0 && hi - lo >= 3)) break;
  }
  return t;
}

struct Axis {
  bool log = false;
  double lo = 0, hi = 1;  // in axis space (log10 of the value for a log axis)
  double T(double v) const { return log ? std::log10(v) : v; }
  double Frac(double v) const { return (T(v) - lo) / (hi - lo); }
  std::vector<double> Ticks() const { return log ? LogTicks(lo, hi) : LinearTicks(lo, hi); }
};

struct Point {
  double x, y;
  std::string label;
  int off = 0;  // -1: below the y range, +1: above it
};

// Everything about one panel that layout needs before drawing.
struct Prepared {
  Axis xa, ya;
  std::vector<std::vector<Point>> series;  // per PlotSeries, finite points, x-sorted when joined
  std::vector<double> xticks, yticks;
  double left = 0, width = 0;  // left margin (tick labels, y label) and the whole panel width
  bool any_off = false;
  bool minor_x = true;  // unlabelled minor ticks at 1..9 x 10^k on a log axis (not with PlotPanel::x_ticks)
};

Prepared Prepare(const PlotPanel& p) {
  Prepared r;
  r.xa.log = p.log_x;
  std::vector<double> xs, ys;
  for (auto& s : p.series) {
    std::vector<Point> pts;
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i]) || (p.log_x && s.x[i] <= 0)) continue;
      pts.push_back({s.x[i], s.y[i], i < s.labels.size() ? s.labels[i] : "", 0});
      xs.push_back(r.xa.T(s.x[i]));
      ys.push_back(s.y[i]);
    }
    if (s.joined) std::stable_sort(pts.begin(), pts.end(), [](const Point& a, const Point& b) { return a.x < b.x; });
    r.series.push_back(std::move(pts));
  }
  if (xs.empty()) xs = ys = {0, 1};
  // x: the data's range, padded.
  double a = *std::min_element(xs.begin(), xs.end()), b = *std::max_element(xs.begin(), xs.end());
  if (b - a < 1e-9) a -= 0.5, b += 0.5;
  r.xa.lo = a - kPad * (b - a);
  r.xa.hi = b + kPad * (b - a);
  // y: the bulk of the data (or the fixed ends), padded; outliers beyond it are drawn at the edge.
  std::vector<double> sorted = ys;
  std::sort(sorted.begin(), sorted.end());
  double keep_lo = -INFINITY, keep_hi = INFINITY;
  if (p.clip_outliers && sorted.size() >= 5) {
    auto q = [&](double f) { return sorted[size_t(f * double(sorted.size() - 1) + 0.5)]; };
    const double iqr = std::max(q(0.75) - q(0.25), 0.02 * std::fabs(q(0.5)));
    keep_lo = q(0.25) - 3 * iqr;
    keep_hi = q(0.75) + 3 * iqr;
  }
  a = INFINITY, b = -INFINITY;
  for (double v : sorted)
    if (v >= keep_lo && v <= keep_hi) a = std::min(a, v), b = std::max(b, v);
  if (std::isfinite(p.y_min)) a = p.y_min;
  if (std::isfinite(p.y_max)) b = p.y_max;
  if (b - a < 1e-9 * std::max(1.0, std::fabs(a))) {  // one value: a range around it
    const double h = std::max(0.5, 0.05 * std::fabs(a));
    a -= h;
    b += h;
  }
  r.ya.lo = a - kPad * (b - a);
  r.ya.hi = b + kPad * (b - a);
  for (auto& s : r.series)
    for (auto& pt : s) {
      pt.off = pt.y < a ? -1 : pt.y > b ? 1 : 0;
      r.any_off |= pt.off != 0;
    }
  // Ticks, thinned until their labels stand apart.
  if (p.x_ticks.empty()) {
    r.xticks = r.xa.Ticks();
  } else {
    r.minor_x = false;
    for (double t : p.x_ticks)
      if ((!p.log_x || t > 0) && r.xa.Frac(t) >= -1e-9 && r.xa.Frac(t) <= 1 + 1e-9) r.xticks.push_back(t);
  }
  auto crowded = [&](const std::vector<double>& t) {
    for (size_t i = 0; i + 1 < t.size(); ++i) {
      const double gap = (r.xa.Frac(t[i + 1]) - r.xa.Frac(t[i])) * kPlotW;
      if (gap < (TextWidth(Value(t[i]), kTickSize) + TextWidth(Value(t[i + 1]), kTickSize)) / 2 + 6) return true;
    }
    return false;
  };
  while (r.xticks.size() > 2 && crowded(r.xticks)) {
    std::vector<double> t;
    for (size_t i = 0; i < r.xticks.size(); i += 2) t.push_back(r.xticks[i]);
    r.xticks = t;
  }
  r.yticks = r.ya.Ticks();
  double tick_w = 0;
  for (double t : r.yticks) tick_w = std::max(tick_w, TextWidth(Value(t), kTickSize));
  r.left = 10 + kAxisSize + 10 + tick_w + 6;
  r.width = r.left + kPlotW + 24;
  return r;
}

// The Pareto frontier of all points of a panel (true values, off-scale ones included): the points
// no other point beats with fewer or equal x; drawn as a staircase.
std::vector<Pt> Frontier(const std::vector<std::vector<Point>>& series, int better) {
  std::vector<Point> all;
  for (auto& s : series) all.insert(all.end(), s.begin(), s.end());
  std::sort(all.begin(), all.end(), [&](const Point& a, const Point& b) {
    return a.x != b.x ? a.x < b.x : (better < 0 ? a.y < b.y : a.y > b.y);
  });
  std::vector<Pt> f;
  for (auto& p : all)
    if (f.empty() || (better < 0 ? p.y < f.back().y : p.y > f.back().y)) {
      if (!f.empty()) f.push_back({p.x, f.back().y});  // the step: same quality until x reaches p
      f.push_back({p.x, p.y});
    }
  return f;
}

// Places point labels greedily beside their markers (then farther out, with a leader line),
// inside `area` and clear of every marker and every label already placed; a label with no free
// place is left out.
class LabelPlacer {
 public:
  LabelPlacer(Svg* svg, Box area) : svg_(svg), area_(area) {}
  void AddObstacle(const Box& b) { taken_.push_back(b); }
  void Place(const std::string& text, double px, double py, const std::string& color) {
    const double w = TextWidth(text, kPointSize), h = (kAscent + kDescent) * kPointSize, g = kMarkerR + 2;
    // Right, left, above, below, then the four diagonals; each farther out in steps of 10 px.
    const double dirs[8][2] = {{1, 0}, {-1, 0}, {0, -1}, {0, 1}, {1, -1}, {1, 1}, {-1, -1}, {-1, 1}};
    for (int ring = 0; ring < 5; ++ring)
      for (auto& d : dirs) {
        const double off = g + 10 * ring;
        const double cx = px + d[0] * (off + w / 2), cy = py + d[1] * (off + h / 2);
        const Box b{cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2};
        const Box margin{b.x0 - 2, b.y0 - 1, b.x1 + 2, b.y1 + 1};  // labels never touch: "fp4nvfp4" reads as one
        if (!b.Within(area_) || std::any_of(taken_.begin(), taken_.end(), [&](const Box& t) { return t.Overlaps(margin); }))
          continue;
        taken_.push_back(b);
        if (ring > 0)
          svg_->Line(px + d[0] * g, py + d[1] * g, std::clamp(px, b.x0, b.x1), std::clamp(py, b.y0, b.y1),
                     "stroke=\"#999\" stroke-width=\"0.6\"");
        svg_->Text(b.x0, b.y0 + kAscent * kPointSize, text, kPointSize, 's',
                   " fill=\"" + color + "\" stroke=\"white\" stroke-width=\"2.5\" paint-order=\"stroke\"");
        return;
      }
  }

 private:
  Svg* svg_;
  Box area_;
  std::vector<Box> taken_;
};

}  // namespace

double TextWidth(const std::string& text, double font_size) {
  size_t chars = 0;
  for (unsigned char c : text) chars += (c & 0xC0) != 0x80;
  return kCharWidth * font_size * double(chars);
}

std::string RenderSvg(const PlotFigure& fig) {
  // One style per series name across the figure, in order of first appearance.
  std::map<std::string, int> style;
  struct Entry {
    std::string name;
    bool joined, markers;
  };
  std::vector<Entry> legend;
  bool frontier = false;
  for (auto& p : fig.panels) {
    frontier |= p.better != 0;
    for (auto& s : p.series)
      if (style.emplace(s.name, int(legend.size())).second) legend.push_back({s.name, s.joined, s.x.size() <= kMaxMarkers});
  }
  std::vector<Prepared> prep;
  bool any_off = false;
  for (auto& p : fig.panels) {
    prep.push_back(Prepare(p));
    any_off |= prep.back().any_off;
  }
  if (frontier) legend.push_back({"Pareto frontier", true, false});
  if (any_off) legend.push_back({"off scale (value shown)", false, false});

  // Layout: title block, then the panels side by side, then the legend beside them.
  const double title_h = 14 + kTitleSize * (kAscent + kDescent) + 6 +
                         double(fig.subtitle.size()) * (kSubtitleSize * (kAscent + kDescent) + 4);
  const double top = title_h + kPanelTitleSize + 12, bottom = top + kPlotH;
  double panels_w = 0;
  for (auto& r : prep) panels_w += r.width;
  double legend_w = 0;
  for (auto& e : legend) legend_w = std::max(legend_w, TextWidth(e.name, kLegendSize));
  legend_w += 34 + 12;
  double W = panels_w + legend_w;
  W = std::max(W, TextWidth(fig.title, kTitleSize) + 20);
  for (auto& l : fig.subtitle) W = std::max(W, TextWidth(l, kSubtitleSize) + 20);
  const double legend_h = double(legend.size()) * 16;
  const double H = std::max(bottom + 44, top + legend_h + 10);

  Svg svg;
  svg.s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + F(W) + "\" height=\"" + F(H) + "\" viewBox=\"0 0 " + F(W) + " " +
          F(H) + "\" font-family=\"DejaVu Sans, sans-serif\">\n<rect x=\"0\" y=\"0\" width=\"" + F(W) + "\" height=\"" + F(H) +
          "\" fill=\"white\"/>\n";
  double y = 14 + kTitleSize * kAscent;
  svg.Text(W / 2, y, fig.title, kTitleSize, 'm', " font-weight=\"bold\"");
  y += kTitleSize * kDescent + 6;
  for (auto& l : fig.subtitle) {
    y += kSubtitleSize * kAscent;
    svg.Text(W / 2, y, l, kSubtitleSize, 'm', " fill=\"#444\"");
    y += kSubtitleSize * kDescent + 4;
  }

  double ox = 0;
  for (size_t pi = 0; pi < fig.panels.size(); ++pi) {
    const PlotPanel& P = fig.panels[pi];
    const Prepared& R = prep[pi];
    const double x0 = ox + R.left, x1 = x0 + kPlotW;
    auto X = [&](double v) { return x0 + R.xa.Frac(v) * kPlotW; };
    // Off-scale points sit at the edge of the padding, where no in-range point can be.
    auto Y = [&](const Point& p) {
      return p.off > 0 ? top + 3 : p.off < 0 ? bottom - 3 : bottom - R.ya.Frac(p.y) * kPlotH;
    };
    svg.Text(x0 + kPlotW / 2, top - 10, P.title, kPanelTitleSize, 'm', " font-weight=\"bold\"");
    for (double t : R.yticks) {
      const double ty = bottom - R.ya.Frac(t) * kPlotH;
      svg.Line(x0, ty, x1, ty, "stroke=\"#e4e4e4\"");
      svg.Text(x0 - 6, ty + 0.35 * kTickSize, Value(t), kTickSize, 'e');
    }
    if (R.xa.log && R.minor_x)  // unlabelled minor ticks at 1..9 x 10^k
      for (int d = int(std::floor(R.xa.lo)); d <= int(std::ceil(R.xa.hi)); ++d)
        for (int m = 1; m <= 9; ++m) {
          const double v = m * std::pow(10, d), f = R.xa.Frac(v);
          if (f >= 0 && f <= 1) svg.Line(X(v), bottom, X(v), bottom + 2.5, "stroke=\"#333\"");
        }
    for (double t : R.xticks) {
      const double tx = X(t);
      svg.Line(tx, top, tx, bottom, "stroke=\"#e4e4e4\"");
      svg.Line(tx, bottom, tx, bottom + 4, "stroke=\"#333\"");
      svg.Text(tx, bottom + 4 + kTickSize, Value(t), kTickSize, 'm');
    }
    svg.s += "<rect x=\"" + F(x0) + "\" y=\"" + F(top) + "\" width=\"" + F(kPlotW) + "\" height=\"" + F(kPlotH) +
             "\" fill=\"none\" stroke=\"#333\"/>\n";
    svg.Text(x0 + kPlotW / 2, bottom + 34, P.x_label, kAxisSize, 'm');
    const double yl_x = ox + 10 + kAxisSize * kAscent, yl_y = top + kPlotH / 2;
    svg.Text(yl_x, yl_y, P.y_label, kAxisSize, 'm', " transform=\"rotate(-90," + F(yl_x) + "," + F(yl_y) + ")\"");

    std::vector<std::pair<double, std::string>> guides;  // (screen y, label) of the guides in range
    for (auto& [gy, text] : P.y_guides) {
      const double f = R.ya.Frac(gy);
      if (f < 0 || f > 1) continue;
      guides.push_back({bottom - f * kPlotH, text});
      svg.Line(x0, guides.back().first, x1, guides.back().first, "stroke=\"#888\" stroke-dasharray=\"1.5,2.5\"");
    }
    if (P.better != 0) {
      std::vector<Pt> f;
      for (auto& q : Frontier(R.series, P.better)) f.push_back({X(q.x), bottom - R.ya.Frac(q.y) * kPlotH});
      for (auto& piece : ClipToBand(f, top, bottom))
        svg.Polyline(piece, "stroke=\"#555\" stroke-width=\"1.2\" stroke-dasharray=\"5,3\"");
    }
    LabelPlacer labels(&svg, {x0 + 2, top + 2, x1 - 2, bottom - 2});
    for (size_t si = 0; si < P.series.size(); ++si) {
      const int st = style[P.series[si].name];
      const std::string color = kColors[st % kNumColors];
      const auto& pts = R.series[si];
      if (P.series[si].joined && pts.size() >= 2) {
        std::vector<Pt> line;
        for (auto& p : pts) line.push_back({X(p.x), bottom - R.ya.Frac(p.y) * kPlotH});
        for (auto& piece : ClipToBand(line, top, bottom))
          svg.Polyline(piece, "stroke=\"" + color + "\" stroke-width=\"1.6\"");
      }
      if (pts.size() > kMaxMarkers) continue;
      for (auto& p : pts) {
        if (p.off)
          svg.Arrow(X(p.x), Y(p), p.off > 0 ? -1 : 1, color);
        else
          svg.Marker(st, X(p.x), Y(p), kMarkerR, color);
        const double ext = p.off ? 11 : kMarkerR;
        labels.AddObstacle({X(p.x) - ext, Y(p) - ext, X(p.x) + ext, Y(p) + ext});
      }
    }
    for (auto& [gy, text] : guides) labels.Place(text, x0 + 3 - (kMarkerR + 2), gy, "#555");  // at the left edge
    // Labels: none where every point has the same value (they would only stack on one line),
    // except off-scale values. Off-scale values first (they carry a number the axis cannot show), then the
    // points of marker-only series (their names live only in the labels), then the rest.
    std::set<double> values;
    for (auto& pts : R.series)
      for (auto& p : pts) values.insert(p.y);
    const bool constant = values.size() == 1;
    for (int pass = 0; pass < (constant ? 1 : 3); ++pass)
      for (size_t si = 0; si < P.series.size(); ++si) {
        if (R.series[si].size() > kMaxMarkers) continue;
        const std::string color = kColors[style[P.series[si].name] % kNumColors];
        for (auto& p : R.series[si]) {
          const int rank = p.off ? 0 : P.series[si].joined ? 2 : 1;
          if (rank != pass || (p.label.empty() && !p.off)) continue;
          labels.Place(p.off ? (p.label.empty() ? "" : p.label + ": ") + Value(p.y) : p.label, X(p.x), Y(p), color);
        }
      }
    ox += R.width;
  }

  // The legend, beside the panels.
  double ly = top + 8;
  const double lx = panels_w + 6;
  for (auto& e : legend) {
    auto it = style.find(e.name);
    const bool series = it != style.end();
    const std::string color = series ? kColors[it->second % kNumColors] : "#555";
    if (e.joined)
      svg.Line(lx, ly, lx + 24, ly,
               "stroke=\"" + color + "\" stroke-width=\"1.6\"" + (series ? "" : " stroke-dasharray=\"5,3\""));
    if (series && e.markers) svg.Marker(it->second, lx + 12, ly, kMarkerR, color);
    if (!series && !e.joined) svg.Arrow(lx + 12, ly - 6, -1, color);
    svg.Text(lx + 32, ly + 0.35 * kLegendSize, e.name, kLegendSize, 's');
    ly += 16;
  }
  return svg.s + "</svg>\n";
}

}  // namespace atp
