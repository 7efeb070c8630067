#include "eval/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace atp {

namespace {

const char* kColors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                         "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939"};

std::string Num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.4g", v);
  return b;
}

std::string Escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else o += c;
  }
  return o;
}

// Roughly five round tick values covering [lo, hi].
std::vector<double> Ticks(double lo, double hi) {
  double span = hi - lo;
  if (span <= 0) return {lo};
  double step = std::pow(10, std::floor(std::log10(span / 5)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (span / (step * m) <= 6) {
      step *= m;
      break;
    }
  std::vector<double> t;
  for (double v = std::ceil(lo / step) * step; v <= hi + 1e-9 * span; v += step) t.push_back(v);
  return t;
}

}  // namespace

std::string RenderSvg(const std::string& title, const std::vector<PlotPanel>& panels) {
  const double pw = 460, ph = 340, ml = 60, mr = 150, mt = 40, mb = 50;
  const double W = pw * double(panels.size()), H = ph + 30;
  std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + Num(W) + "\" height=\"" + Num(H) +
                  "\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s += "<text x=\"" + Num(W / 2) + "\" y=\"18\" text-anchor=\"middle\" font-size=\"14\">" + Escape(title) + "</text>\n";
  for (size_t p = 0; p < panels.size(); ++p) {
    const PlotPanel& P = panels[p];
    const double ox = pw * double(p) + ml, oy = 30 + mt, w = pw - ml - mr + 100, h = ph - mt - mb;
    auto fx = [&](double x) { return P.log_x ? std::log10(std::max(x, 1e-12)) : x; };
    double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
    for (auto& se : P.series)
      for (size_t i = 0; i < se.x.size() && i < se.y.size(); ++i) {
        if (!std::isfinite(se.y[i])) continue;
        x0 = std::min(x0, fx(se.x[i]));
        x1 = std::max(x1, fx(se.x[i]));
        y0 = std::min(y0, se.y[i]);
        y1 = std::max(y1, se.y[i]);
      }
    if (x0 > x1) continue;  // no finite data in this panel
    if (x1 == x0) x1 = x0 + 1;
    if (y1 == y0) y1 = y0 + 1;
    const double pad = 0.05 * (y1 - y0);
    y0 -= pad;
    y1 += pad;
    auto X = [&](double x) { return ox + (fx(x) - x0) / (x1 - x0) * w; };
    auto Y = [&](double y) { return oy + h - (y - y0) / (y1 - y0) * h; };
    s += "<text x=\"" + Num(ox + w / 2) + "\" y=\"" + Num(oy - 8) + "\" text-anchor=\"middle\" font-size=\"12\">" + Escape(P.title) + "</text>\n";
    s += "<rect x=\"" + Num(ox) + "\" y=\"" + Num(oy) + "\" width=\"" + Num(w) + "\" height=\"" + Num(h) + "\" fill=\"none\" stroke=\"#333\"/>\n";
    for (double t : Ticks(y0, y1))
      s += "<line x1=\"" + Num(ox) + "\" x2=\"" + Num(ox + w) + "\" y1=\"" + Num(Y(t)) + "\" y2=\"" + Num(Y(t)) +
           "\" stroke=\"#ddd\"/><text x=\"" + Num(ox - 4) + "\" y=\"" + Num(Y(t) + 4) + "\" text-anchor=\"end\">" + Num(t) + "</text>\n";
    for (double t : Ticks(x0, x1)) {
      double xv = P.log_x ? std::pow(10, t) : t;
      s += "<line y1=\"" + Num(oy) + "\" y2=\"" + Num(oy + h) + "\" x1=\"" + Num(X(xv)) + "\" x2=\"" + Num(X(xv)) +
           "\" stroke=\"#eee\"/><text x=\"" + Num(X(xv)) + "\" y=\"" + Num(oy + h + 14) + "\" text-anchor=\"middle\">" + Num(xv) + "</text>\n";
    }
    s += "<text x=\"" + Num(ox + w / 2) + "\" y=\"" + Num(oy + h + 32) + "\" text-anchor=\"middle\">" + Escape(P.x_label) + "</text>\n";
    s += "<text transform=\"translate(" + Num(ox - 44) + "," + Num(oy + h / 2) + ") rotate(-90)\" text-anchor=\"middle\">" + Escape(P.y_label) + "</text>\n";
    for (size_t i = 0; i < P.series.size(); ++i) {
      const PlotSeries& se = P.series[i];
      const char* col = kColors[i % (sizeof kColors / sizeof *kColors)];
      std::string pts;
      for (size_t j = 0; j < se.x.size() && j < se.y.size(); ++j)
        if (std::isfinite(se.y[j])) pts += Num(X(se.x[j])) + "," + Num(Y(se.y[j])) + " ";
      s += "<polyline fill=\"none\" stroke=\"" + std::string(col) + "\" stroke-width=\"1.8\" points=\"" + pts + "\"/>\n";
      for (size_t j = 0; j < se.x.size() && j < se.y.size(); ++j)
        if (std::isfinite(se.y[j]) && se.x.size() <= 12)
          s += "<circle cx=\"" + Num(X(se.x[j])) + "\" cy=\"" + Num(Y(se.y[j])) + "\" r=\"2.5\" fill=\"" + col + "\"/>\n";
      double ly = oy + 10 + 14 * double(i);
      s += "<line x1=\"" + Num(ox + w + 8) + "\" x2=\"" + Num(ox + w + 24) + "\" y1=\"" + Num(ly) + "\" y2=\"" + Num(ly) +
           "\" stroke=\"" + col + "\" stroke-width=\"2\"/><text x=\"" + Num(ox + w + 28) + "\" y=\"" + Num(ly + 4) + "\">" + Escape(se.name) + "</text>\n";
    }
  }
  return s + "</svg>\n";
}

}  // namespace atp
