// SPDX-License-Identifier: Apache-2.0
// transport: frame encode/decode round trips for every opcode and rejection of malformed frames.
#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "catch.hpp"
#include "transport/wire.hpp"

using namespace tbv::transport;
using namespace tbv::transport::wire;

namespace {

// A valid header for `op` with every field it carries set to a distinctive value.
Header sample(Opcode op, std::uint16_t payload) {
    Header h{};
    h.opcode = op;
    const OpcodeInfo i = opcode_info(static_cast<std::uint8_t>(op));
    h.dest_qpn = 0xABCDEF;
    h.src_qpn = 0x123456;
    h.psn = 0xFFFFFE;
    h.credit = 0xBEEF;
    h.rail_seq = 0x4321;
    if (i.data) {
        h.payload_len = payload;
        switch (i.position) {
            case Position::first:
                h.msg_psn = h.psn;
                h.msg_offset = 0;
                h.msg_len = payload + 5000u;
                break;
            case Position::middle:
                h.msg_psn = 0xFFFFF0;
                h.msg_offset = 4048;
                h.msg_len = 4048u + payload + 1u;
                break;
            case Position::last:
                h.msg_psn = 0xFFFFF0;
                h.msg_offset = 4048;
                h.msg_len = 4048u + payload;
                break;
            default:
                h.msg_psn = h.psn;
                h.msg_len = payload;
                break;
        }
        if (i.deth) {
            h.psn = 0;
            h.msg_psn = 0;
        }
    }
    if (i.reth) {
        h.reth = {0x0123'4567'89AB'CDEFull, 0xCAFEF00D};
    }
    if (i.imm) {
        h.imm = 0xDEADBEEF;
    }
    if (i.deth) {
        h.qkey = 0x11112222;
    }
    if (i.seth) {
        h.ssn = 0x00C0FFEE;
    }
    if (i.atomic_eth) {
        h.atomic = {0x1000'0000'0008ull, 0x5555'6666'7777'8888ull,
                    op == Opcode::cmp_swap ? 0x9999'AAAA'BBBB'CCCCull : 0ull, 0x77665544};
        h.msg_psn = h.psn;
        h.msg_len = 8;
    }
    if (op == Opcode::read_request) {
        h.msg_psn = h.psn;
        h.msg_len = 1u << 20;
    }
    if (i.aeth) {
        h.aeth.msn = 0x00ABCD;
        h.aeth.syndrome = op == Opcode::rnr_nak ? 14 : op == Opcode::nak ? 2 : 0;
    }
    if (i.atomic_ack) {
        h.atomic_orig = 0xFEDC'BA98'7654'3210ull;
    }
    if (op == Opcode::credit) {
        h.dest_qpn = 0;
        h.src_qpn = 0;
        h.psn = 0;
    }
    if (i.solicited_ok) {
        h.flags |= kFlagSolicited;
    }
    if (i.sequenced) {
        h.flags |= kFlagAckRequest;
    }
    return h;
}

bool same(const Header& a, const Header& b) {
    return a.opcode == b.opcode && a.flags == b.flags && a.dest_qpn == b.dest_qpn &&
           a.src_qpn == b.src_qpn && a.psn == b.psn && a.msg_psn == b.msg_psn &&
           a.msg_offset == b.msg_offset && a.msg_len == b.msg_len &&
           a.payload_len == b.payload_len && a.credit == b.credit && a.rail_seq == b.rail_seq &&
           a.reth.va == b.reth.va && a.reth.rkey == b.reth.rkey && a.imm == b.imm &&
           a.atomic.va == b.atomic.va && a.atomic.swap_add == b.atomic.swap_add &&
           a.atomic.compare == b.atomic.compare && a.atomic.rkey == b.atomic.rkey &&
           a.aeth.syndrome == b.aeth.syndrome && a.aeth.msn == b.aeth.msn &&
           a.atomic_orig == b.atomic_orig && a.qkey == b.qkey && a.ssn == b.ssn && a.grh == b.grh;
}

// A UD datagram sent with a GRH: the flag and the GRH extension's fields.
Header sample_grh(Opcode op, std::uint16_t payload) {
    Header h = sample(op, payload);
    h.flags |= kFlagGrh;
    for (std::size_t i = 0; i < h.grh.sgid.size(); ++i) {
        h.grh.sgid[i] = static_cast<std::uint8_t>(0xA0 + i);
    }
    h.grh.flow_label = 0xABCDE;
    h.grh.traffic_class = 0x5C;
    h.grh.hop_limit = 0x40;
    return h;
}

std::vector<std::byte> encode(const Header& h) {
    std::vector<std::byte> payload(h.payload_len);
    for (std::size_t i = 0; i < payload.size(); ++i) {
        payload[i] = static_cast<std::byte>(i * 13 + 1);
    }
    std::vector<std::byte> out(kMaxFrame + 16);
    const std::size_t n = encode_frame(h, payload, out);
    REQUIRE(n != 0);
    out.resize(n);
    return out;
}

}  // namespace

TEST_CASE("wire: every opcode round-trips", "[unit][transport][wire]") {
    for (std::uint8_t op = 0; op < kOpcodeCount; ++op) {
        const OpcodeInfo info = opcode_info(op);
        REQUIRE(info.known);
        for (std::uint16_t payload : {std::uint16_t{0}, std::uint16_t{1}, std::uint16_t{777},
                                      static_cast<std::uint16_t>(kSegment)}) {
            if (!info.data && payload != 0) {
                continue;
            }
            if (info.data && payload == 0 && info.position != Position::only) {
                continue;  // only ONLY frames may be empty
            }
            const Header h = sample(static_cast<Opcode>(op), payload);
            INFO("opcode " << int(op) << " payload " << payload);
            REQUIRE(validate(h) == Status::ok);
            const auto bytes = encode(h);
            CHECK(bytes.size() == header_size(op) + payload);
            CHECK(std::to_integer<int>(bytes[0]) >> 4 == kVersion);
            CHECK(std::to_integer<int>(bytes[1]) == op);
            Frame f{};
            REQUIRE(decode(bytes, f) == Status::ok);
            CHECK(same(f.header, h));
            REQUIRE(f.payload.size() == payload);
            if (payload > 0) {
                CHECK(f.payload.data() == bytes.data() + header_size(op));
                CHECK(std::memcmp(f.payload.data(), bytes.data() + header_size(op), payload) == 0);
            }
        }
    }
}

TEST_CASE("wire: a UD datagram with a GRH carries the GRH extension after the DETH",
          "[unit][transport][wire]") {
    for (const Opcode op : {Opcode::ud_send_only, Opcode::ud_send_only_imm}) {
        for (std::uint16_t payload : {std::uint16_t{0}, std::uint16_t{5}, std::uint16_t{2048}}) {
            INFO("opcode " << int(op) << " payload " << payload);
            const Header h = sample_grh(op, payload);
            REQUIRE(validate(h) == Status::ok);
            const auto b = encode(h);
            REQUIRE(b.size() == header_size(op) + kGrhExtSize + payload);
            CHECK(header_size(op, h.flags) == header_size(op) + kGrhExtSize);
            auto u8 = [&](std::size_t i) { return std::to_integer<unsigned>(b[i]); };
            CHECK(u8(0) == (0x10u | kFlagSolicited | kFlagGrh));
            CHECK(u8(32) == 0x22);  // DETH: Q_Key 0x11112222, LSB first
            CHECK(u8(36) == 0xA0);  // SGID, byte for byte
            CHECK(u8(51) == 0xAF);
            // Flow label in bits 19:0, traffic class in bits 27:20, little-endian.
            CHECK((u8(52) | u8(53) << 8 | u8(54) << 16 | u8(55) << 24) == 0x05CABCDEu);
            CHECK((u8(56) | u8(57) << 8 | u8(58) << 16 | u8(59) << 24) == 0x40u);
            if (op == Opcode::ud_send_only_imm) {
                CHECK(u8(60) == 0xEF);  // the immediate follows the GRH extension
            }
            Frame f{};
            REQUIRE(decode(b, f) == Status::ok);
            CHECK(same(f.header, h));
            REQUIRE(f.payload.size() == payload);
            CHECK(f.payload.data() == b.data() + header_size(op, kFlagGrh));
        }
    }
    Frame f{};
    const auto base = encode(sample_grh(Opcode::ud_send_only, 16));
    auto mutated = [&](std::size_t i, std::uint8_t v) {
        auto b = base;
        b[i] = std::byte{v};
        return decode(b, f);
    };
    CHECK(mutated(55, 0x15) == Status::reserved_bits);  // bits 31:28 of the class/flow word
    CHECK(mutated(57, 0x01) == Status::reserved_bits);  // bits 31:8 of the hop-limit word
    CHECK(mutated(59, 0x80) == Status::reserved_bits);
    // Without the flag the frame is 24 bytes too long for its header; cut short, too short.
    CHECK(mutated(0, 0x10 | kFlagSolicited) == Status::bad_length);
    CHECK(decode(std::span(base).first(50), f) == Status::too_short);

    // The encoder's checks: the GRH only on UD, its fields only with the flag, 20-bit flow label.
    Header h = sample_grh(Opcode::ud_send_only, 16);
    h.grh.flow_label = kFlowLabelMask + 1;
    CHECK(validate(h) == Status::bad_field);
    h = sample(Opcode::ud_send_only, 16);
    h.grh.hop_limit = 1;
    CHECK(validate(h) == Status::bad_field);
    h = sample(Opcode::send_only, 16);
    h.flags |= kFlagGrh;
    CHECK(validate(h) == Status::bad_field);
    std::array<std::byte, 128> out{};
    CHECK(encode_header(h, out) == 0);
    h = sample_grh(Opcode::ud_send_only_imm, 0);
    CHECK(encode_header(h, std::span(out).first(63)) == 0);
    CHECK(encode_header(h, std::span(out).first(64)) == 64);
}

TEST_CASE("wire: fixed little-endian layout", "[unit][transport][wire]") {
    Header h = sample(Opcode::write_only_imm, 3);
    const auto b = encode(h);
    REQUIRE(b.size() == 52 + 3);
    auto u8 = [&](std::size_t i) { return std::to_integer<unsigned>(b[i]); };
    CHECK(u8(0) == (0x10u | kFlagSolicited | kFlagAckRequest));
    CHECK(u8(1) == 0x0B);
    CHECK((u8(2) | u8(3) << 8) == 0x4321);
    CHECK((u8(4) | u8(5) << 8 | u8(6) << 16) == 0xABCDEF);
    CHECK(u8(7) == 0);
    CHECK((u8(12) | u8(13) << 8 | u8(14) << 16) == 0xFFFFFE);
    CHECK((u8(28) | u8(29) << 8) == 3);
    CHECK((u8(30) | u8(31) << 8) == 0xBEEF);
    CHECK(u8(32) == 0xEF);  // RETH VA, LSB first
    CHECK(u8(39) == 0x01);
    CHECK(u8(40) == 0x0D);  // rkey 0xCAFEF00D
    CHECK(u8(44) == 0xEE);  // SETH 0xC0FFEE, before the immediate
    CHECK(u8(46) == 0xC0);
    CHECK(u8(47) == 0);
    CHECK(u8(48) == 0xEF);  // immediate 0xDEADBEEF
}

TEST_CASE("wire: malformed frames are rejected", "[unit][transport][wire]") {
    const Header good = sample(Opcode::send_middle, 100);
    const auto base = encode(good);
    Frame f{};
    REQUIRE(decode(base, f) == Status::ok);

    auto mutate = [&](auto fn) {
        std::array<std::byte, 36 + 100> b{};
        REQUIRE(base.size() == b.size());
        std::copy(base.begin(), base.end(), b.begin());
        fn(b);
        Frame out{};
        return decode(b, out);
    };
    CHECK(decode(std::span(base).first(31), f) == Status::too_short);
    CHECK(decode(std::span(base).first(135), f) == Status::bad_length);  // payload cut
    std::vector<std::byte> big(kMaxFrame + 1);
    std::memcpy(big.data(), base.data(), base.size());
    CHECK(decode(big, f) == Status::too_long);
    CHECK(mutate([](auto& b) { b[0] = std::byte{0x20}; }) == Status::bad_version);
    CHECK(mutate([](auto& b) { b[0] = std::byte{0x00}; }) == Status::bad_version);
    CHECK(mutate([](auto& b) { b[1] = std::byte{kOpcodeCount}; }) == Status::bad_opcode);
    CHECK(mutate([](auto& b) { b[1] = std::byte{0xFF}; }) == Status::bad_opcode);
    CHECK(mutate([](auto& b) { b[0] = std::byte{0x18}; }) == Status::reserved_bits);
    CHECK(mutate([](auto& b) { b[0] = std::byte{0x1C}; }) == Status::reserved_bits);
    // The GRH flag means something on UD datagrams only.
    CHECK(mutate([](auto& b) { b[0] = std::byte{0x10 | kFlagGrh}; }) == Status::bad_field);
    CHECK(mutate([](auto& b) { b[7] = std::byte{1}; }) == Status::reserved_bits);   // dest QPN
    CHECK(mutate([](auto& b) { b[11] = std::byte{1}; }) == Status::reserved_bits);  // src QPN
    CHECK(mutate([](auto& b) { b[15] = std::byte{1}; }) == Status::reserved_bits);  // PSN
    CHECK(mutate([](auto& b) { b[19] = std::byte{1}; }) == Status::reserved_bits);  // msg PSN
    CHECK(mutate([](auto& b) { b[35] = std::byte{1}; }) == Status::reserved_bits);  // SETH
    // SE on a MIDDLE frame, ack-request on a control frame.
    CHECK(mutate([](auto& b) { b[0] = std::byte{0x10 | kFlagSolicited}; }) == Status::bad_field);
    // payload_len larger than the bytes present / smaller.
    CHECK(mutate([](auto& b) { b[28] = std::byte{101}; }) == Status::bad_length);
    CHECK(mutate([](auto& b) { b[28] = std::byte{99}; }) == Status::bad_length);
    // MIDDLE whose payload reaches the message end, or starts at offset 0.
    CHECK(mutate([](auto& b) { b[24] = std::byte{0}; }) == Status::bad_offset);
    CHECK(mutate([](auto& b) {
              for (std::size_t i = 20; i < 24; ++i) {
                  b[i] = std::byte{0};
              }
          }) == Status::bad_offset);
    // MIDDLE claiming to start its own message.
    CHECK(mutate([](auto& b) { std::memcpy(b.data() + 16, b.data() + 12, 4); }) ==
          Status::bad_offset);
    // Offset + length overflowing 32 bits.
    CHECK(mutate([](auto& b) {
              for (std::size_t i = 20; i < 24; ++i) {
                  b[i] = std::byte{0xFF};
              }
          }) == Status::bad_offset);

    // Header-only opcodes must not carry payload.
    {
        Header h = sample(Opcode::ack, 0);
        auto b = encode(h);
        b.push_back(std::byte{0});
        b[28] = std::byte{1};
        CHECK(decode(b, f) == Status::bad_length);
    }
    // Extension header truncated.
    {
        auto b = encode(sample(Opcode::cmp_swap, 0));
        CHECK(decode(std::span(b).first(50), f) == Status::too_short);
    }
    // Syndrome ranges.
    {
        Header h = sample(Opcode::nak, 0);
        h.aeth.syndrome = 5;
        CHECK(validate(h) == Status::bad_field);
        h = sample(Opcode::rnr_nak, 0);
        h.aeth.syndrome = 32;
        CHECK(validate(h) == Status::bad_field);
        h = sample(Opcode::ack, 0);
        h.aeth.syndrome = 1;
        CHECK(validate(h) == Status::bad_field);
        auto b = encode(sample(Opcode::nak, 0));
        b[35] = std::byte{0x20};  // syndrome byte of the AETH (bits 31:24)
        CHECK(decode(b, f) == Status::bad_field);
    }
    // Credit frames name no QP; ACK_REQUEST makes one a probe (other unsequenced frames refuse
    // it), and a probe round-trips.
    {
        Header h = sample(Opcode::credit, 0);
        h.dest_qpn = 1;
        CHECK(validate(h) == Status::bad_field);
        h = sample(Opcode::credit, 0);
        h.flags = kFlagAckRequest;
        CHECK(validate(h) == Status::ok);
        auto b = encode(h);
        REQUIRE(decode(b, f) == Status::ok);
        CHECK(f.header.flags == kFlagAckRequest);
        h = sample(Opcode::ack, 0);
        h.flags = kFlagAckRequest;
        CHECK(validate(h) == Status::bad_field);
    }
    // Atomics are 8 bytes; FETCH_ADD has no compare operand.
    {
        Header h = sample(Opcode::fetch_add, 0);
        h.msg_len = 4;
        CHECK(validate(h) == Status::bad_offset);
        h = sample(Opcode::fetch_add, 0);
        h.atomic.compare = 1;
        CHECK(validate(h) == Status::reserved_bits);
    }
    // Message larger than 2^31, payload beyond a frame.
    {
        Header h = sample(Opcode::write_first, 100);
        h.msg_len = 0x8000'0001u;
        CHECK(validate(h) == Status::bad_offset);
        h = sample(Opcode::write_only, 100);
        h.payload_len = static_cast<std::uint16_t>(kMaxFrame - 40);
        h.msg_len = h.payload_len;
        CHECK(validate(h) == Status::too_long);
    }
    // Encoder refuses invalid headers and short buffers.
    {
        Header h = sample(Opcode::send_only, 10);
        h.dest_qpn = 0x1000000;
        std::array<std::byte, 64> out{};
        CHECK(encode_header(h, out) == 0);
        h = sample(Opcode::send_only, 10);
        CHECK(encode_header(h, std::span(out).first(31)) == 0);
        std::vector<std::byte> pl(9);
        CHECK(encode_frame(h, pl, out) == 0);  // payload size != payload_len
    }
}

TEST_CASE(
    "wire: every single-byte corruption of the header is rejected or decodes to a valid "
    "header",
    "[unit][transport][wire]") {
    // The decoder must never accept something validate() would reject (the fuzz property).
    std::vector<Header> headers;
    for (std::uint8_t op = 0; op < kOpcodeCount; ++op) {
        const OpcodeInfo info = opcode_info(op);
        headers.push_back(sample(static_cast<Opcode>(op), info.data ? 64 : 0));
        if (info.deth) {
            headers.push_back(sample_grh(static_cast<Opcode>(op), 64));
        }
    }
    for (const Header& h : headers) {
        const auto base = encode(h);
        const std::size_t hs = header_size(h.opcode, h.flags);
        for (std::size_t i = 0; i < hs; ++i) {
            for (unsigned bit = 0; bit < 8; ++bit) {
                auto b = base;
                b[i] ^= static_cast<std::byte>(1u << bit);
                Frame f{};
                if (decode(b, f) == Status::ok) {
                    REQUIRE(validate(f.header) == Status::ok);
                    REQUIRE(f.payload.size() + header_size(f.header.opcode, f.header.flags) ==
                            b.size());
                }
            }
        }
    }
}
