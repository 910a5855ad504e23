// SPDX-License-Identifier: Apache-2.0
// Typed USB4 control packets (nhi-reference §5, §8.1–8.2; "ref §x" below) and their codecs.
//
// A packet here is its host-order dwords plus its PDF, exactly what nhi::ControlRing sends and
// receives (the ring adds and checks the big-endian byte order and the CRC-32C). Encoders return an
// nhi::ControlPacket ready for ControlRing::send(p.pdf, p.payload()); decoders take the PDF and a
// span of dwords and return Errc::malformed for anything that is not exactly the documented
// shape: wrong size, reserved bits set, length fields that disagree with the size, out-of-range
// values, unknown PDFs. Decoders never read past the span and never allocate.
//
// Views: decoded structs that carry data (config data, XDomain payloads, property chunks) hold a
// std::span into the caller's dwords; they are valid only as long as those dwords are.
//
// Routes are 64-bit values as Linux keeps them: bits [53:0] the route string, bit 63
// (hw::usb4::kRouteFromPeer) = header DW0 bit 31, the "response / from router" bit. Encoders write
// bit 63 if it is set in `route`; match with `route_key()` (bit 63 masked, ref §5.3).
#pragma once

#include <cstdint>
#include <span>
#include <variant>

#include "hw/usb4_regs.hpp"
#include "nhi/control_ring.hpp"
#include "tbv/result.hpp"

namespace tbv::usb4 {

using hw::usb4::ErrorCode;
using hw::usb4::Pdf;
using hw::usb4::Space;
using hw::usb4::UuidDwords;
using hw::usb4::XdError;
using hw::usb4::XdType;
using nhi::ControlPacket;

/// Route with bit 63 cleared: what requests and responses are matched on.
constexpr std::uint64_t route_key(std::uint64_t route) noexcept {
    return route & hw::usb4::kRouteMask;
}
/// True if `route` fits a header (route bits [53:0], optionally bit 63).
constexpr bool route_valid(std::uint64_t route) noexcept {
    return (route & ~(hw::usb4::kRouteMask | hw::usb4::kRouteFromPeer)) == 0;
}

// ---- config space access (ref §5.4) ---------------------------------------------------------

/// The address dword of a READ/WRITE packet.
struct ConfigAddr {
    Space space = Space::router;
    std::uint8_t port = 0;     ///< 0..63; in a read response: the router's upstream adapter
    std::uint16_t offset = 0;  ///< dwords, 0..8191
    std::uint8_t length = 0;   ///< dwords, 1..60 (hw::usb4::kMaxConfigDwords)
    std::uint8_t seq = 0;      ///< 0..3
};

/// PDF 1 from the CM (header bit 63 clear), 3 dwords.
struct ReadRequest {
    std::uint64_t route = 0;
    ConfigAddr addr;
};
/// PDF 2 from a router (header tag 0x200), 3 + addr.length dwords.
struct ReadResponse {
    std::uint64_t route = 0;  ///< bit 63 set
    ConfigAddr addr;
    std::span<const std::uint32_t> data;  ///< addr.length dwords
};
/// PDF 2 from the CM, 3 + addr.length dwords.
struct WriteRequest {
    std::uint64_t route = 0;
    ConfigAddr addr;
    std::span<const std::uint32_t> data;  ///< addr.length dwords
};
/// PDF 1 from a router (header tag 0x200), 3 dwords.
struct WriteResponse {
    std::uint64_t route = 0;  ///< bit 63 set
    ConfigAddr addr;
};

// ---- errors, notifications, hot plug (ref §5.5, §5.6) --------------------------------------

/// PDF 3, 3 dwords. From a router: an error answering a request or an async notification
/// (is_async()). From the CM: the hot-plug ack (code 7, PG 2/3; see plug_ack()).
struct ErrorPacket {
    std::uint64_t route = 0;
    std::uint8_t code = 0;  ///< hw::usb4::ErrorCode value (unknown codes are kept as numbers)
    std::uint8_t port = 0;  ///< 0..63
    std::uint8_t pg = 0;    ///< 0..3: plug-ack type (hw::usb4::kPgPlug / kPgUnplug)

