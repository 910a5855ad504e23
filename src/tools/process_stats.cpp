// SPDX-License-Identifier: Apache-2.0
// `tbv status`: the counters of running tbverbs processes, read from their stats files.
#include "tools/process_stats.hpp"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <filesystem>
#include <string_view>
#include <tuple>
#include <vector>

#include <fmt/core.h>

#include "tbv/verbs_types.hpp"
#include "transport/rail_io.hpp"
#include "usb4/uuid.hpp"
#include "verbs/stats_shm.hpp"

namespace tbv::tools {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

/// A file whose process is gone is removed once its last update (or, unreadable, its mtime) is
/// this old: a process in another pid namespace sharing /dev/shm looks dead from here but keeps
/// its file fresh.
constexpr std::uint64_t kStaleNs = 10'000'000'000ull;

bool pid_alive(std::uint32_t pid) {
    if (pid == 0 || pid > 0x7FFF'FFFF) {
        return false;  // kill() would take it for a process group (or all processes)
    }
    return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

std::string qp_type_name(std::uint8_t t) {
    switch (static_cast<verbs::QpType>(t)) {
        case verbs::QpType::rc: return "RC";
        case verbs::QpType::uc: return "UC";
        case verbs::QpType::ud: return "UD";
    }
    return fmt::format("type {}", t);
}

std::string qp_state_name(std::uint8_t s) {
    switch (static_cast<verbs::QpState>(s)) {
        case verbs::QpState::reset: return "RESET";
        case verbs::QpState::init: return "INIT";
        case verbs::QpState::rtr: return "RTR";
        case verbs::QpState::rts: return "RTS";
        case verbs::QpState::sqd: return "SQD";
        case verbs::QpState::sqe: return "SQE";
        case verbs::QpState::err: return "ERR";
    }
    return fmt::format("state {}", s);
}

std::string drop_reason_name(std::size_t i) {
    if (i < static_cast<std::size_t>(transport::DropReason::count_)) {
        return transport::to_string(static_cast<transport::DropReason>(i));
    }
    return fmt::format("reason_{}", i);  // a newer writer knows reasons this tbv does not
}

json port_json(const verbs::PortRecord& p, std::uint32_t drop_reasons) {
    json drops = json::object();
    for (std::uint32_t i = 0; i < drop_reasons; ++i) {
        drops[drop_reason_name(i)] = p.drops[i];
    }
    return {{"id", p.id},
            {"adapter", p.adapter},
            {"peer_lid", p.peer_lid},
            {"data_credits", p.data_credits},
            {"tx_frames", p.tx_frames},
            {"tx_bytes", p.tx_bytes},
            {"rx_frames", p.rx_frames},
            {"rx_bytes", p.rx_bytes},
            {"credit_stalls", p.credit_stalls},
            {"credit_frames", p.credit_frames},
            {"credit_probes", p.credit_probes},
            {"doorbells", p.doorbells},
            {"drops", std::move(drops)}};
}

json qp_json(const verbs::QpRecord& q) {
    return {{"qpn", q.qpn},
            {"type", qp_type_name(q.type)},
            {"state", qp_state_name(q.state)},
            {"dlid", q.dlid},
            {"dest_qpn", q.dest_qpn},
            {"tx_frames", q.tx_frames},
            {"tx_bytes", q.tx_bytes},
            {"rx_frames", q.rx_frames},
            {"rx_bytes", q.rx_bytes},
            {"no_route", q.no_route},
            {"remote_access_faults", q.remote_access_faults},
            {"wrong_peer", q.wrong_peer},
            {"dropped", q.dropped},
            {"replays", q.replays},
            {"uc_dropped_messages", q.uc_dropped_messages},
            {"qkey_drops", q.qkey_drops},
            {"sender",
             {{"frames_sent", q.snd_frames_sent},
              {"retransmits", q.snd_retransmits},
              {"timeouts", q.snd_timeouts},
              {"naks", q.snd_naks},
              {"rnr_naks", q.snd_rnr_naks},
              {"rtt_samples", q.snd_rtt_samples},
              {"bogus_acks", q.snd_bogus_acks}}},
            {"receiver",
             {{"accepted", q.rcv_accepted},
              {"out_of_order", q.rcv_out_of_order},
              {"duplicates", q.rcv_duplicates},
              {"dropped", q.rcv_dropped},
              {"naks", q.rcv_naks},
              {"rnr_naks", q.rcv_rnr_naks},
              {"acks", q.rcv_acks}}}};
}

json file_json(const verbs::StatsFile& f, const std::string& path) {
    const std::uint64_t now = verbs::stats_mono_now_ns();
    const std::uint64_t age_ns = now > f.updated_mono_ns ? now - f.updated_mono_ns : 0;
    json ports = json::array();
    for (const auto& p : f.ports) {
        ports.push_back(port_json(p, f.drop_reasons));
    }
    json qps = json::array();
    for (const auto& q : f.qps) {
        qps.push_back(qp_json(q));
    }
    return {{"file", path},
            {"pid", f.pid},
            {"process", f.process},
            {"device", f.device},
            {"lid", f.lid},
            {"gid", usb4::uuid_to_string(f.uuid)},
            {"started_unix_s", static_cast<double>(f.started_unix_ns) / 1e9},
            {"updated_ms_ago", static_cast<double>(age_ns) / 1e6},
            {"updates", f.updates},
            // A live process publishes every 200 ms; a much older snapshot means its CM thread
            // is stuck or the pid now belongs to another program.
            {"stale", age_ns > kStaleNs},
            {"total_ports", f.total_ports},
            {"total_qps", f.total_qps},
            {"ports", std::move(ports)},
            {"qps", std::move(qps)}};
}

// ---- text --------------------------------------------------------------------------------------

std::string bytes_text(std::uint64_t b) {
    if (b < 1024) {
        return fmt::format("{} B", b);
    }
    static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double v = static_cast<double>(b) / 1024.0;
    std::size_t u = 0;
    while (v >= 1024.0 && u + 1 < std::size(kUnits)) {
        v /= 1024.0;
        ++u;
    }
    return fmt::format("{:.1f} {}", v, kUnits[u]);
}

std::string n(const json& j) {
    return j.dump();
}

std::string in_out(const json& a, const json& b) {
    return fmt::format("{}/{}", a.dump(), b.dump());
}

/// Columns padded to their widest cell; the first `left` columns left-aligned, the rest right.
std::string table(const std::vector<std::vector<std::string>>& rows, std::size_t left) {
    std::vector<std::size_t> w;
    for (const auto& r : rows) {
        w.resize(std::max(w.size(), r.size()));
        for (std::size_t i = 0; i < r.size(); ++i) {
            w[i] = std::max(w[i], r[i].size());
        }
    }
    std::string o;
    for (const auto& r : rows) {
        std::string line = "  ";
        for (std::size_t i = 0; i < r.size(); ++i) {
            line += "  ";
            const std::string pad(w[i] - r[i].size(), ' ');
            line += i < left ? r[i] + (i + 1 < r.size() ? pad : "") : pad + r[i];
        }
        o += line + "\n";
    }
    return o;
}

std::string render_one(const json& p) {
    std::string o;
    if (p.contains("error")) {
        return fmt::format("process {} LID 0x{:04x}: cannot read {}: {}\n", n(p["pid"]),
                           p["lid"].get<unsigned>(), p["file"].get<std::string>(),
                           p["error"].get<std::string>());
    }
    o +=
        fmt::format("process {} \"{}\"  device {}  LID 0x{:04x}  GID {}  updated {:.0f} ms ago{}\n",
                    n(p["pid"]), p["process"].get<std::string>(), p["device"].get<std::string>(),
                    p["lid"].get<unsigned>(), p["gid"].get<std::string>(),
                    p["updated_ms_ago"].get<double>(), p["stale"].get<bool>() ? " (STALE)" : "");
    std::vector<std::vector<std::string>> rows;
    rows.push_back({"port", "adapter", "peer LID", "credits", "TX frames", "TX bytes", "RX frames",
                    "RX bytes", "stalls", "credit fr", "doorbells", "drops"});
    for (const auto& r : p["ports"]) {
        std::string drops;
        for (const auto& [reason, count] : r["drops"].items()) {
            if (count.get<std::uint64_t>() != 0) {
                drops += (drops.empty() ? "" : " ") + reason + " " + count.dump();
            }
        }
        rows.push_back({n(r["id"]), r["adapter"] == 0 ? "loop" : n(r["adapter"]),
                        fmt::format("0x{:04x}", r["peer_lid"].get<unsigned>()),
                        n(r["data_credits"]), n(r["tx_frames"]),
                        bytes_text(r["tx_bytes"].get<std::uint64_t>()), n(r["rx_frames"]),
                        bytes_text(r["rx_bytes"].get<std::uint64_t>()), n(r["credit_stalls"]),
                        n(r["credit_frames"]), n(r["doorbells"]), drops.empty() ? "-" : drops});
    }
    o += table(rows, 0);
    if (p["total_ports"].get<std::size_t>() > p["ports"].size()) {
        o += fmt::format("    (first {} of {} ports)\n", p["ports"].size(), n(p["total_ports"]));
    }
    if (p["qps"].empty()) {
        o += "    no QPs\n";
        return o;
    }
    rows.clear();
    rows.push_back({"QPN", "type", "state", "peer LID/QPN", "TX frames", "TX bytes", "RX frames",
                    "RX bytes", "retx", "tmo", "NAK in/out", "RNR in/out", "dup", "ooo",
                    "access err", "wrong peer", "no route"});
    for (const auto& q : p["qps"]) {
        const auto& s = q["sender"];
        const auto& v = q["receiver"];
        const bool connected = q["type"] != "UD" && q["dest_qpn"] != 0;
        rows.push_back({fmt::format("0x{:06x}", q["qpn"].get<unsigned>()),
                        q["type"].get<std::string>(), q["state"].get<std::string>(),
                        connected ? fmt::format("0x{:04x}/0x{:06x}", q["dlid"].get<unsigned>(),
                                                q["dest_qpn"].get<unsigned>())
                                  : "-",
                        n(q["tx_frames"]), bytes_text(q["tx_bytes"].get<std::uint64_t>()),
                        n(q["rx_frames"]), bytes_text(q["rx_bytes"].get<std::uint64_t>()),
                        n(s["retransmits"]), n(s["timeouts"]), in_out(s["naks"], v["naks"]),
                        in_out(s["rnr_naks"], v["rnr_naks"]), n(v["duplicates"]),
                        n(v["out_of_order"]), n(q["remote_access_faults"]), n(q["wrong_peer"]),
                        n(q["no_route"])});
    }
    o += table(rows, 4);
    if (p["total_qps"].get<std::size_t>() > p["qps"].size()) {
        o += fmt::format("    (first {} of {} QPs)\n", p["qps"].size(), n(p["total_qps"]));
    }
    return o;
}

}  // namespace

json processes_json(const std::string& dir) {
    std::vector<std::tuple<std::uint32_t, std::uint16_t, fs::path>> files;
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        if (const auto n = verbs::parse_stats_file_name(it->path().filename().string())) {
            files.emplace_back(n->pid, n->lid, it->path());
        }
    }
    std::sort(files.begin(), files.end());
    json out = json::array();
    for (const auto& [pid, lid, path] : files) {
        const bool alive = pid_alive(pid);
        // A dead writer cannot be in the middle of an update for long: one attempt will do.
        auto f = verbs::read_stats(path.string(), alive ? 100 : 1);
        if (!alive) {
            // Gone: skip it, and clean up once it is clearly abandoned.
            bool stale = false;
            if (f) {
                const std::uint64_t now = verbs::stats_mono_now_ns();
                stale = now > f->updated_mono_ns && now - f->updated_mono_ns > kStaleNs;
            } else {
                struct stat st {};
                stale = ::lstat(path.c_str(), &st) == 0 &&
                        std::time(nullptr) - st.st_mtime > static_cast<time_t>(kStaleNs / 1e9);
            }
            if (stale) {
                ::unlink(path.c_str());  // fails harmlessly for another user's file
            }
            continue;
        }
        if (f && (f->pid != pid || f->lid != lid)) {
            out.push_back({{"file", path.string()},
                           {"pid", pid},
                           {"lid", lid},
                           {"error", "its header names another process or LID"}});
            continue;
        }
        if (!f) {
            out.push_back({{"file", path.string()},
                           {"pid", pid},
                           {"lid", lid},
                           {"error", f.error().message()}});
            continue;
        }
        out.push_back(file_json(*f, path.string()));
    }
    return out;
}

std::string render_processes(const json& processes) {
    std::string o;
    for (const auto& p : processes) {
        o += render_one(p);
    }
    return o;
}

}  // namespace tbv::tools
