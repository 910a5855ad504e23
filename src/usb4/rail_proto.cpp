// SPDX-License-Identifier: Apache-2.0
#include "usb4/rail_proto.hpp"

namespace tbv::usb4 {

namespace {

constexpr std::size_t kUuidPair = 8;
constexpr std::size_t kRailDwords = 3;
constexpr std::uint32_t kMaxHop = 2047;
constexpr std::uint32_t kMaxCredits = 0xffff;

bool rail_ok(const RailSpec& r) noexcept {
    return r.rx_hop >= hw::usb4::kMinLaneHopId && r.rx_hop <= kMaxHop && r.rx_credits != 0 &&
           r.rx_credits <= kMaxCredits;
}

std::size_t fixed_dwords(RailMsg t) noexcept {
    switch (t) {
        case RailMsg::offer:
        case RailMsg::accept: return kUuidPair + 3;  // session, link, count
        case RailMsg::reject: return kUuidPair + 2;  // session, reason
        case RailMsg::teardown:
        case RailMsg::teardown_ack: return kUuidPair + 1;  // session
    }
    return 0;
}

}  // namespace

Result<std::vector<std::uint32_t>> encode_rail_message(const RailMessage& m) {
    const std::size_t fixed = fixed_dwords(m.type);
    if (fixed == 0) {
        return fail(Errc::malformed);
    }
    const bool has_rails = m.type == RailMsg::offer || m.type == RailMsg::accept;
    if (has_rails) {
        if (m.rails.size() > kMaxRailsPerLink || (m.type == RailMsg::offer && m.rails.empty())) {
            return fail(Errc::malformed);
        }
        for (const auto& r : m.rails) {
            if (!rail_ok(r)) {
                return fail(Errc::malformed);
            }
        }
    }
    std::vector<std::uint32_t> out;
    out.reserve(fixed + (has_rails ? m.rails.size() * kRailDwords : 0));
    out.insert(out.end(), m.initiator.begin(), m.initiator.end());
    out.insert(out.end(), m.target.begin(), m.target.end());
    out.push_back(m.session);
    if (has_rails) {
        out.push_back(m.link);
        out.push_back(static_cast<std::uint32_t>(m.rails.size()));
        for (const auto& r : m.rails) {
            out.push_back(r.index);
            out.push_back(r.rx_hop);
            out.push_back(r.rx_credits);
        }
    } else if (m.type == RailMsg::reject) {
        out.push_back(m.reason);
    }
    return out;
}

Result<RailMessage> decode_rail_message(RailMsg type, std::span<const std::uint32_t> p) {
    const std::size_t fixed = fixed_dwords(type);
    if (fixed == 0 || p.size() < fixed) {
        return fail(Errc::malformed);
    }
    RailMessage m;
    m.type = type;
    for (std::size_t i = 0; i < 4; ++i) {
        m.initiator[i] = p[i];
        m.target[i] = p[4 + i];
    }
    m.session = p[kUuidPair];
    if (type == RailMsg::offer || type == RailMsg::accept) {
        m.link = p[kUuidPair + 1];
        const std::uint32_t count = p[kUuidPair + 2];
        if (count > kMaxRailsPerLink || (type == RailMsg::offer && count == 0) ||
            p.size() != fixed + count * kRailDwords) {
            return fail(Errc::malformed);
        }
        m.rails.reserve(count);
        for (std::uint32_t i = 0; i < count; ++i) {
            const auto* r = &p[fixed + i * kRailDwords];
            if ((r[0] >> 16) != 0) {
                return fail(Errc::malformed);  // flags are reserved-zero in version 1
            }
            RailSpec s{static_cast<std::uint16_t>(r[0] & 0xffffu), r[1], r[2]};
            if (!rail_ok(s)) {
                return fail(Errc::malformed);
            }
            for (const auto& prev : m.rails) {
                if (prev.index == s.index || prev.rx_hop == s.rx_hop) {
                    return fail(Errc::malformed);  // duplicate rail or HopID
                }
            }
            m.rails.push_back(s);
        }
        return m;
    }
    if (p.size() != fixed) {
        return fail(Errc::malformed);
    }
    if (type == RailMsg::reject) {
        m.reason = p[kUuidPair + 1];
    }
    return m;
}

}  // namespace tbv::usb4
