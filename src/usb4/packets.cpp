// SPDX-License-Identifier: Apache-2.0
#include "usb4/packets.hpp"

#include <algorithm>
#include <type_traits>

namespace tbv::usb4 {

using namespace hw::usb4;

namespace {

Failure malformed() noexcept {
    return fail(Errc::malformed);
}
Failure invalid() noexcept {
    return fail(std::errc::invalid_argument);
}

constexpr unsigned kHdr = 2;                        ///< route dwords
constexpr unsigned kCfgHdr = 3;                     ///< route + address dword
constexpr unsigned kMaxOffset = ADDR_OFFSET::kMax;  ///< 13 bits
constexpr unsigned kMaxPort = ADDR_PORT::kMax;      ///< 6 bits
constexpr unsigned kXdFixed = kXdHeaderDwords - 3;  ///< UUID + type: counted in the length field
constexpr unsigned kPropReqPayload = 9;             ///< src, dst, offset
constexpr unsigned kPropRespFixed = 10;             ///< src, dst, offset/total, generation
constexpr unsigned kUuidRespPayload = 6;            ///< src UUID, route hi, route lo

ControlPacket start(Pdf pdf, unsigned count, std::uint64_t route) noexcept {
    ControlPacket p;
    p.pdf = static_cast<std::uint8_t>(pdf);
    p.dword_count = static_cast<std::uint8_t>(count);
    p.dwords[0] = HDR_ROUTE_HI::make(static_cast<std::uint32_t>(route >> 32)) |
                  ((route & kRouteFromPeer) != 0 ? HDR_RESPONSE::kMask : 0u);
    p.dwords[1] = static_cast<std::uint32_t>(route);
    return p;
}

/// Route of a header; false if the reserved bits [30:22] of DW0 are set.
bool header_route(std::span<const std::uint32_t> dw, std::uint64_t& route) noexcept {
    if (dw.size() < kHdr || HDR_RSVD::get(dw[0]) != 0) {
        return false;
    }
    route = route_of(dw[0], dw[1]) | (HDR_RESPONSE::get(dw[0]) != 0 ? kRouteFromPeer : 0);
    return true;
}

bool from_router(std::uint64_t route) noexcept {
    return (route & kRouteFromPeer) != 0;
}

bool addr_fits(const ConfigAddr& a) noexcept {
    return static_cast<unsigned>(a.space) <= ADDR_SPACE::kMax && a.port <= kMaxPort &&
           a.offset <= kMaxOffset && a.length >= 1 && a.length <= kMaxConfigDwords &&
           a.seq <= ADDR_SEQ::kMax;
}

std::uint32_t addr_dword(const ConfigAddr& a) noexcept {
    return ADDR_OFFSET::make(a.offset) | ADDR_LENGTH::make(a.length) | ADDR_PORT::make(a.port) |
           ADDR_SPACE::make(static_cast<std::uint32_t>(a.space)) | ADDR_SEQ::make(a.seq);
}

bool parse_addr(std::uint32_t v, ConfigAddr& a) noexcept {
    if (ADDR_RSVD::get(v) != 0) {
        return false;
    }
    a.offset = static_cast<std::uint16_t>(ADDR_OFFSET::get(v));
    a.length = static_cast<std::uint8_t>(ADDR_LENGTH::get(v));
    a.port = static_cast<std::uint8_t>(ADDR_PORT::get(v));
    a.space = static_cast<Space>(ADDR_SPACE::get(v));
    a.seq = static_cast<std::uint8_t>(ADDR_SEQ::get(v));
    return a.length >= 1 && a.length <= kMaxConfigDwords;
}

Result<ControlPacket> encode_config(Pdf pdf, std::uint64_t route, const ConfigAddr& a,
                                    std::span<const std::uint32_t> data) noexcept {
    if (!route_valid(route) || !addr_fits(a)) {
        return invalid();
    }
    ControlPacket p = start(pdf, kCfgHdr + static_cast<unsigned>(data.size()), route);
    p.dwords[2] = addr_dword(a);
    std::copy(data.begin(), data.end(), p.dwords.begin() + kCfgHdr);
    return p;
}

/// Decodes a READ/WRITE packet. `with_data`: size must be 3 + length; `response`: bit 63 must be
/// set (tag 0x200, ref §5.3), else clear.
bool decode_config(std::span<const std::uint32_t> dw, bool with_data, bool response,
                   std::uint64_t& route, ConfigAddr& a) noexcept {
    if (dw.size() < kCfgHdr || !header_route(dw, route) || from_router(route) != response ||
        !parse_addr(dw[2], a)) {
        return false;
    }
    return dw.size() == (with_data ? kCfgHdr + a.length : kCfgHdr);
}

void put_uuid(ControlPacket& p, unsigned at, const UuidDwords& u) noexcept {
    std::copy(u.begin(), u.end(), p.dwords.begin() + at);
}
UuidDwords get_uuid(std::span<const std::uint32_t> s, unsigned at) noexcept {
    return {s[at], s[at + 1], s[at + 2], s[at + 3]};
}

}  // namespace

ErrorPacket plug_ack(std::uint64_t route, unsigned port, bool unplug) noexcept {
    ErrorPacket e;
    e.route = route_key(route);
    e.code = static_cast<std::uint8_t>(ErrorCode::ack_plug_event);
    e.port = static_cast<std::uint8_t>(port & ERR_PORT::kMax);
    e.pg = static_cast<std::uint8_t>(unplug ? kPgUnplug : kPgPlug);
    return e;
}

// ---- config -------------------------------------------------------------------------------------

Result<ControlPacket> encode(const ReadRequest& p) noexcept {
    return encode_config(Pdf::read, p.route, p.addr, {});
}
Result<ControlPacket> encode(const ReadResponse& p) noexcept {
    if (p.data.size() != p.addr.length) {
        return invalid();
    }
    return encode_config(Pdf::write, p.route | kRouteFromPeer, p.addr, p.data);
}
Result<ControlPacket> encode(const WriteRequest& p) noexcept {
    if (p.data.size() != p.addr.length) {
        return invalid();
    }
    return encode_config(Pdf::write, p.route, p.addr, p.data);
}
Result<ControlPacket> encode(const WriteResponse& p) noexcept {
    return encode_config(Pdf::read, p.route | kRouteFromPeer, p.addr, {});
}

Result<ReadRequest> decode_read_request(std::span<const std::uint32_t> dw) noexcept {
    ReadRequest r;
    if (!decode_config(dw, false, false, r.route, r.addr)) {
        return malformed();
    }
    return r;
}
Result<ReadResponse> decode_read_response(std::span<const std::uint32_t> dw) noexcept {
    ReadResponse r;
    if (!decode_config(dw, true, true, r.route, r.addr)) {
        return malformed();
    }
    r.data = dw.subspan(kCfgHdr);
    return r;
}
Result<WriteRequest> decode_write_request(std::span<const std::uint32_t> dw) noexcept {
    WriteRequest r;
    if (!decode_config(dw, true, false, r.route, r.addr)) {
        return malformed();
    }
    r.data = dw.subspan(kCfgHdr);
    return r;
}
Result<WriteResponse> decode_write_response(std::span<const std::uint32_t> dw) noexcept {
    WriteResponse r;
    if (!decode_config(dw, false, true, r.route, r.addr)) {
        return malformed();
    }
    return r;
}

// ---- error / notify ack / event --------------------------------------------------------------

Result<ControlPacket> encode(const ErrorPacket& p) noexcept {
    if (!route_valid(p.route) || p.port > ERR_PORT::kMax || p.pg > ERR_PG::kMax) {
        return invalid();
    }
    ControlPacket c = start(Pdf::error, 3, p.route);
    c.dwords[2] = ERR_CODE::make(p.code) | ERR_PORT::make(p.port) | ERR_PG::make(p.pg);
    return c;
}
Result<ErrorPacket> decode_error(std::span<const std::uint32_t> dw) noexcept {
    ErrorPacket e;
    if (dw.size() != 3 || !header_route(dw, e.route) || ERR_RSVD::get(dw[2]) != 0) {
        return malformed();
    }
    e.code = static_cast<std::uint8_t>(ERR_CODE::get(dw[2]));
    e.port = static_cast<std::uint8_t>(ERR_PORT::get(dw[2]));
    e.pg = static_cast<std::uint8_t>(ERR_PG::get(dw[2]));
    return e;
}

Result<ControlPacket> encode(const NotifyAck& p) noexcept {
    if (!route_valid(p.route)) {
        return invalid();
    }
    return start(Pdf::notify_ack, kHdr, p.route);
}
Result<NotifyAck> decode_notify_ack(std::span<const std::uint32_t> dw) noexcept {
    NotifyAck n;
    if (dw.size() != kHdr || !header_route(dw, n.route)) {
        return malformed();
    }
    return n;
}

Result<ControlPacket> encode(const HotPlugEvent& p) noexcept {
    if (!route_valid(p.route) || p.port > EVT_PORT::kMax) {
        return invalid();
    }
    ControlPacket c = start(Pdf::event, 3, p.route);
    c.dwords[2] = EVT_PORT::make(p.port) | EVT_UNPLUG::make(p.unplug ? 1 : 0);
    return c;
}
Result<HotPlugEvent> decode_event(std::span<const std::uint32_t> dw) noexcept {
    HotPlugEvent e;
    if (dw.size() != 3 || !header_route(dw, e.route) || EVT_RSVD::get(dw[2]) != 0) {
        return malformed();
    }
    e.port = static_cast<std::uint8_t>(EVT_PORT::get(dw[2]));
    e.unplug = EVT_UNPLUG::get(dw[2]) != 0;
    return e;
}

// ---- XDomain framing ----------------------------------------------------------------------------

Result<ControlPacket> encode(const XdomainPacket& p) noexcept {
    if ((p.pdf != Pdf::xdomain_req && p.pdf != Pdf::xdomain_resp) || !route_valid(p.route) ||
        p.seq > XD_SEQ::kMax || p.payload.size() > kMaxXdPayload) {
        return invalid();
    }
    const auto n = static_cast<unsigned>(p.payload.size());
    ControlPacket c = start(p.pdf, kXdHeaderDwords + n, p.route);
    c.dwords[2] = XD_LENGTH::make(kXdFixed + n) | XD_SEQ::make(p.seq);
    put_uuid(c, 3, p.protocol);
    c.dwords[7] = p.type;
    std::copy(p.payload.begin(), p.payload.end(), c.dwords.begin() + kXdHeaderDwords);
    return c;
}

Result<XdomainPacket> decode_xdomain(unsigned pdf, std::span<const std::uint32_t> dw) noexcept {
    XdomainPacket x;
    if ((pdf != static_cast<unsigned>(Pdf::xdomain_req) &&
         pdf != static_cast<unsigned>(Pdf::xdomain_resp)) ||
        dw.size() < kXdHeaderDwords || dw.size() > nhi::kMaxControlDwords ||
        !header_route(dw, x.route) || (dw[2] & kXdDw2Rsvd) != 0 ||
        XD_LENGTH::get(dw[2]) != dw.size() - 3) {
        return malformed();
    }
    x.pdf = static_cast<Pdf>(pdf);
    x.seq = static_cast<std::uint8_t>(XD_SEQ::get(dw[2]));
    x.protocol = get_uuid(dw, 3);
    x.type = dw[7];
    x.payload = dw.subspan(kXdHeaderDwords);
    return x;
}

// ---- XDomain discovery
// -----------------------------------------------------------------------------

bool is_request(const XdMessage& m) noexcept {
    return std::holds_alternative<XdUuidRequest>(m) ||
           std::holds_alternative<XdPropertiesRequest>(m) ||
           std::holds_alternative<XdPropertiesChangedRequest>(m) ||
           std::holds_alternative<XdLinkStateStatusRequest>(m) ||
           std::holds_alternative<XdLinkStateChangeRequest>(m);
}

Result<ControlPacket> encode_discovery(std::uint64_t route, unsigned seq,
                                       const XdMessage& m) noexcept {
    std::array<std::uint32_t, kMaxXdPayload> pl{};
    unsigned n = 0;
    const auto put = [&](std::uint32_t v) { pl[n++] = v; };
    const auto put_u = [&](const UuidDwords& u) {
        for (auto v : u) {
            put(v);
        }
    };
    XdType type{};
    bool ok_fields = true;
    std::visit(
        [&](const auto& v) {
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, XdUuidRequest>) {
                type = v.old ? XdType::uuid_request_old : XdType::uuid_request;
            } else if constexpr (std::is_same_v<T, XdUuidResponse>) {
                type = XdType::uuid_response;
                put_u(v.src_uuid);
                put(static_cast<std::uint32_t>(v.src_route >> 32));
                put(static_cast<std::uint32_t>(v.src_route));
            } else if constexpr (std::is_same_v<T, XdPropertiesRequest>) {
                type = XdType::properties_request;
                put_u(v.src_uuid);
                put_u(v.dst_uuid);
                put(XD_PROP_OFFSET::make(v.offset));
            } else if constexpr (std::is_same_v<T, XdPropertiesResponse>) {
                type = XdType::properties_response;
                ok_fields = v.data.size() <= kXdMaxPropertyChunk &&
                            v.offset + v.data.size() <= v.total && v.total <= kXdMaxPropertyBlock;
                if (ok_fields) {
                    put_u(v.src_uuid);
                    put_u(v.dst_uuid);
                    put(XD_PROP_OFFSET::make(v.offset) | XD_PROP_TOTAL::make(v.total));
                    put(v.generation);
                    for (auto d : v.data) {
                        put(d);
                    }
                }
            } else if constexpr (std::is_same_v<T, XdPropertiesChangedRequest>) {
                type = XdType::properties_changed_request;
                put_u(v.src_uuid);
            } else if constexpr (std::is_same_v<T, XdPropertiesChangedResponse>) {
                type = XdType::properties_changed_response;
            } else if constexpr (std::is_same_v<T, XdErrorResponse>) {
                type = XdType::error_response;
                put(static_cast<std::uint32_t>(v.error));
            } else if constexpr (std::is_same_v<T, XdLinkStateStatusRequest>) {
                type = XdType::link_state_status_request;
            } else if constexpr (std::is_same_v<T, XdLinkStateStatusResponse>) {
                type = XdType::link_state_status_response;
                put(v.status);
                put(XD_LS_SLW::make(v.slw) | XD_LS_TLW::make(v.tlw) | XD_LS_SLS::make(v.sls) |
                    XD_LS_TLS::make(v.tls));
            } else if constexpr (std::is_same_v<T, XdLinkStateChangeRequest>) {
                type = XdType::link_state_change_request;
                put(XD_LSC_TLW::make(v.tlw) | XD_LSC_TLS::make(v.tls));
            } else {
                static_assert(std::is_same_v<T, XdLinkStateChangeResponse>,
                              "every XdMessage alternative is encoded");
                type = XdType::link_state_change_response;
                put(v.status);
            }
        },
        m);
    if (!ok_fields || seq > XD_SEQ::kMax) {
        return invalid();
    }
    XdomainPacket x;
    x.pdf = is_request(m) ? Pdf::xdomain_req : Pdf::xdomain_resp;
    x.route = route;
    x.seq = static_cast<std::uint8_t>(seq);
    x.protocol = kXdomainDiscoveryUuid;
    x.type = static_cast<std::uint32_t>(type);
    x.payload = std::span<const std::uint32_t>(pl.data(), n);
    return encode(x);
}

