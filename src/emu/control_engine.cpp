// SPDX-License-Identifier: Apache-2.0
// The router's control-packet engine (ref §5, §12.4): what arrives on the NHI's TX ring 0 and on
// the control path (HopID 0) of a lane adapter. Everything is validated before it is believed:
// CRC, length, reserved bits, the PDF; bad packets are dropped and counted, never answered.
//
// Choices where the reference is silent (ref §13.2, §13.3):
//   * A config READ/WRITE that reaches a host router through one of its lane adapters (i.e. from
//     the CM of another domain) is answered with an error packet, code 8 (Linux's
//     TB_CFG_ERROR_LOOP; the USB4 specification calls it ERR_ENUM: a request that did not come
//     through the upstream adapter of an enumerated router). Any code other than 0, 2 and 15 maps
//     to -EIO in Linux, which is what makes it scan for an XDomain peer (ref §7.3 step 4). The
//     error packet echoes the request's route and names the ingress lane adapter.
//   * A request whose route names an adapter that is not a lane adapter gets error 4
//     (NO_SUCH_PORT).
//   * XDomain packets (PDF 6/7) arriving on a lane adapter are passed to ring 0 with the route
//     replaced by the local route of that adapter (its number, at depth 0) | bit 63 (ref §8.1).
#include <algorithm>
#include <array>
#include <iterator>
#include <variant>
#include <vector>

#include "emu/nhi.hpp"
#include "emu/router.hpp"
#include "util/crc32c.hpp"
#include "util/endian.hpp"

