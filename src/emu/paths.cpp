// SPDX-License-Identifier: Apache-2.0
// The router's data plane (ref §9.3, §12.5): a frame from TX ring r follows path entry r of the
// NHI adapter to a lane adapter and a HopID on the cable; on the far router it follows the entry
// of that HopID on the ingress lane adapter to the NHI adapter and an RX ring. Only entries the
// connection manager made valid route anything; every other frame is dropped and counted. Frame
// boundaries, PDFs, length and the CRC-error flag travel unchanged.
//
// Link model (RouterConfig::link): data frames from the cable go through the port's LinkPipe
// first (data_arrived) and are routed when they have arrived (release_link, from the router's
// poll or the next arrival), against the path tables as they are then.
//
// Per batch, not per frame: the frames of one TX batch (Fabric::transmit_batch) are routed under
// one lock of the router and cross the cable in one CableEnd::send_batch; on the far side
// cable_receive_batch routes them under one lock and hands each run for one RX ring to
// EmuNhi::receive_batch. Every frame is still checked against the path tables as they are when
// its batch is routed.
#include <algorithm>
#include <array>

#include "emu/batch.hpp"
#include "emu/nhi.hpp"
#include "emu/router.hpp"

namespace tbv::emu {

using namespace hw::usb4;

namespace {

/// Frames routed per lock of the router: a TX batch (kTxBatch) in one go.
constexpr std::size_t kDataBatch = kTxBatch;

}  // namespace

void Router::data_from_nhi(unsigned ring, std::span<const FrameView> frames) noexcept {
    BatchBuffer<WirePacket, kDataBatch> pkts;
    while (!frames.empty()) {
        const std::size_t n = std::min(frames.size(), kDataBatch);
        CableEnd* end = nullptr;
        unsigned lane_index = 0;
        unsigned hop = 0;
        {
            std::lock_guard lk(mu_);
            const Adapter& nhi = adapters_[kNhiAdapter];
            const std::size_t at = std::size_t{ring} * kPathEntryDwords;
            if (at + 1 >= nhi.path.size() || PATH0_VALID::get(nhi.path[at]) == 0) {
                ctr_.data_no_path_drops += n;
                return;
            }
            const unsigned out_adapter = PATH0_OUT_ADAPTER::get(nhi.path[at]);
            if (out_adapter >= adapters_.size() || !adapters_[out_adapter].lane) {
                ctr_.data_no_path_drops += n;  // protocol adapters carry no DMA traffic here
                return;
            }
            const Adapter& lane = adapters_[out_adapter];
            end = ports_[lane.port].end;
            if (!lane_is_up(lane) || end == nullptr) {
                ctr_.data_link_down_drops += n;
                return;
            }
            ctr_.data_tx += n;
            lane_index = lane.lane_index;
            hop = PATH0_OUT_HOP::get(nhi.path[at]);
        }
        pkts.clear();
        for (std::size_t i = 0; i < n; ++i) {
            WirePacket& pkt = pkts.push();
            pkt.kind = WireKind::data;
            pkt.lane = lane_index;
            pkt.hop = hop;
            pkt.sof_pdf = frames[i].sof_pdf;
            pkt.eof_pdf = frames[i].eof_pdf;
            pkt.crc_error = frames[i].crc_error;
            pkt.data = frames[i].data;
            pkt.sent_at = frames[i].sent_at;
        }
        end->send_batch(pkts.span());
        frames = frames.subspan(n);
    }
}

unsigned Router::ingress_ring_locked(unsigned port, const WirePacket& p) noexcept {
    if (port >= ports_.size() || p.lane > 1) {
        ++ctr_.data_no_path_drops;
        return 0;
    }
    const Adapter& lane = adapters_[lane_adapter(port, p.lane)];
    if (!lane_is_up(lane)) {
        ++ctr_.data_link_down_drops;
        return 0;
    }
    const std::size_t at = std::size_t{p.hop} * kPathEntryDwords;
    if (at + 1 >= lane.path.size() || PATH0_VALID::get(lane.path[at]) == 0 ||
        PATH0_OUT_ADAPTER::get(lane.path[at]) != kNhiAdapter ||
        PATH0_OUT_HOP::get(lane.path[at]) == 0) {
        ++ctr_.data_no_path_drops;  // ring 0 is the control channel, never a DMA path
        return 0;
    }
    return PATH0_OUT_HOP::get(lane.path[at]);
}

void Router::data_from_cable(unsigned port, std::span<const WirePacket> ps) noexcept {
    std::array<unsigned, kDataBatch> rings;  // 0: dropped
    BatchBuffer<FrameView, kDataBatch> views;
    while (!ps.empty()) {
        const std::size_t n = std::min(ps.size(), kDataBatch);
        {
            std::lock_guard lk(mu_);
            for (std::size_t i = 0; i < n; ++i) {
                rings[i] = ingress_ring_locked(port, ps[i]);
            }
        }
        // Runs of frames for one ring reach the NHI together; the router lock is not held.
        std::uint64_t offered = 0;
        std::uint64_t delivered = 0;
        for (std::size_t i = 0; i < n;) {
            const unsigned ring = rings[i];
            views.clear();
            for (; i < n && rings[i] == ring; ++i) {
                const WirePacket& p = ps[i];
                views.push(FrameView{p.sof_pdf, p.eof_pdf, p.data, p.crc_error});
            }
            if (ring != 0) {
                delivered += nhi_.receive_batch(ring, views.span());
                offered += views.size();
            }
        }
        if (offered != 0) {
            std::lock_guard lk(mu_);
            ctr_.data_rx += delivered;
            ctr_.nhi_refused += offered - delivered;
        }
        ps = ps.subspan(n);
    }
}

void Router::data_arrived(unsigned port, std::span<const WirePacket> ps) noexcept {
    LinkPipe* const pipe = port < link_in_.size() ? link_in_[port].get() : nullptr;
    if (pipe == nullptr) {
        data_from_cable(port, ps);
        return;
    }
    const Time t = now();
    if (const std::size_t lost = pipe->admit(ps, t); lost != 0) {
        std::lock_guard lk(mu_);
        ctr_.link_overflow_drops += lost;
    }
    // Whatever has arrived by now goes on in this thread too (e.g. frames whose latency ran out
    // while the receiver did not poll): the receiver's poll is not the only way in.
    release_link(port, t);
    if (inbound_wakeups_.load(std::memory_order_relaxed)) {
        // The NHI sleeps with an RX interrupt armed: its helper must look at the new arrival
        // time (only in that state, so the data path makes no system call otherwise).
        wake_inbound();
    }
}

void Router::release_link(unsigned port, Time t) noexcept {
    link_in_[port]->release(t, [&](std::span<const WirePacket> ps) { data_from_cable(port, ps); });
}

std::size_t Router::link_in_flight(unsigned port) const noexcept {
    return port < link_in_.size() && link_in_[port] ? link_in_[port]->held() : 0;
}

}  // namespace tbv::emu