Result<XdMessage> decode_discovery(const XdomainPacket& p) noexcept {
    if (p.protocol != kXdomainDiscoveryUuid) {
        return malformed();
    }
    const auto pl = p.payload;
    const bool req = p.pdf == Pdf::xdomain_req;
    const auto want = [&](bool request, std::size_t size) {
        return req == request && pl.size() == size;
    };
    switch (static_cast<XdType>(p.type)) {
        case XdType::uuid_request_old:
        case XdType::uuid_request:
            if (!want(true, 0)) {
                break;
            }
            return XdMessage{
                XdUuidRequest{p.type == static_cast<std::uint32_t>(XdType::uuid_request_old)}};
        case XdType::uuid_response: {
            if (!want(false, kUuidRespPayload)) {
                break;
            }
            XdUuidResponse r;
            r.src_uuid = get_uuid(pl, 0);
            r.src_route = std::uint64_t{pl[4]} << 32 | pl[5];
            if (!route_valid(r.src_route)) {
                break;
            }
            return XdMessage{r};
        }
        case XdType::properties_request: {
            if (!want(true, kPropReqPayload) || XD_PROP_REQ_RSVD::get(pl[8]) != 0) {
                break;
            }
            XdPropertiesRequest r;
            r.src_uuid = get_uuid(pl, 0);
            r.dst_uuid = get_uuid(pl, 4);
            r.offset = static_cast<std::uint16_t>(XD_PROP_OFFSET::get(pl[8]));
            return XdMessage{r};
        }
        case XdType::properties_response: {
            if (req || pl.size() < kPropRespFixed ||
                pl.size() > kPropRespFixed + kXdMaxPropertyChunk) {
                break;
            }
            XdPropertiesResponse r;
            r.src_uuid = get_uuid(pl, 0);
            r.dst_uuid = get_uuid(pl, 4);
            r.offset = static_cast<std::uint16_t>(XD_PROP_OFFSET::get(pl[8]));
            r.total = static_cast<std::uint16_t>(XD_PROP_TOTAL::get(pl[8]));
            r.generation = pl[9];
            r.data = pl.subspan(kPropRespFixed);
            if (r.total > kXdMaxPropertyBlock || r.offset + r.data.size() > r.total) {
                break;
            }
            return XdMessage{r};
        }
        case XdType::properties_changed_request:
            if (!want(true, 4)) {
                break;
            }
            return XdMessage{XdPropertiesChangedRequest{get_uuid(pl, 0)}};
        case XdType::properties_changed_response:
            if (!want(false, 0)) {
                break;
            }
            return XdMessage{XdPropertiesChangedResponse{}};
        case XdType::error_response:
            if (!want(false, 1) || pl[0] > static_cast<std::uint32_t>(XdError::not_ready)) {
                break;
            }
            return XdMessage{XdErrorResponse{static_cast<XdError>(pl[0])}};
        case XdType::link_state_status_request:
            if (!want(true, 0)) {
                break;
            }
            return XdMessage{XdLinkStateStatusRequest{}};
        case XdType::link_state_status_response: {
            if (!want(false, 2)) {
                break;
            }
            XdLinkStateStatusResponse r;
            r.status = pl[0];
            r.slw = static_cast<std::uint8_t>(XD_LS_SLW::get(pl[1]));
            r.tlw = static_cast<std::uint8_t>(XD_LS_TLW::get(pl[1]));
            r.sls = static_cast<std::uint8_t>(XD_LS_SLS::get(pl[1]));
            r.tls = static_cast<std::uint8_t>(XD_LS_TLS::get(pl[1]));
            return XdMessage{r};
        }
        case XdType::link_state_change_request: {
            if (!want(true, 1) || XD_LSC_RSVD::get(pl[0]) != 0) {
                break;
            }
            XdLinkStateChangeRequest r;
            r.tlw = static_cast<std::uint8_t>(XD_LSC_TLW::get(pl[0]));
            r.tls = static_cast<std::uint8_t>(XD_LSC_TLS::get(pl[0]));
            return XdMessage{r};
        }
        case XdType::link_state_change_response:
            if (!want(false, 1)) {
                break;
            }
            return XdMessage{XdLinkStateChangeResponse{pl[0]}};
    }
    return malformed();
}

