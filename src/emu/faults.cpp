// SPDX-License-Identifier: Apache-2.0
#include "emu/faults.hpp"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <cstring>

namespace tbv::emu {

namespace {

bool parse_double(std::string_view s, double& out) {
    // std::from_chars for double is in libstdc++ 11+, which Debian 12 has.
    const auto* end = s.data() + s.size();
    auto r = std::from_chars(s.data(), end, out);
    return r.ec == std::errc{} && r.ptr == end;
}

bool parse_u64(std::string_view s, std::uint64_t& out) {
    const auto* end = s.data() + s.size();
    auto r = std::from_chars(s.data(), end, out);
    return r.ec == std::errc{} && r.ptr == end;
}

}  // namespace

Result<FaultConfig> parse_faults(std::string_view spec) {
    FaultConfig f;
    while (!spec.empty()) {
        const auto comma = spec.find(',');
        const std::string_view item = spec.substr(0, comma);
        spec = comma == std::string_view::npos ? std::string_view{} : spec.substr(comma + 1);
        if (item.empty()) {
            continue;
        }
        const auto eq = item.find('=');
        if (eq == std::string_view::npos) {
            return fail(std::errc::invalid_argument);
        }
        const std::string_view key = item.substr(0, eq);
        const std::string_view val = item.substr(eq + 1);
        double p = 0;
        std::uint64_t n = 0;
        if (key == "drop" || key == "dup" || key == "crc") {
            if (!parse_double(val, p) || !(p >= 0.0 && p <= 1.0)) {
                return fail(std::errc::invalid_argument);
            }
            if (key == "drop") {
                f.data_drop = f.ctl_drop = p;
            } else if (key == "dup") {
                f.data_dup = p;
            } else {
                f.data_corrupt = f.ctl_corrupt = p;
            }
        } else if (key == "unplug_ms" || key == "unplug_after_ms" || key == "seed") {
            if (!parse_u64(val, n)) {
                return fail(std::errc::invalid_argument);
            }
            if (key == "seed") {
                f.seed = n;
            } else if (n > 3'600'000) {
                return fail(std::errc::invalid_argument);  // over an hour is a typo
            } else if (key == "unplug_ms") {
                f.unplug = std::chrono::milliseconds(n);
            } else {
                f.unplug_after = std::chrono::milliseconds(n);
            }
        } else {
            return fail(std::errc::invalid_argument);
        }
    }
    return f;
}

Result<std::optional<FaultConfig>> faults_from_env() {
    const char* env = std::getenv("TBV_EMU_FAULTS");
    if (env == nullptr || *env == '\0') {
        return std::optional<FaultConfig>{};
    }
    auto f = parse_faults(env);
    if (!f) {
        return Failure{f.error()};
    }
    return std::optional<FaultConfig>{*f};
}

std::string describe(const FaultConfig& f) {
    return "drop=" + std::to_string(f.data_drop) + " dup=" + std::to_string(f.data_dup) +
           " crc=" + std::to_string(f.data_corrupt) +
           " unplug_ms=" + std::to_string(f.unplug.count()) +
           " unplug_after_ms=" + std::to_string(f.unplug_after.count()) +
           " seed=" + std::to_string(f.seed);
}

void FaultInjector::configure(const FaultConfig& f) {
    cfg_ = f;
    active_ = f.ctl_drop > 0 || f.ctl_corrupt > 0 || f.data_drop > 0 || f.data_dup > 0 ||
              f.data_corrupt > 0;
    rng_.seed(f.seed);
}

bool FaultInjector::roll(double p) noexcept {
    return p > 0 && std::uniform_real_distribution<double>(0.0, 1.0)(rng_) < p;
}

FaultInjector::Verdict FaultInjector::decide(WireKind kind) noexcept {
    Verdict v;
    if (!active_) {
        return v;
    }
    if (kind == WireKind::control) {
        v.drop = roll(cfg_.ctl_drop);
        v.corrupt = !v.drop && roll(cfg_.ctl_corrupt);
    } else if (kind == WireKind::data) {
        v.drop = roll(cfg_.data_drop);
        v.corrupt = !v.drop && roll(cfg_.data_corrupt);
        v.dup = !v.drop && roll(cfg_.data_dup);
    }
    return v;
}

WirePacket FaultInjector::corrupted(const WirePacket& p,
                                    std::array<std::byte, hw::nhi::kMaxFrameSize>& buf) noexcept {
    WirePacket q = p;
    if (p.data.empty()) {
        return q;
    }
    const std::size_t n = std::min(p.data.size(), buf.size());
    std::memcpy(buf.data(), p.data.data(), n);
    buf[n / 2] ^= std::byte{0x10};  // a bit error on the way; the copy leaves the sender intact
    q.data = std::span<const std::byte>(buf.data(), n);
    q.crc_error = q.kind == WireKind::data;
    return q;
}

}  // namespace tbv::emu