namespace tbv::emu {

using namespace hw::usb4;

namespace {

constexpr std::size_t kCrcBytes = 4;
constexpr std::size_t kMaxPacketBytes = 256;  ///< ref §5.1: 252 bytes of dwords + CRC
constexpr unsigned kMaxDwords = (kMaxPacketBytes - kCrcBytes) / 4;

struct Parsed {
    unsigned pdf = 0;
    unsigned n = 0;  ///< dwords before the CRC
    std::array<std::uint32_t, kMaxDwords> dw{};
};

enum class ParseError { malformed, crc };

/// Validates length and CRC of a raw control packet (big-endian dwords + big-endian CRC-32C).
std::variant<Parsed, ParseError> parse(unsigned pdf, std::span<const std::byte> wire) noexcept {
    // At least the 2-dword header (a notification ack is only that, ref §5.5) + CRC.
    if (pdf == 0 || pdf > 0xf || wire.size() % 4 != 0 || wire.size() < 2 * 4 + kCrcBytes ||
        wire.size() > kMaxPacketBytes) {
        return ParseError::malformed;
    }
    const std::size_t body = wire.size() - kCrcBytes;
    if (util::crc32c(wire.first(body)) != util::load_be32(wire.data() + body)) {
        return ParseError::crc;
    }
    Parsed p;
    p.pdf = pdf;
    p.n = static_cast<unsigned>(body / 4);
    for (unsigned i = 0; i < p.n; ++i) {
        p.dw[i] = util::load_be32(wire.data() + 4 * std::size_t{i});
    }
    return p;
}

std::uint64_t header_route(const Parsed& p) noexcept {
    return route_of(p.dw[0], p.dw[1]) & kRouteMask;
}

/// Header dwords a router sends towards a CM: route + DW0 bit 31 (ref §5.3).
std::array<std::uint32_t, 2> response_header(std::uint64_t route) noexcept {
    auto h = route_header(route);
    h[0] |= HDR_RESPONSE::make(1);
    return h;
}

std::vector<std::uint32_t> error_packet(std::uint64_t route, ErrorCode code, unsigned adapter) {
    const auto h = response_header(route);
    return {h[0], h[1], ERR_CODE::make(static_cast<std::uint32_t>(code)) | ERR_PORT::make(adapter)};
}

std::vector<std::byte> encode(std::span<const std::uint32_t> dwords) {
    std::vector<std::byte> out(dwords.size() * 4 + kCrcBytes);
    for (std::size_t i = 0; i < dwords.size(); ++i) {
        util::store_be32(out.data() + 4 * i, dwords[i]);
    }
    util::store_be32(out.data() + dwords.size() * 4,
                     util::crc32c(std::span<const std::byte>(out).first(dwords.size() * 4)));
    return out;
}

}  // namespace

void Router::reply_error(std::uint64_t route, ErrorCode code, unsigned adapter, Outbox& out) {
    ++ctr_.error_replies;
    out.nhi.push_back({static_cast<unsigned>(Pdf::error), error_packet(route, code, adapter)});
}

void Router::control_from_nhi(const FrameView& frame, Time now, Outbox& out) {
    ++ctr_.ctl_from_nhi;
    // ref §5.1: the TX descriptor carries the PDF in both SOF and EOF.
    if (frame.sof_pdf != frame.eof_pdf) {
        ++ctr_.ctl_malformed_drops;
        return;
    }
    const auto parsed = parse(frame.eof_pdf, frame.data);
    if (const auto* e = std::get_if<ParseError>(&parsed)) {
        ++(*e == ParseError::crc ? ctr_.ctl_crc_drops : ctr_.ctl_malformed_drops);
        return;
    }
    const Parsed& p = std::get<Parsed>(parsed);
    if (HDR_RSVD::get(p.dw[0]) != 0) {
        ++ctr_.ctl_malformed_drops;
        return;
    }
    const std::uint64_t route = header_route(p);
    const auto pdf = static_cast<Pdf>(p.pdf);
    const bool request = pdf == Pdf::read || pdf == Pdf::write || pdf == Pdf::xdomain_req ||
                         pdf == Pdf::xdomain_resp;

    if (route != 0) {
        // Out the lane adapter named by route byte 0 (ref §5.3, §12.4).
        const auto adapter = static_cast<unsigned>(route & 0xff);
        if (adapter >= adapters_.size() || !adapters_[adapter].lane) {
            if (request) {
                reply_error(route, ErrorCode::no_such_port, adapter, out);
            } else {
                ++ctr_.ctl_unexpected_drops;
            }
            return;
        }
        Adapter& a = adapters_[adapter];
        std::optional<ErrorCode> err;
        if (ADP4_LCK::get(a.space[ADP_CS_4]) != 0) {
            err = ErrorCode::lock;
        } else if (!lane_is_up(a) || ports_[a.port].end == nullptr) {
            err = ErrorCode::port_not_connected;
        }
        if (err) {
            if (request) {
                reply_error(route, *err, adapter, out);
            } else {
                ++ctr_.ctl_unexpected_drops;
            }
            return;
        }
        ++ctr_.forwarded;
        Outbox::ToCable c{ports_[a.port].end, {}, {frame.data.begin(), frame.data.end()}};
        c.pkt.kind = WireKind::control;
        c.pkt.lane = a.lane_index;
        c.pkt.sof_pdf = p.pdf;
        c.pkt.eof_pdf = p.pdf;
        out.cable.push_back(std::move(c));
        return;
    }

    switch (pdf) {
        case Pdf::read: {
            const std::uint32_t addr = p.dw[2];
            const unsigned len = ADDR_LENGTH::get(addr);
            if (p.n != 3 || ADDR_RSVD::get(addr) != 0 || len == 0 || len > kMaxConfigDwords) {
                ++ctr_.ctl_malformed_drops;
                return;
            }
            const auto space = static_cast<Space>(ADDR_SPACE::get(addr));
            const unsigned adapter = ADDR_PORT::get(addr);
            std::vector<std::uint32_t> resp(3 + len);
            if (auto e = read_space(space, adapter, ADDR_OFFSET::get(addr), len, &resp[3], now)) {
                reply_error(route, *e, adapter, out);
                return;
            }
            ++ctr_.reads;
            // ref §5.4: PDF 2 response echoing offset/length/space/seq; port = upstream adapter.
            const auto h = response_header(route);
            resp[0] = h[0];
            resp[1] = h[1];
            resp[2] = ADDR_PORT::set(addr, CS1_UPSTREAM::get(router_space_[ROUTER_CS_1]));
            out.nhi.push_back({static_cast<unsigned>(Pdf::write), std::move(resp)});
            return;
        }
        case Pdf::write: {
            const std::uint32_t addr = p.dw[2];
            const unsigned len = ADDR_LENGTH::get(addr);
            if (p.n < 4 || p.n - 3 != len || ADDR_RSVD::get(addr) != 0 || len > kMaxConfigDwords) {
                ++ctr_.ctl_malformed_drops;
                return;
            }
            const auto space = static_cast<Space>(ADDR_SPACE::get(addr));
            const unsigned adapter = ADDR_PORT::get(addr);
            // What the write sets off (events of a port reset, link status to the peer) goes
            // out after the response: the router answers, then acts on the change.
            Outbox effects;
            if (auto e = write_space(space, adapter, ADDR_OFFSET::get(addr),
                                     std::span<const std::uint32_t>(&p.dw[3], len), now, effects)) {
                reply_error(route, *e, adapter, out);
            } else {
                ++ctr_.writes;
                const auto h = response_header(route);
                out.nhi.push_back(
                    {static_cast<unsigned>(Pdf::read),
                     {h[0], h[1],
                      ADDR_PORT::set(addr, CS1_UPSTREAM::get(router_space_[ROUTER_CS_1]))}});
            }
            std::move(effects.nhi.begin(), effects.nhi.end(), std::back_inserter(out.nhi));
            std::move(effects.cable.begin(), effects.cable.end(), std::back_inserter(out.cable));
            return;
        }
        case Pdf::error:
            if (p.n == 3 &&
                ERR_CODE::get(p.dw[2]) == static_cast<std::uint32_t>(ErrorCode::ack_plug_event)) {
                handle_ack(p.dw[2]);
            } else {
                ++ctr_.ctl_unexpected_drops;
            }
            return;
        case Pdf::notify_ack: ++ctr_.notify_acks; return;
        default:
            // XDomain to route 0 (ourselves), events, ICM packets: nothing a host router takes.
            ++ctr_.ctl_unexpected_drops;
            return;
    }
}

void Router::handle_ack(std::uint32_t dw2) {
    // ref §5.6: PDF 3 code 7, adapter = event adapter, PG 2 (plug) / 3 (unplug).
    const unsigned adapter = ERR_PORT::get(dw2);
    const std::uint32_t pg = ERR_PG::get(dw2);
    const auto it = std::find_if(events_.begin(), events_.end(), [&](const PendingEvent& e) {
        return e.adapter == adapter && pg == (e.unplug ? kPgUnplug : kPgPlug);
    });
    if (it == events_.end()) {
        ++ctr_.stray_acks;
        return;
    }
    events_.erase(it);
    ++ctr_.event_acks;
}

void Router::send_event(PendingEvent& ev, bool resend, Outbox& out) {
    ++(resend ? ctr_.events_resent : ctr_.events_sent);
    const auto h = response_header(0);
    out.nhi.push_back(
        {static_cast<unsigned>(Pdf::event),
         {h[0], h[1], EVT_PORT::make(ev.adapter) | EVT_UNPLUG::make(ev.unplug ? 1 : 0)}});
}

void Router::control_from_cable(unsigned port, const WirePacket& w, Outbox& out) {
    if (port >= ports_.size() || w.lane > 1) {
        ++ctr_.ctl_malformed_drops;
        return;
    }
    const unsigned adapter = lane_adapter(port, w.lane);
    Adapter& a = adapters_[adapter];
    if (!lane_is_up(a)) {
        ++ctr_.ctl_unexpected_drops;  // nothing crosses a link that is down
        return;
    }
    const auto parsed = parse(w.eof_pdf, w.data);
    if (const auto* e = std::get_if<ParseError>(&parsed)) {
        ++(*e == ParseError::crc ? ctr_.ctl_crc_drops : ctr_.ctl_malformed_drops);
        return;
    }
    Parsed p = std::get<Parsed>(parsed);
    const bool from_router = HDR_RESPONSE::get(p.dw[0]) != 0;
    switch (static_cast<Pdf>(p.pdf)) {
        case Pdf::xdomain_req:
        case Pdf::xdomain_resp: {
            // ref §8.1 [inferred]: the route becomes ours back to the sender, bit 63 set.
            const auto h = response_header(adapter);
            p.dw[0] = h[0];
            p.dw[1] = h[1];
            ++ctr_.from_peer;
            out.nhi.push_back({p.pdf, {p.dw.begin(), p.dw.begin() + p.n}});
            return;
        }
        case Pdf::read:
        case Pdf::write:
            if (from_router) {
                // An answer coming back to our CM (a device router would send these).
                ++ctr_.from_peer;
                out.nhi.push_back({p.pdf, {p.dw.begin(), p.dw.begin() + p.n}});
                return;
            }
            if (p.n < 3) {
                ++ctr_.ctl_malformed_drops;
                return;
            }
            {
                // A config request from another domain's CM: refuse it (see top of file).
                ++ctr_.xdomain_config_errors;
                ++ctr_.error_replies;
                const auto dw = error_packet(header_route(p), ErrorCode::loop, adapter);
                Outbox::ToCable c{ports_[port].end, {}, encode(dw)};
                c.pkt.kind = WireKind::control;
                c.pkt.lane = w.lane;
                c.pkt.sof_pdf = static_cast<unsigned>(Pdf::error);
                c.pkt.eof_pdf = static_cast<unsigned>(Pdf::error);
                if (c.end != nullptr) {
                    out.cable.push_back(std::move(c));
                }
            }
            return;
        case Pdf::error:
            if (from_router && p.n == 3) {
                ++ctr_.from_peer;
                out.nhi.push_back({p.pdf, {p.dw.begin(), p.dw.begin() + p.n}});
                return;
            }
            ++ctr_.ctl_unexpected_drops;
            return;
        default: ++ctr_.ctl_unexpected_drops; return;
    }
}

void Router::flush(Outbox& out) noexcept {
    std::uint64_t refused = 0;
    for (const auto& m : out.nhi) {
        const std::vector<std::byte> bytes = encode(m.dwords);
        // ref §5.1 / §12.3: raw RX reports SOF 0, EOF = PDF; the payload includes the CRC.
        const FrameView f{0, m.pdf, bytes, false};
        if (nhi_.receive(0, f) != RxResult::delivered) {
            ++refused;
        }
    }
    for (auto& c : out.cable) {
        c.pkt.data = c.bytes;
        c.end->send(c.pkt);
    }
    if (refused != 0) {
        std::lock_guard lk(mu_);
        ctr_.nhi_refused += refused;
    }
}

}  // namespace tbv::emu