// ---- any packet
// -------------------------------------------------------------------------------------

Result<AnyPacket> decode(unsigned pdf, std::span<const std::uint32_t> dw) noexcept {
    const auto wrap = [](auto r) -> Result<AnyPacket> {
        if (!r) {
            return Failure{r.error()};
        }
        return AnyPacket{*r};
    };
    if (dw.size() < kHdr) {
        return malformed();
    }
    const bool response = HDR_RESPONSE::get(dw[0]) != 0;
    switch (pdf) {
        case static_cast<unsigned>(Pdf::read):
            return response ? wrap(decode_write_response(dw)) : wrap(decode_read_request(dw));
        case static_cast<unsigned>(Pdf::write):
            return response ? wrap(decode_read_response(dw)) : wrap(decode_write_request(dw));
        case static_cast<unsigned>(Pdf::error): return wrap(decode_error(dw));
        case static_cast<unsigned>(Pdf::notify_ack): return wrap(decode_notify_ack(dw));
        case static_cast<unsigned>(Pdf::event): return wrap(decode_event(dw));
        case static_cast<unsigned>(Pdf::xdomain_req):
        case static_cast<unsigned>(Pdf::xdomain_resp): return wrap(decode_xdomain(pdf, dw));
        default: return malformed();
    }
}

}  // namespace tbv::usb4
