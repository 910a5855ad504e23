// SPDX-License-Identifier: Apache-2.0
// `tbv status`, the tbverbs processes part: the counters every running tbverbs process (each
// verbs Context) publishes in `<dir>/tbverbs-stats-<pid>-<lid>` (src/verbs/stats_shm.hpp), per
// port and per QP, as JSON and as one compact table per process. Files of processes that are gone
// are skipped, and removed once they are stale. What the counters mean: docs/counters.md.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace tbv::tools {

/// One entry per live process's stats file in `dir` (TBV_STATS_DIR or /dev/shm by default),
/// sorted by pid and LID. A file that cannot be read is listed with an "error" instead of counters.
nlohmann::json processes_json(const std::string& dir);

/// Text tables of processes_json() output ("" for none).
std::string render_processes(const nlohmann::json& processes);

}  // namespace tbv::tools