    bool is_async() const noexcept { return hw::usb4::is_async_error(code); }
};
/// The CM's ack of a hot-plug event: PDF 3 code 7, adapter = event adapter, PG 2 plug / 3 unplug,
/// route = event route (bit 63 cleared).
ErrorPacket plug_ack(std::uint64_t route, unsigned port, bool unplug) noexcept;

/// PDF 4, the 2-dword header only.
struct NotifyAck {
    std::uint64_t route = 0;
};

/// PDF 5, 3 dwords.
struct HotPlugEvent {
    std::uint64_t route = 0;
    std::uint8_t port = 0;  ///< 0..63
    bool unplug = false;
};

// ---- XDomain framing (ref §8.1) --------------------------------------------------------------

/// Most payload dwords after the 8-dword XDomain header: 63 − 8.
inline constexpr unsigned kMaxXdPayload = nhi::kMaxControlDwords - hw::usb4::kXdHeaderDwords;

/// PDF 6 (request) or 7 (response): route, length/seq dword, protocol UUID, type, payload.
struct XdomainPacket {
    Pdf pdf = Pdf::xdomain_req;  ///< xdomain_req or xdomain_resp
    std::uint64_t route = 0;
    std::uint8_t seq = 0;  ///< 0..3
    UuidDwords protocol{};
    std::uint32_t type = 0;
    std::span<const std::uint32_t> payload;  ///< ≤ kMaxXdPayload dwords
};

// ---- XDomain discovery messages (ref §8.2), payloads after the header -------------------------

struct XdUuidRequest {
    bool old = false;  ///< type 1 (UUID_REQUEST_OLD) instead of 12
};
struct XdUuidResponse {
    UuidDwords src_uuid{};
    std::uint64_t src_route = 0;
};
struct XdPropertiesRequest {
    UuidDwords src_uuid{};
    UuidDwords dst_uuid{};
    std::uint16_t offset = 0;
};
struct XdPropertiesResponse {
    UuidDwords src_uuid{};
    UuidDwords dst_uuid{};
    std::uint16_t offset = 0;
    std::uint16_t total = 0;  ///< whole block length in dwords (≤ kXdMaxPropertyBlock)
    std::uint32_t generation = 0;
    std::span<const std::uint32_t> data;  ///< ≤ 45 dwords; offset + size ≤ total
};
struct XdPropertiesChangedRequest {
    UuidDwords src_uuid{};
};
struct XdPropertiesChangedResponse {};
struct XdErrorResponse {
    XdError error = XdError::success;
};
struct XdLinkStateStatusRequest {};
struct XdLinkStateStatusResponse {
    std::uint32_t status = 0;  ///< 0 = OK
    std::uint8_t slw = 0, tlw = 0, sls = 0, tls = 0;
};
struct XdLinkStateChangeRequest {
    std::uint8_t tlw = 0, tls = 0;
};
struct XdLinkStateChangeResponse {
    std::uint32_t status = 0;
};

using XdMessage =
    std::variant<XdUuidRequest, XdUuidResponse, XdPropertiesRequest, XdPropertiesResponse,
                 XdPropertiesChangedRequest, XdPropertiesChangedResponse, XdErrorResponse,
                 XdLinkStateStatusRequest, XdLinkStateStatusResponse, XdLinkStateChangeRequest,
                 XdLinkStateChangeResponse>;

/// Requests travel as PDF 6, responses as PDF 7 (ref §8.1).
bool is_request(const XdMessage& m) noexcept;

// ---- encoders: std::errc::invalid_argument when a field does not fit its wire width -----------

Result<ControlPacket> encode(const ReadRequest& p) noexcept;
Result<ControlPacket> encode(const ReadResponse& p) noexcept;
Result<ControlPacket> encode(const WriteRequest& p) noexcept;
Result<ControlPacket> encode(const WriteResponse& p) noexcept;
Result<ControlPacket> encode(const ErrorPacket& p) noexcept;
Result<ControlPacket> encode(const NotifyAck& p) noexcept;
Result<ControlPacket> encode(const HotPlugEvent& p) noexcept;
Result<ControlPacket> encode(const XdomainPacket& p) noexcept;
/// A discovery message under the XDomain discovery UUID; PDF 6 for requests, 7 for responses.
Result<ControlPacket> encode_discovery(std::uint64_t route, unsigned seq,
                                       const XdMessage& m) noexcept;

// ---- decoders ----------------------------------------------------------------------------------

Result<ReadRequest> decode_read_request(std::span<const std::uint32_t> dw) noexcept;
Result<ReadResponse> decode_read_response(std::span<const std::uint32_t> dw) noexcept;
Result<WriteRequest> decode_write_request(std::span<const std::uint32_t> dw) noexcept;
Result<WriteResponse> decode_write_response(std::span<const std::uint32_t> dw) noexcept;
Result<ErrorPacket> decode_error(std::span<const std::uint32_t> dw) noexcept;
Result<NotifyAck> decode_notify_ack(std::span<const std::uint32_t> dw) noexcept;
Result<HotPlugEvent> decode_event(std::span<const std::uint32_t> dw) noexcept;
/// `pdf` must be 6 or 7.
Result<XdomainPacket> decode_xdomain(unsigned pdf, std::span<const std::uint32_t> dw) noexcept;
/// A discovery message from a decoded XDomain packet: protocol must be the discovery UUID, the
/// type known, the PDF right for the type (6 requests, 7 responses) and the payload exact.
Result<XdMessage> decode_discovery(const XdomainPacket& p) noexcept;

using AnyPacket = std::variant<ReadRequest, ReadResponse, WriteRequest, WriteResponse, ErrorPacket,
                               NotifyAck, HotPlugEvent, XdomainPacket>;

/// Any packet by PDF. PDF 1 and 2 are told apart by the header's bit 63: clear = request from the
/// CM, set = response from a router. PDFs 8 and above (override, reset, ICM) are not used by a
/// software CM and are malformed here, as are PDF 0 and > 15.
Result<AnyPacket> decode(unsigned pdf, std::span<const std::uint32_t> dw) noexcept;

}  // namespace tbv::usb4
