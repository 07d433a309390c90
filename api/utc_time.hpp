// Unix milliseconds as ISO 8601 UTC text, the one format every surface
// shows a time in: Nova's API (created, updated, action start times), the
// ctl tables, and the controller's and node's log lines (with
// milliseconds). Header-only: apps/ and api/ both use it.
#pragma once

#include <cstdint>
#include <cstdio>
#include <ctime>
#include <string>

namespace apiary::api {

// 2024-05-01T12:00:00Z, or 2024-05-01T12:00:00.042Z with `millis`; "" for a
// time at or before the epoch (a record field never set).
inline std::string utc_iso8601(int64_t unix_ms, bool millis = false) {
  if (unix_ms <= 0) return {};
  const std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  if (!gmtime_r(&t, &tm)) return {};
  char buf[48];
  if (millis)
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                  tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(unix_ms % 1000));
  else
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                  tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

}  // namespace apiary::api
