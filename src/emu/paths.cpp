// SPDX-License-Identifier: Apache-2.0
// The router's data plane (ref §9.3, §12.5): a frame from TX ring r follows path entry r of the
// NHI adapter to a lane adapter and a HopID on the cable; on the far router it follows the entry
// of that HopID on the ingress lane adapter to the NHI adapter and an RX ring. Only entries the
// connection manager made valid route anything; every other frame is dropped and counted. Frame
// boundaries, PDFs, length and the CRC-error flag travel unchanged.
#include "emu/nhi.hpp"
#include "emu/router.hpp"

namespace tbv::emu {

using namespace hw::usb4;

void Router::data_from_nhi(unsigned ring, const FrameView& frame) noexcept {
    CableEnd* end = nullptr;
    WirePacket pkt;
    {
        std::lock_guard lk(mu_);
        const Adapter& nhi = adapters_[kNhiAdapter];
        const std::size_t at = std::size_t{ring} * kPathEntryDwords;
        if (at + 1 >= nhi.path.size() || PATH0_VALID::get(nhi.path[at]) == 0) {
            ++ctr_.data_no_path_drops;
            return;
        }
        const unsigned out_adapter = PATH0_OUT_ADAPTER::get(nhi.path[at]);
        if (out_adapter >= adapters_.size() || !adapters_[out_adapter].lane) {
            ++ctr_.data_no_path_drops;  // protocol adapters carry no DMA traffic here
            return;
        }
        const Adapter& lane = adapters_[out_adapter];
        end = ports_[lane.port].end;
        if (!lane_is_up(lane) || end == nullptr) {
            ++ctr_.data_link_down_drops;
            return;
        }
        ++ctr_.data_tx;
        pkt.kind = WireKind::data;
        pkt.lane = lane.lane_index;
        pkt.hop = PATH0_OUT_HOP::get(nhi.path[at]);
        pkt.sof_pdf = frame.sof_pdf;
        pkt.eof_pdf = frame.eof_pdf;
        pkt.crc_error = frame.crc_error;
        pkt.data = frame.data;
    }
    end->send(pkt);
}

void Router::data_from_cable(unsigned port, const WirePacket& p) noexcept {
    unsigned ring = 0;
    {
        std::lock_guard lk(mu_);
        if (port >= ports_.size() || p.lane > 1) {
            ++ctr_.data_no_path_drops;
            return;
        }
        const Adapter& lane = adapters_[lane_adapter(port, p.lane)];
        if (!lane_is_up(lane)) {
            ++ctr_.data_link_down_drops;
            return;
        }
        const std::size_t at = std::size_t{p.hop} * kPathEntryDwords;
        if (at + 1 >= lane.path.size() || PATH0_VALID::get(lane.path[at]) == 0 ||
            PATH0_OUT_ADAPTER::get(lane.path[at]) != kNhiAdapter ||
            PATH0_OUT_HOP::get(lane.path[at]) == 0) {
            ++ctr_.data_no_path_drops;  // ring 0 is the control channel, never a DMA path
            return;
        }
        ring = PATH0_OUT_HOP::get(lane.path[at]);
    }
    const RxResult r = nhi_.receive(ring, FrameView{p.sof_pdf, p.eof_pdf, p.data, p.crc_error});
    std::lock_guard lk(mu_);
    ++(r == RxResult::delivered ? ctr_.data_rx : ctr_.nhi_refused);
}

}  // namespace tbv::emu
