// SPDX-License-Identifier: Apache-2.0
#include "emu/link.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "hw/nhi_regs.hpp"

namespace tbv::emu {

namespace {

constexpr std::size_t kFrame4k = 4096;

bool parse_u64(std::string_view s, std::uint64_t& out) {
    const auto* end = s.data() + s.size();
    auto r = std::from_chars(s.data(), end, out);
    return !s.empty() && r.ec == std::errc{} && r.ptr == end;
}

bool parse_double(std::string_view s, double& out) {
    const auto* end = s.data() + s.size();
    auto r = std::from_chars(s.data(), end, out);
    return !s.empty() && r.ec == std::errc{} && r.ptr == end && std::isfinite(out);
}

std::string quoted(std::string_view item) {
    return "'" + std::string(item) + "'";
}

/// ps one 4 KiB descriptor keeps a ring's engine busy at `gbps`.
double full_cost_ps(double gbps) {
    return static_cast<double>(kFrame4k) * 8.0 * static_cast<double>(kPsPerNs) / gbps;
}

}  // namespace

double LinkConfig::lane_gbps(unsigned gen) noexcept {
    switch (gen) {
        case 2: return 10.0;  // ref §6.3 LANE_ADP_CS_1 current speed 0x8, §11
        case 3: return 20.0;  // 0x4
        case 4: return 40.0;  // 0x2 (USB4 v2)
        default: return 0.0;
    }
}

LinkParse parse_link(std::string_view spec) {
    LinkParse out;
    LinkConfig& l = out.config;
    if (spec == "off") {
        return out;
    }
    const auto bad = [&](std::string_view item, const char* why) {
        out.config = {};
        out.error = "TBV_EMU_LINK item " + quoted(item) + ": " + why;
        return out;
    };
    while (!spec.empty()) {
        const auto comma = spec.find(',');
        const std::string_view item = spec.substr(0, comma);
        spec = comma == std::string_view::npos ? std::string_view{} : spec.substr(comma + 1);
        if (item.empty()) {
            continue;
        }
        const auto eq = item.find('=');
        if (eq == std::string_view::npos) {
            return bad(item, "expected key=value");
        }
        const std::string_view key = item.substr(0, eq);
        const std::string_view val = item.substr(eq + 1);
        std::uint64_t n = 0;
        double d = 0;
        if (key == "gen") {
            if (!parse_u64(val, n) || !(n == 0 || (n >= 2 && n <= 4))) {
                return bad(item,
                           "gen must be 2, 3 or 4 (USB4 Gen2/3/4: 10/20/40 Gb/s per lane), "
                           "or 0 for no rate limit");
            }
            l.gen = static_cast<unsigned>(n);
        } else if (key == "lanes") {
            if (!parse_u64(val, n) || (n != 1 && n != 2)) {
                return bad(item, "lanes must be 1 or 2");
            }
            l.lanes = static_cast<unsigned>(n);
        } else if (key == "latency_ns") {
            if (!parse_u64(val, n) || n > 1'000'000'000) {
                return bad(item, "latency_ns must be a whole number of ns, at most 1 s");
            }
            l.latency = std::chrono::nanoseconds(n);
        } else if (key == "ring_gbps") {
            if (!parse_double(val, d) || d < 0 || d > 10'000) {
                return bad(item,
                           "ring_gbps must be a number of Gb/s in [0, 10000] (0: no ceiling)");
            }
            l.ring_gbps = d;
        } else if (key == "ring_desc_ns") {
            if (!parse_u64(val, n) || n > 1'000'000'000) {
                return bad(item, "ring_desc_ns must be a whole number of ns, at most 1 s");
            }
            l.ring_desc = std::chrono::nanoseconds(n);
        } else {
            return bad(item, "unknown key (gen, lanes, latency_ns, ring_gbps, ring_desc_ns)");
        }
    }
    if (l.ring_desc && l.ring_gbps <= 0) {
        return bad("ring_desc_ns",
                   "needs ring_gbps (it is a part of the ring's per-descriptor cost)");
    }
    if (l.ring_desc && static_cast<double>(l.ring_desc->count() * kPsPerNs) >
                           full_cost_ps(l.ring_gbps) + 0.5 * static_cast<double>(kPsPerNs)) {
        return bad("ring_desc_ns", "exceeds what a 4 KiB descriptor costs at ring_gbps");
    }
    return out;
}

std::optional<LinkParse> link_from_env() {
    const char* env = std::getenv("TBV_EMU_LINK");
    if (env == nullptr || *env == '\0' || std::strcmp(env, "off") == 0) {
        return std::nullopt;
    }
    return parse_link(env);
}

std::string describe(const LinkConfig& l) {
    if (!l.any()) {
        return "off";
    }
    std::string s;
    const auto add = [&](const std::string& part) { s += (s.empty() ? "" : " ") + part; };
    if (l.gen != 0) {
        char rate[32];
        std::snprintf(rate, sizeof rate, "%g", l.cable_gbps());
        add("gen=" + std::to_string(l.gen) + " lanes=" + std::to_string(l.lanes) + " (" + rate +
            " Gb/s per direction)");
    }
    if (l.latency.count() > 0) {
        add("latency_ns=" + std::to_string(l.latency.count()));
    }
    if (l.ring_on()) {
        char g[32];
        std::snprintf(g, sizeof g, "%g", l.ring_gbps);
        const auto desc =
            l.ring_desc ? l.ring_desc->count() : std::llround(full_cost_ps(l.ring_gbps) / kPsPerNs);
        add(std::string("ring_gbps=") + g + " ring_desc_ns=" + std::to_string(desc) +
            (l.ring_desc ? "" : " (all per descriptor)"));
    }
    return s;
}

// ---- RingPacer ----------------------------------------------------------------------------------

RingPacer::RingPacer(const LinkConfig& l) noexcept {
    if (!l.ring_on()) {
        return;
    }
    on_ = true;
    const double full = full_cost_ps(l.ring_gbps);
    const double fixed =
        l.ring_desc ? std::min(full, static_cast<double>(l.ring_desc->count() * kPsPerNs)) : full;
    fixed_ = std::llround(fixed);
    per_byte_ = (full - fixed) / static_cast<double>(kFrame4k);
}

Ps RingPacer::cost(std::size_t len) const noexcept {
    return fixed_ + std::llround(static_cast<double>(len) * per_byte_);
}

std::optional<Ps> RingPacer::start(Ps posted, Ps now, std::size_t len) noexcept {
    const Ps s = std::max(free_at_, posted);
    if (s > now) {
        return std::nullopt;
    }
    free_at_ = s + cost(len);
    return s;
}

// ---- LinkPipe -----------------------------------------------------------------------------------

LinkPipe::LinkPipe(const LinkConfig& l)
    : per_byte_(l.cable_gbps() > 0 ? std::llround(8.0 * kPsPerNs / l.cable_gbps()) : 0),
      latency_(l.latency.count() * kPsPerNs),
      slots_(kCapacity),
      bufs_(kCapacity) {}

std::size_t LinkPipe::admit(std::span<const WirePacket> ps, Clock::Duration now) noexcept {
    std::size_t lost = 0;
    std::lock_guard lk(mu_);
    for (const WirePacket& p : ps) {
        if (tail_ - freed_ == kCapacity) {
            ++lost;
            continue;
        }
        const std::size_t i = tail_ % kCapacity;
        if (!bufs_[i]) {
            // First use of this slot: the only allocation, outside the steady state.
            bufs_[i].reset(new (std::nothrow) std::byte[hw::nhi::kMaxFrameSize]);
            if (!bufs_[i]) {
                ++lost;
                continue;
            }
        }
        const std::size_t len = std::min(p.data.size(), hw::nhi::kMaxFrameSize);
        std::memcpy(bufs_[i].get(), p.data.data(), len);
        Held& h = slots_[i];
        h.pkt = p;
        h.pkt.data = std::span<const std::byte>(bufs_[i].get(), len);
        // Serialization: the frame starts on the wire when it was sent or when the frame before
        // it has left, whichever is later, and arrives `latency` after its last byte.
        const Ps sent = (p.sent_at == kNoStamp ? now.count() : p.sent_at) * kPsPerNs;
        const Ps start = std::max(wire_free_, sent);
        wire_free_ = start + static_cast<Ps>(len) * per_byte_;
        h.arrival = wire_free_ + latency_;
        ++tail_;
    }
    publish_locked();
    return lost;
}

std::size_t LinkPipe::take_due(Ps now, std::span<WirePacket> out) noexcept {
    std::lock_guard lk(mu_);
    std::size_t n = 0;
    while (n < out.size() && head_ != tail_ && slots_[head_ % kCapacity].arrival <= now) {
        out[n++] = slots_[head_ % kCapacity].pkt;
        ++head_;
    }
    publish_locked();
    return n;
}

void LinkPipe::done_with(std::size_t n) noexcept {
    std::lock_guard lk(mu_);
    freed_ += n;
}

std::size_t LinkPipe::clear() noexcept {
    std::lock_guard rl(release_mu_);  // no frame of ours is being handed on meanwhile
    std::lock_guard lk(mu_);
    const auto lost = static_cast<std::size_t>(tail_ - head_);
    head_ = freed_ = tail_;
    publish_locked();
    return lost;
}

void LinkPipe::publish_locked() noexcept {
    Clock::Duration::rep due = std::numeric_limits<Clock::Duration::rep>::max();
    if (head_ != tail_) {
        // Rounded up: due() must not say yes before the frame has arrived to the picosecond.
        due = (slots_[head_ % kCapacity].arrival + kPsPerNs - 1) / kPsPerNs;
    }
    due_ns_.store(due, std::memory_order_release);
}

std::optional<Clock::Duration> LinkPipe::next_arrival() const noexcept {
    std::lock_guard lk(mu_);
    if (head_ == tail_) {
        return std::nullopt;
    }
    return Clock::Duration((slots_[head_ % kCapacity].arrival + kPsPerNs - 1) / kPsPerNs);
}

std::size_t LinkPipe::held() const noexcept {
    std::lock_guard lk(mu_);
    return static_cast<std::size_t>(tail_ - head_);
}

}  // namespace tbv::emu
