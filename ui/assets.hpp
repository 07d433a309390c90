// The dashboard's files (ui/src, and the npm packages it uses), built into
// the binary so the controller serves the page with nothing to install and
// nothing fetched at run time (api/http_api.cpp serves them under /ui/).
//
// Why embedded: an operator runs one binary; the page must work offline
// and match the API of the binary that serves it.
//
// ui/assets.txt lists what goes in (URL path and source file);
// scripts/embed_assets.py turns that list into this table at build time.
#pragma once

#include <span>
#include <string_view>

namespace apiary::ui {

struct Asset {
  std::string_view path;          // "/ui/app.js"
  std::string_view content_type;  // "text/javascript; charset=utf-8"
  std::string_view data;
};

// Every asset, sorted by path.
std::span<const Asset> assets() noexcept;

// The asset at `path`, or nullptr.
const Asset* find(std::string_view path) noexcept;

}  // namespace apiary::ui
