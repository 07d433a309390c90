// The Prometheus histograms behind /metrics (actors/metrics.hpp): cumulative
// buckets, +Inf equal to _count, fixed-point sums, escaped label values.
#define BOOST_TEST_MODULE metrics
#include <boost/test/unit_test.hpp>
#include <sstream>

#include "actors/metrics.hpp"

using namespace apiary::actors;
using namespace std::chrono_literals;

BOOST_AUTO_TEST_CASE(a_histogram_renders_cumulative_buckets_sum_and_count) {
  LatencyHistogram h;
  h.observe(500us);   // <= 0.001
  h.observe(20ms);    // <= 0.025
  h.observe(2h);      // beyond every bucket: only +Inf
  std::ostringstream out;
  h.render(out, "x_seconds", "phase=\"a\"");
  const std::string text = out.str();
  BOOST_TEST(text.find("x_seconds_bucket{phase=\"a\",le=\"0.001\"} 1\n") != std::string::npos, text);
  BOOST_TEST(text.find("x_seconds_bucket{phase=\"a\",le=\"0.01\"} 1\n") != std::string::npos, text);
  BOOST_TEST(text.find("x_seconds_bucket{phase=\"a\",le=\"0.025\"} 2\n") != std::string::npos, text);
  BOOST_TEST(text.find("x_seconds_bucket{phase=\"a\",le=\"60\"} 2\n") != std::string::npos, text);
  BOOST_TEST(text.find("x_seconds_bucket{phase=\"a\",le=\"+Inf\"} 3\n") != std::string::npos, text);
  BOOST_TEST(text.find("x_seconds_sum{phase=\"a\"} 7200.020500\n") != std::string::npos, text);
  BOOST_TEST(text.find("x_seconds_count{phase=\"a\"} 3\n") != std::string::npos, text);
}

BOOST_AUTO_TEST_CASE(a_family_escapes_label_values_and_prefixes_extra_labels) {
  LatencyFamily f("action");
  f.observe("pa\"u\\se\n", 1ms);
  const std::string text = f.render("y_seconds", "node=\"n1\"");
  BOOST_TEST(text.find("y_seconds_count{node=\"n1\",action=\"pa\\\"u\\\\se\\n\"} 1\n") != std::string::npos, text);
  BOOST_TEST(metric_header("y_seconds", "histogram", "Help.") ==
             "# HELP y_seconds Help.\n# TYPE y_seconds histogram\n");
}

// Several nodes' answers appended one after the other: each family once,
// under its header, histogram parts with their family, unknown lines last.
BOOST_AUTO_TEST_CASE(samples_of_several_sources_are_grouped_under_one_header_per_family) {
  const MetricFamily families[] = {{"lat_seconds", "histogram", "Latency."}, {"frames_total", "counter", "Frames."}};
  const std::string samples =
      "lat_seconds_bucket{node=\"a\",le=\"+Inf\"} 1\nlat_seconds_sum{node=\"a\"} 0.5\nlat_seconds_count{node=\"a\"} 1\n"
      "frames_total{node=\"a\"} 7\nother{node=\"a\"} 1\n"
      "lat_seconds_bucket{node=\"b\",le=\"+Inf\"} 2\nlat_seconds_sum{node=\"b\"} 1\nlat_seconds_count{node=\"b\"} 2\n"
      "frames_total{node=\"b\"} 9\n";
  BOOST_TEST(group_families(samples, families) ==
             "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n"
             "lat_seconds_bucket{node=\"a\",le=\"+Inf\"} 1\nlat_seconds_sum{node=\"a\"} 0.5\nlat_seconds_count{node=\"a\"} 1\n"
             "lat_seconds_bucket{node=\"b\",le=\"+Inf\"} 2\nlat_seconds_sum{node=\"b\"} 1\nlat_seconds_count{node=\"b\"} 2\n"
             "# HELP frames_total Frames.\n# TYPE frames_total counter\n"
             "frames_total{node=\"a\"} 7\nframes_total{node=\"b\"} 9\n"
             "other{node=\"a\"} 1\n");
  BOOST_TEST(group_families("", families) == "");
}
