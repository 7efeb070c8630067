// Report figures as plain SVG: panels of named series side by side, one legend beside them.
// What a figure guarantees (tests/plot_test.cpp checks it on the SVG text of real `atp eval` and
// `atp analyze` output): every text box, marker and line lies inside the canvas; no two text boxes
// overlap; no text covers a marker. Text widths are estimated as TextWidth() says, so the canvas
// is sized for the text it holds. It is not a plotting library: it draws the figures atp writes.
#pragma once
#include <cmath>
#include <string>
#include <utility>
#include <vector>

namespace atp {

struct PlotSeries {
  std::string name;                 // legend entry; one colour and marker shape per name in a figure
  std::vector<double> x, y;         // a point with a non-finite coordinate is skipped
  std::vector<std::string> labels;  // empty, or one per point: drawn beside its marker where there is room
  bool joined = true;               // a line through the points in x order (one setting swept); false: markers only
};

struct PlotPanel {
  std::string title, x_label, y_label;
  std::vector<PlotSeries> series;
  bool log_x = false;  // log-scale x with ticks at 1, 2, 3, 5 x 10^k (or powers of 10 over wide ranges)
  // -1: lower y is better, +1: higher is better; nonzero draws the Pareto frontier over all series
  // (the best y reachable with at most x), as a dashed staircase.
  int better = 0;
  // The y range covers the bulk of the values (3 interquartile ranges beyond the quartiles); points
  // beyond it are drawn as arrows at the panel's edge, labelled with their value.
  bool clip_outliers = false;
  double y_min = NAN, y_max = NAN;  // fixed y range ends where finite (e.g. 0 and 1 for fractions)
  // Dotted horizontal reference lines {y, label}, labelled at the panel's left edge (e.g. {0.9, "90%"}).
  std::vector<std::pair<double, std::string>> y_guides = {};
  // Where not empty, the x ticks (those in range) instead of the automatic ones, with no minor ticks:
  // e.g. {1, 2, 4, 8, 16} on a log axis of client concurrency makes it a log2 axis.
  std::vector<double> x_ticks = {};
};

struct PlotFigure {
  std::string title;
  std::vector<std::string> subtitle;  // lines under the title: what was measured, where
  std::vector<PlotPanel> panels;
};

std::string RenderSvg(const PlotFigure& figure);

// Estimated advance width of text at this font size: 0.6 em per character (UTF-8 code point).
double TextWidth(const std::string& text, double font_size);

}  // namespace atp
