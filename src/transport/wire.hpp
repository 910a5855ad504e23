// SPDX-License-Identifier: Apache-2.0
// The tbverbs frame format on a rail (docs/wire-protocol.md): a 32-byte base header, then
// per-opcode extension headers, then payload; every frame ≤ 4096 bytes (one NHI descriptor),
// every field little-endian. Encoders write into a caller buffer; the decoder validates every
// field before anything above it may look at the frame. Hot path: no allocation, no exceptions,
// results are small enums.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

namespace tbv::transport::wire {

inline constexpr std::uint8_t kVersion = 1;
inline constexpr std::size_t kMaxFrame = 4096;  ///< NHI descriptor length is 12 bits
inline constexpr std::size_t kBaseHeader = 32;
inline constexpr std::size_t kRethSize = 12;       ///< remote VA 8 + rkey 4
inline constexpr std::size_t kImmSize = 4;         ///< immediate data
inline constexpr std::size_t kAtomicEthSize = 28;  ///< VA 8 + swap/add 8 + compare 8 + rkey 4
inline constexpr std::size_t kAethSize = 4;        ///< syndrome 8 + MSN 24
inline constexpr std::size_t kAtomicAckSize = 8;   ///< original value at the responder
inline constexpr std::size_t kDethSize = 4;        ///< UD: Q_Key (source QPN is in the base header)
/// SETH: the message's number among the receive-consuming messages of the QP (SENDs and WRITEs
/// with immediate), 24 bits. With striping a frame of message n+1 may overtake message n; the
/// responder uses this number to find the receive WQE the frame belongs to.
inline constexpr std::size_t kSethSize = 4;
/// GRH extension of a UD datagram sent with a GRH (kFlagGrh): the source GID 16, traffic class
/// and flow label 4, hop limit 4. The receiver builds the 40-byte GRH from it; the DGID is not
/// carried (the receiver names its own GID, its port's only one).
inline constexpr std::size_t kGrhExtSize = 24;
inline constexpr std::uint32_t kFlowLabelMask = 0xF'FFFFu;  ///< IB/IPv6 flow label: 20 bits
/// Largest header of a segmented (RC/UC) data frame: RDMA WRITE with RETH + SETH + immediate.
/// A UD datagram's header may be larger (up to 64 bytes with a GRH), but a datagram carries at
/// most the 2048-byte MTU.
inline constexpr std::size_t kMaxDataHeader = kBaseHeader + kRethSize + kSethSize + kImmSize;
/// Payload per frame the segmenter uses for every data opcode, so that frame i of a message
/// starts at byte i * kSegment whatever its header: 4096 - 52.
inline constexpr std::size_t kSegment = kMaxFrame - 52;
static_assert(kSegment + kMaxDataHeader <= kMaxFrame);
/// Largest message (IB: 2^31 bytes).
inline constexpr std::uint32_t kMaxMessage = 0x8000'0000u;
inline constexpr std::uint32_t kQpnMask = 0xFF'FFFFu;

/// Opcodes. 0x00-0x14 keep the InfiniBand RC opcode numbers (IBA vol. 1 table 38, low 5 bits)
/// so traces read the same; the rest are ours.
enum class Opcode : std::uint8_t {
    send_first = 0x00,
    send_middle = 0x01,
    send_last = 0x02,
    send_last_imm = 0x03,
    send_only = 0x04,
    send_only_imm = 0x05,
    write_first = 0x06,
    write_middle = 0x07,
    write_last = 0x08,
    write_last_imm = 0x09,
    write_only = 0x0A,
    write_only_imm = 0x0B,
    read_request = 0x0C,
    read_response_first = 0x0D,
    read_response_middle = 0x0E,
    read_response_last = 0x0F,
    read_response_only = 0x10,
    ack = 0x11,
    atomic_ack = 0x12,
    cmp_swap = 0x13,
    fetch_add = 0x14,
    nak = 0x15,      ///< AETH syndrome = NakCode
    rnr_nak = 0x16,  ///< AETH syndrome = 5-bit RNR timer code
    credit = 0x17,   ///< rail credit update only (the base header's credit field)
    ud_send_only = 0x18,
    ud_send_only_imm = 0x19,
};
inline constexpr std::uint8_t kOpcodeCount = 0x1A;

/// Base-header flag bits (low nibble of byte 0; the high nibble is the version).
inline constexpr std::uint8_t kFlagSolicited = 0x01;   ///< solicited event (last/only + imm)
inline constexpr std::uint8_t kFlagAckRequest = 0x02;  ///< receiver: ACK this frame now
/// UD only: the datagram was sent with a GRH (the address handle's is_global), so a GRH
/// extension header (kGrhExtSize) follows the DETH — as IB's LRH:LNH says whether a GRH
/// follows the LRH. A receiver that does not know the bit drops the frame (reserved bits).
inline constexpr std::uint8_t kFlagGrh = 0x04;
inline constexpr std::uint8_t kFlagsKnown = kFlagSolicited | kFlagAckRequest | kFlagGrh;

/// NAK syndromes (IBA vol. 1 table 44 codes).
enum class NakCode : std::uint8_t {
    psn_sequence_error = 0,
    invalid_request = 1,
    remote_access_error = 2,
    remote_operational_error = 3,
    invalid_rd_request = 4,
};
inline constexpr std::uint8_t kNakCodeMax = 4;
inline constexpr std::uint8_t kRnrTimerMax = 31;

/// Position of a frame within its message.
enum class Position : std::uint8_t { first, middle, last, only, none };

/// What an opcode carries; one table drives encoder, decoder and tests.
struct OpcodeInfo {
    bool known = false;
    bool data = false;        ///< carries payload at msg_offset of a message
    bool sequenced = false;   ///< consumes a PSN of the requester stream (requests, responses)
    bool reth = false;        ///< RDMA extended header (VA, rkey)
    bool imm = false;         ///< immediate data
    bool atomic_eth = false;  ///< atomic request header
    bool aeth = false;        ///< ACK extended header
    bool atomic_ack = false;  ///< original value
    bool deth = false;        ///< UD Q_Key
    bool seth = false;        ///< receive sequence number (consumes a receive WQE)
    bool solicited_ok = false;
    Position position = Position::none;
};

constexpr OpcodeInfo opcode_info(std::uint8_t op) noexcept {
    OpcodeInfo i{};
    if (op >= kOpcodeCount) {
        return i;
    }
    i.known = true;
    switch (static_cast<Opcode>(op)) {
        case Opcode::send_first: i.position = Position::first; break;
        case Opcode::send_middle: i.position = Position::middle; break;
        case Opcode::send_last: i.position = Position::last; break;
        case Opcode::send_last_imm:
            i.position = Position::last;
            i.imm = true;
            break;
        case Opcode::send_only: i.position = Position::only; break;
        case Opcode::send_only_imm:
            i.position = Position::only;
            i.imm = true;
            break;
        case Opcode::write_first:
            i.position = Position::first;
            i.reth = true;
            break;
        case Opcode::write_middle:
            i.position = Position::middle;
            i.reth = true;
            break;
        case Opcode::write_last:
            i.position = Position::last;
            i.reth = true;
            break;
        case Opcode::write_last_imm:
            i.position = Position::last;
            i.reth = true;
            i.imm = true;
            break;
        case Opcode::write_only:
            i.position = Position::only;
            i.reth = true;
            break;
        case Opcode::write_only_imm:
            i.position = Position::only;
            i.reth = true;
            i.imm = true;
            break;
        case Opcode::read_request: i.reth = true; break;
        case Opcode::read_response_first: i.position = Position::first; break;
        case Opcode::read_response_middle: i.position = Position::middle; break;
        case Opcode::read_response_last: i.position = Position::last; break;
        case Opcode::read_response_only: i.position = Position::only; break;
        case Opcode::ack: i.aeth = true; break;
        case Opcode::atomic_ack:
            i.aeth = true;
            i.atomic_ack = true;
            break;
        case Opcode::cmp_swap: i.atomic_eth = true; break;
        case Opcode::fetch_add: i.atomic_eth = true; break;
        case Opcode::nak: i.aeth = true; break;
        case Opcode::rnr_nak: i.aeth = true; break;
        case Opcode::credit: break;
        case Opcode::ud_send_only:
            i.position = Position::only;
            i.deth = true;
            break;
        case Opcode::ud_send_only_imm:
            i.position = Position::only;
            i.deth = true;
            i.imm = true;
            break;
    }
    i.data = i.position != Position::none;
    // Every RC/UC frame of a SEND, and the frame of a WRITE that completes with an immediate,
    // names its receive WQE.
    i.seth = op <= static_cast<std::uint8_t>(Opcode::send_only_imm) ||
             op == static_cast<std::uint8_t>(Opcode::write_last_imm) ||
             op == static_cast<std::uint8_t>(Opcode::write_only_imm);
    // Requests and read responses take PSNs; ACK/NAK/RNR/credit frames and UD datagrams do not.
    i.sequenced = i.data || i.atomic_eth || op == static_cast<std::uint8_t>(Opcode::read_request);
    if (i.deth) {
        i.sequenced = false;
    }
    i.solicited_ok = (i.position == Position::last || i.position == Position::only) &&
                     (op <= static_cast<std::uint8_t>(Opcode::send_only_imm) || i.imm || i.deth);
    return i;
}

/// Header bytes for an opcode (base + extensions); 0 for an unknown opcode.
constexpr std::size_t header_size(std::uint8_t op) noexcept {
    const OpcodeInfo i = opcode_info(op);
    if (!i.known) {
        return 0;
    }
    return kBaseHeader + (i.reth ? kRethSize : 0) + (i.imm ? kImmSize : 0) +
           (i.atomic_eth ? kAtomicEthSize : 0) + (i.aeth ? kAethSize : 0) +
           (i.atomic_ack ? kAtomicAckSize : 0) + (i.deth ? kDethSize : 0) +
           (i.seth ? kSethSize : 0);
}
constexpr std::size_t header_size(Opcode op) noexcept {
    return header_size(static_cast<std::uint8_t>(op));
}

/// Header bytes of a frame with these flags: header_size(op), plus the GRH extension when
/// kFlagGrh is set on a UD opcode (on any other opcode the flag is invalid and adds nothing).
constexpr std::size_t header_size(std::uint8_t op, std::uint8_t flags) noexcept {
    const std::size_t n = header_size(op);
    return n != 0 && (flags & kFlagGrh) != 0 && opcode_info(op).deth ? n + kGrhExtSize : n;
}
constexpr std::size_t header_size(Opcode op, std::uint8_t flags) noexcept {
    return header_size(static_cast<std::uint8_t>(op), flags);
}

static_assert(header_size(Opcode::send_only) == 36);
static_assert(header_size(Opcode::ud_send_only_imm, kFlagGrh) == 64);
static_assert(header_size(Opcode::write_only_imm) == kMaxDataHeader);
static_assert(header_size(Opcode::cmp_swap) == 60);
static_assert(header_size(Opcode::atomic_ack) == 44);

struct Reth {
    std::uint64_t va = 0;  ///< base VA of the whole message; a frame lands at va + msg_offset
    std::uint32_t rkey = 0;
};

struct AtomicEth {
    std::uint64_t va = 0;
    std::uint64_t swap_add = 0;  ///< swap value (CMP_SWP) or addend (FETCH_ADD)
    std::uint64_t compare = 0;   ///< CMP_SWP only; 0 for FETCH_ADD
    std::uint32_t rkey = 0;
};

struct Aeth {
    std::uint8_t syndrome = 0;  ///< ACK 0, NAK: NakCode, RNR NAK: timer code 0-31
    std::uint32_t msn = 0;      ///< 24-bit count of messages the responder completed
};

/// GRH extension (UD with kFlagGrh): the GRH fields the receiver cannot know by itself.
struct GrhExt {
    std::array<std::uint8_t, 16> sgid{};  ///< the sender's GID, raw bytes (network order)
    std::uint32_t flow_label = 0;         ///< 20 bits
    std::uint8_t traffic_class = 0;
    std::uint8_t hop_limit = 0;
    bool operator==(const GrhExt&) const = default;
};

/// Every field of a frame header, decoded (host order). Fields an opcode does not carry are 0.
struct Header {
    Opcode opcode = Opcode::send_only;
    std::uint8_t flags = 0;        ///< kFlag* bits (4-bit field)
    std::uint16_t rail_seq = 0;    ///< low 16 bits of the sender's per-rail frame counter
    std::uint32_t dest_qpn = 0;    ///< 24 bits
    std::uint32_t src_qpn = 0;     ///< 24 bits (peer binding; UD source QPN)
    std::uint32_t psn = 0;         ///< 24 bits; ACK: last PSN received in order; NAK: expected
    std::uint32_t msg_psn = 0;     ///< 24 bits: PSN of the message's first frame (data opcodes)
    std::uint32_t msg_offset = 0;  ///< byte offset of this payload within the message
    std::uint32_t msg_len = 0;     ///< total message bytes (read request: bytes to read)
    std::uint16_t payload_len = 0;
    std::uint16_t credit = 0;  ///< low 16 bits of the sender's cumulative RX credit limit (rail)
    Reth reth{};
    std::uint32_t imm = 0;  ///< opaque 32 bits, carried as written (network order is the app's)
    AtomicEth atomic{};
    Aeth aeth{};
    std::uint64_t atomic_orig = 0;
    std::uint32_t qkey = 0;
    std::uint32_t ssn = 0;  ///< SETH: receive sequence number (24 bits)
    GrhExt grh{};           ///< with kFlagGrh only (all zero otherwise)
};

enum class Status : std::uint8_t {
    ok = 0,
    too_short,      ///< fewer bytes than the base header or the opcode's header
    too_long,       ///< frame beyond 4096 bytes, or the buffer cannot hold the frame
    bad_version,    ///< version byte is not kVersion
    bad_opcode,     ///< opcode not in the table
    reserved_bits,  ///< a reserved field or bit is not zero
    bad_length,     ///< payload_len inconsistent with the frame length or the opcode
    bad_offset,     ///< msg_offset/msg_len/msg_psn inconsistent with the frame's position
    bad_field,      ///< a field value outside its range (24-bit QPN/PSN, syndrome, flags)
};
const char* to_string(Status s) noexcept;

/// Writes the header for `h` (its payload_len must already be set) at the start of `out`.
/// Returns the header size written, or 0 if `h` is invalid or `out` too small. The caller puts
/// payload_len bytes of payload right after it (or uses encode_frame).
std::size_t encode_header(const Header& h, std::span<std::byte> out) noexcept;

/// Header + payload into `out`; sets nothing in `h` (payload.size() must equal h.payload_len).
/// Returns the frame length or 0 on error.
std::size_t encode_frame(const Header& h, std::span<const std::byte> payload,
                         std::span<std::byte> out) noexcept;

/// Checks `h` the way the decoder would (used by the encoder so we never emit a frame our own
/// peer would reject).
Status validate(const Header& h) noexcept;

struct Frame {
    Header header;
    std::span<const std::byte> payload;  ///< view into the decoded buffer
};

/// Parses and validates one received frame (exactly the bytes the RX descriptor reported).
Status decode(std::span<const std::byte> frame, Frame& out) noexcept;

}  // namespace tbv::transport::wire
