// A small SVG line-chart writer for reports: one or more panels of named series, linear axes.
// Refuses nothing but empty data; it does not try to be a plotting library.
#pragma once
#include <string>
#include <vector>

namespace atp {

struct PlotSeries {
  std::string name;
  std::vector<double> x, y;
};

struct PlotPanel {
  std::string title, x_label, y_label;
  std::vector<PlotSeries> series;
  bool log_x = false;
};

// Panels side by side, one shared legend per panel.
std::string RenderSvg(const std::string& title, const std::vector<PlotPanel>& panels);

}  // namespace atp
