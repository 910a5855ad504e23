// SPDX-License-Identifier: Apache-2.0
// Layer-2 pieces of a rail: HopID allocation, DMA path entries (ref §9.2), rail handshake codec.
#include <vector>

#include "catch.hpp"
#include "usb4/dma_path.hpp"
#include "usb4/hop_allocator.hpp"
#include "usb4/rail_proto.hpp"

using namespace tbv;
using namespace tbv::usb4;
using namespace tbv::hw::usb4;

TEST_CASE("HopID allocator hands out lane HopIDs from 8 and refuses reuse", "[unit][usb4]") {
    auto a = HopIdAllocator::for_lane(10);
    CHECK(*a.allocate() == 8);
    CHECK(*a.claim(10) == 10);
    CHECK(*a.allocate() == 9);
    CHECK(a.allocate().error() == Errc::hop_in_use);
    CHECK(a.claim(9).error() == Errc::hop_in_use);
    CHECK(a.claim(7).error() == std::errc::invalid_argument);   // reserved below 8
    CHECK(a.claim(11).error() == std::errc::invalid_argument);  // above ADP_CS_5 max
    a.release(9);
    CHECK(*a.allocate() == 9);
    auto big = HopIdAllocator::for_lane(5000);
    CHECK(big.last() == HopIdAllocator::kMaxHopId);
}

TEST_CASE("DMA path entries follow ref §9.2", "[unit][usb4]") {
    CHECK(dma_credits(0) == 14);
    CHECK(dma_credits(32) == 14);
    CHECK(dma_credits(6) == 6);

    const auto rx = rx_path_entry(/*nhi_adapter=*/1, /*rx_ring=*/2, /*credits=*/14);
    CHECK(PATH0_OUT_ADAPTER::get(rx[0]) == 1);
    CHECK(PATH0_OUT_HOP::get(rx[0]) == 2);
    CHECK(PATH0_CREDITS::get(rx[0]) == 14);
    CHECK(PATH0_VALID::get(rx[0]) == 1);
    CHECK(PATH1_PRIORITY::get(rx[1]) == 5);
    CHECK(PATH1_WEIGHT::get(rx[1]) == 1);
    CHECK(PATH1_IFC::get(rx[1]) == 1);
    CHECK(PATH1_EFC::get(rx[1]) == 0);
    CHECK(PATH1_COUNTER::get(rx[1]) == 0x7ff);

    const auto tx = tx_path_entry(/*lane_adapter=*/2, /*tx_hop=*/8, /*credits=*/0);
    CHECK(PATH0_OUT_ADAPTER::get(tx[0]) == 2);
    CHECK(PATH0_OUT_HOP::get(tx[0]) == 8);
    CHECK(PATH0_CREDITS::get(tx[0]) == 0);  // AMD NHI adapter reports 0 buffers (ref §9.2)
    CHECK(PATH1_IFC::get(tx[1]) == 1);
    CHECK(PATH1_EFC::get(tx[1]) == 1);

    const auto off = invalidated(tx);
    CHECK(PATH0_VALID::get(off[0]) == 0);
    CHECK(PATH0_OUT_HOP::get(off[0]) == 8);
    CHECK(PATH1_EFC::get(flow_control_cleared(off)[1]) == 0);
    CHECK(path_entry_offset(8) == 16);
}

TEST_CASE("rail offer/accept round trip and strict validation", "[unit][usb4][rails]") {
    RailMessage m;
    m.type = RailMsg::offer;
    m.initiator = {1, 2, 3, 4};
    m.target = {5, 6, 7, 8};
    m.session = 0xabcdef01;
    m.link = 2;
    m.rails = {{0, 8, 255}, {1, 9, 255}};
    auto enc = encode_rail_message(m);
    REQUIRE(enc);
    CHECK(enc->size() == 11 + 2 * 3);
    auto dec = decode_rail_message(RailMsg::offer, *enc);
    REQUIRE(dec);
    CHECK(dec->initiator == m.initiator);
    CHECK(dec->target == m.target);
    CHECK(dec->session == m.session);
    REQUIRE(dec->rails.size() == 2);
    CHECK(dec->rails[1].rx_hop == 9);
    CHECK(dec->rails[1].rx_credits == 255);

    SECTION("wrong length") {
        auto cut = *enc;
        cut.pop_back();
        CHECK(decode_rail_message(RailMsg::offer, cut).error() == Errc::malformed);
        cut.push_back(0);
        cut.push_back(0);
        CHECK(decode_rail_message(RailMsg::offer, cut).error() == Errc::malformed);
        CHECK(decode_rail_message(RailMsg::offer, std::span(*enc).first(5)).error() ==
              Errc::malformed);
    }
    SECTION("counts and fields out of range") {
        auto bad = *enc;
        bad[10] = kMaxRailsPerLink + 1;  // count
        CHECK(decode_rail_message(RailMsg::offer, bad).error() == Errc::malformed);
        bad = *enc;
        bad[12] = 7;  // rx_hop in the reserved range
        CHECK(decode_rail_message(RailMsg::offer, bad).error() == Errc::malformed);
        bad = *enc;
        bad[13] = 0;  // zero credits
        CHECK(decode_rail_message(RailMsg::offer, bad).error() == Errc::malformed);
        bad = *enc;
        bad[11] |= 1u << 16;  // reserved flags
        CHECK(decode_rail_message(RailMsg::offer, bad).error() == Errc::malformed);
        bad = *enc;
        bad[15] = 8;  // second rail reuses the first rail's HopID
        CHECK(decode_rail_message(RailMsg::offer, bad).error() == Errc::malformed);
        bad = *enc;
        bad[10] = 0;  // an offer of nothing
        bad.resize(11);
        CHECK(decode_rail_message(RailMsg::offer, bad).error() == Errc::malformed);
        CHECK(decode_rail_message(static_cast<RailMsg>(99), *enc).error() == Errc::malformed);
    }
    SECTION("encoder refuses what the decoder would") {
        RailMessage e = m;
        e.rails[0].rx_hop = 3;
        CHECK(encode_rail_message(e).error() == Errc::malformed);
        e.rails.clear();
        CHECK(encode_rail_message(e).error() == Errc::malformed);
        e.type = RailMsg::accept;  // accepting zero rails is a valid answer
        CHECK(encode_rail_message(e).has_value());
    }
}

TEST_CASE("rail reject and teardown messages", "[unit][usb4][rails]") {
    RailMessage r;
    r.type = RailMsg::reject;
    r.session = 7;
    r.reason = static_cast<std::uint32_t>(RailReject::no_rings);
    auto enc = encode_rail_message(r);
    REQUIRE(enc);
    CHECK(enc->size() == 10);
    auto dec = decode_rail_message(RailMsg::reject, *enc);
    REQUIRE(dec);
    CHECK(dec->reason == 1);
    r.type = RailMsg::teardown;
    enc = encode_rail_message(r);
    REQUIRE(enc);
    CHECK(enc->size() == 9);
    CHECK(decode_rail_message(RailMsg::teardown_ack, *enc).has_value());
    enc->push_back(0);
    CHECK(decode_rail_message(RailMsg::teardown, *enc).error() == Errc::malformed);
}
