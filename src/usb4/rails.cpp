// SPDX-License-Identifier: Apache-2.0
// The rail handshake (rail_proto.hpp) and DMA path programming (ref §9.2, §9.3).
#include <algorithm>
#include <string>

#include "usb4/connection_manager.hpp"
#include "usb4/dma_path.hpp"

namespace tbv::usb4 {

using namespace hw::usb4;

namespace {
/// Reads of a path entry while waiting for its pending bit to drop (ref §9.2: ≤ 500 ms).
constexpr unsigned kPendingPolls = 100;
}  // namespace

void ConnectionManager::send_rail(Link& l, Pdf pdf, RailMsg type, const RailMessage& m,
                                  unsigned seq) {
    auto payload = encode_rail_message(m);
    if (!payload) {
        return;
    }
    XdomainPacket p;
    p.pdf = pdf;
    p.route = l.route;
    p.seq = static_cast<std::uint8_t>(seq & 3u);
    p.protocol = kRailProtocolUuid;
    p.type = static_cast<std::uint32_t>(type);
    p.payload = *payload;
    if (auto raw = encode(p)) {
        (void)ch_.send(*raw);
    }
    if (type == RailMsg::accept) {
        l.last_accept = *payload;
    }
}

Result<void> ConnectionManager::prepare_rails(Link& l, unsigned count) {
    HopIdAllocator& hops = hops_[static_cast<std::size_t>(&l - links_.data())];
    count = std::min({count, opts_.max_rails_per_link, kMaxRailsPerLink});
    while (l.rails.size() < count) {
        nhi::RingConfig cfg;
        cfg.size = opts_.rail_ring_size;
        auto tx = nhi::TxRing::create(nhi_, cfg);
        if (!tx) {
            break;  // no ring left on this controller: offer what we have
        }
        nhi::RingConfig rx_cfg = cfg;
        rx_cfg.irq_vector = opts_.rail_rx_irq_vector;
        rx_cfg.irq_masked = true;
        auto rx = nhi::RxRing::create(nhi_, rx_cfg);
        if (!rx) {
            break;
        }
        auto hop = hops.allocate();
        if (!hop) {
            break;
        }
        Rail r;
        r.index = static_cast<unsigned>(l.rails.size());
        r.lane_adapter = l.adapter;
        r.tx_ring = (*tx)->number();
        r.rx_ring = (*rx)->number();
        r.rx_hop = *hop;
        r.local_credits = opts_.rail_ring_size - 1;
        r.tx = std::move(*tx);
        r.rx = std::move(*rx);
        l.rails.push_back(std::move(r));
    }
    if (l.rails.empty()) {
        return fail(Errc::ring_unavailable);
    }
    return ok();
}

Result<void> ConnectionManager::program_rails(Link& l) {
    const AdapterInfo* lane = router_.adapter(l.adapter);
    const AdapterInfo* nhi = router_.adapter(router_.nhi_adapter());
    const unsigned c = dma_credits(router_.ba_max_hi());
    // ref §9.2: lane ingress gets min(total − ctl credits, C); the NHI ingress min(its buffers, C)
    // (0 on AMD, which still works: credits are not needed at the NHI ingress).
    const unsigned lane_pool =
        lane->total_buffers > lane->ctl_credits ? lane->total_buffers - lane->ctl_credits : 0;
    const unsigned rx_credits = std::min(lane_pool, c);
    const unsigned tx_credits = std::min(nhi->total_buffers, c);
    for (const Rail& r : l.rails) {
        if (r.tx_hop < kMinLaneHopId || r.tx_hop > lane->max_out_hop) {
            return fail(Errc::malformed);  // the peer asked for a HopID our lane cannot send
        }
        // Last hop first (ref §9.2): our RX entry, then our TX entry, which enables the path.
        const auto rx = rx_path_entry(router_.nhi_adapter(), r.rx_ring, rx_credits);
        if (auto w = router_.write_path(l.adapter, r.rx_hop, rx); !w) {
            return w;
        }
        const auto tx = tx_path_entry(l.adapter, r.tx_hop, tx_credits);
        if (auto w = router_.write_path(router_.nhi_adapter(), r.tx_ring, tx); !w) {
            return w;
        }
        ctr_.path_writes += 2;
        log(l, "rail " + std::to_string(r.index) + ": TX ring " + std::to_string(r.tx_ring) +
                   " -> HopID " + std::to_string(r.tx_hop) + ", HopID " + std::to_string(r.rx_hop) +
                   " -> RX ring " + std::to_string(r.rx_ring) + ", peer credits " +
                   std::to_string(r.peer_credits));
    }
    return ok();
}

Result<void> ConnectionManager::deactivate_path(unsigned adapter, unsigned hop) {
    auto e = router_.read_path(adapter, hop);
    if (!e) {
        return Failure{e.error()};
    }
    if (PATH0_VALID::get((*e)[0]) != 0) {
        if (auto w = router_.write_path(adapter, hop, invalidated(*e)); !w) {
            return w;
        }
    }
    // Wait for the packets in flight to drain (ref §9.2), then drop egress flow control.
    for (unsigned i = 0; i < kPendingPolls; ++i) {
        e = router_.read_path(adapter, hop);
        if (!e) {
            return Failure{e.error()};
        }
        if (PATH1_PENDING::get((*e)[1]) == 0) {
            return router_.write_path(adapter, hop, flow_control_cleared(invalidated(*e)));
        }
    }
    return fail(Errc::timeout);
}

void ConnectionManager::release_rails(Link& l) {
    if (l.rails.empty()) {
        return;
    }
    HopIdAllocator& hops = hops_[static_cast<std::size_t>(&l - links_.data())];
    // Paths first, then rings (thunderbolt-net teardown order): nothing may DMA into a ring that
    // is being stopped.
    for (Rail& r : l.rails) {
        if (r.tx_hop != 0) {
            (void)deactivate_path(router_.nhi_adapter(), r.tx_ring);
            (void)deactivate_path(l.adapter, r.rx_hop);
        }
    }
    // The transport lets go of the rings (stops them, takes its buffers back) before they go.
    if (l.rails_announced) {
        l.rails_announced = false;
        if (opts_.on_rails) {
            opts_.on_rails(l, false);
        }
    }
    for (Rail& r : l.rails) {
        r.tx.reset();
        r.rx.reset();
        hops.release(r.rx_hop);
    }
    l.rails.clear();
    l.last_accept.clear();
}

void ConnectionManager::send_offer(Link& l) {
    if (l.rails.empty()) {
        if (auto p = prepare_rails(l, opts_.max_rails_per_link); !p) {
            fail_link(l, p.error(), "no free ring pair for a rail");
            return;
        }
    }
    RailMessage m;
    m.type = RailMsg::offer;
    m.initiator = uuid();
    m.target = l.peer_uuid;
    m.session = l.session;
    m.link = l.adapter;
    for (const Rail& r : l.rails) {
        m.rails.push_back({static_cast<std::uint16_t>(r.index), r.rx_hop, r.local_credits});
    }
    ++ctr_.rail_offers;
    send_rail(l, Pdf::xdomain_req, RailMsg::offer, m, l.attempts);
    ++l.attempts;
    l.deadline = now() + opts_.xd_timeout;
}

void ConnectionManager::on_rail_packet(Link& l, const XdomainPacket& p) {
    const auto type = static_cast<RailMsg>(p.type);
    auto m = decode_rail_message(type, p.payload);
    if (!m) {
        ++ctr_.xd_malformed;
        return;
    }
    RailMessage reply;
    reply.initiator = m->initiator;
    reply.target = m->target;
    reply.session = m->session;

    if (p.pdf == Pdf::xdomain_req && type == RailMsg::offer) {
        if (l.state != LinkState::rails && l.state != LinkState::up) {
            // Still discovering the peer (its offer overtook our properties read): retry later.
            reply.type = RailMsg::reject;
            reply.reason = static_cast<std::uint32_t>(RailReject::not_ready);
            send_rail(l, Pdf::xdomain_resp, RailMsg::reject, reply, p.seq);
            return;
        }
        if (m->target != uuid() || m->initiator != l.peer_uuid) {
            reply.type = RailMsg::reject;
            reply.reason = static_cast<std::uint32_t>(RailReject::unknown_peer);
            send_rail(l, Pdf::xdomain_resp, RailMsg::reject, reply, p.seq);
            return;
        }
        if (l.state == LinkState::up && m->session == l.session && !l.last_accept.empty()) {
            // Our accept was lost: send the same one again.
            auto again = decode_rail_message(RailMsg::accept, l.last_accept);
            if (again) {
                send_rail(l, Pdf::xdomain_resp, RailMsg::accept, *again, p.seq);
            }
            return;
        }
        release_rails(l);  // a new session replaces an old one (peer restarted its side)
        l.session = m->session;
        if (auto r = prepare_rails(l, static_cast<unsigned>(m->rails.size())); !r) {
            reply.type = RailMsg::reject;
            reply.reason = static_cast<std::uint32_t>(RailReject::no_rings);
            send_rail(l, Pdf::xdomain_resp, RailMsg::reject, reply, p.seq);
            fail_link(l, r.error(), "no free ring pair for the peer's offer");
            return;
        }
        // Our rail k pairs with the k-th offered rail and answers under the offer's index.
        for (std::size_t k = 0; k < l.rails.size(); ++k) {
            l.rails[k].index = m->rails[k].index;
            l.rails[k].tx_hop = m->rails[k].rx_hop;
            l.rails[k].peer_credits = m->rails[k].rx_credits;
        }
        if (auto pr = program_rails(l); !pr) {
            fail_link(l, pr.error(), "programming the DMA paths failed");
            return;
        }
        // Announce before answering: the transport posts its RX buffers, so the peer's first
        // frames (it may send as soon as it reads our accept) find a stocked ring.
        announce_rails(l);
        reply.type = RailMsg::accept;
        reply.link = l.adapter;
        for (const Rail& r : l.rails) {
            reply.rails.push_back({static_cast<std::uint16_t>(r.index), r.rx_hop, r.local_credits});
        }
        send_rail(l, Pdf::xdomain_resp, RailMsg::accept, reply, p.seq);
        log(l, std::to_string(l.rails.size()) + " rail(s) up (accepted the peer's offer)");
        return;
    }
    if (p.pdf == Pdf::xdomain_req && type == RailMsg::teardown) {
        release_rails(l);
        reply.type = RailMsg::teardown_ack;
        send_rail(l, Pdf::xdomain_resp, RailMsg::teardown_ack, reply, p.seq);
        if (l.state == LinkState::up) {
            l.state = LinkState::discovered;
        }
        log(l, "peer tore the rails down");
        return;
    }
    if (p.pdf != Pdf::xdomain_resp || l.state != LinkState::rails || !l.initiator ||
        m->session != l.session) {
        ++ctr_.xd_unexpected;
        return;
    }
    if (type == RailMsg::reject) {
        if (m->reason == static_cast<std::uint32_t>(RailReject::not_ready)) {
            return;  // retried when the deadline passes
        }
        fail_link(l, make_error_code(Errc::ring_unavailable), "peer rejected the rail offer");
        return;
    }
    if (type != RailMsg::accept) {
        ++ctr_.xd_unexpected;
        return;
    }
    if (m->rails.empty() || m->rails.size() > l.rails.size()) {
        fail_link(l, make_error_code(Errc::malformed), "peer accepted no or unknown rails");
        return;
    }
    // Keep the rails the peer matched (by index); give back the rest.
    std::vector<Rail> kept;
    for (Rail& r : l.rails) {
        const auto it = std::find_if(m->rails.begin(), m->rails.end(),
                                     [&](const RailSpec& s) { return s.index == r.index; });
        if (it == m->rails.end()) {
            hops_[static_cast<std::size_t>(&l - links_.data())].release(r.rx_hop);
            continue;  // its rings stop when `r` is destroyed below
        }
        r.tx_hop = it->rx_hop;
        r.peer_credits = it->rx_credits;
        kept.push_back(std::move(r));
    }
    if (kept.size() != m->rails.size()) {
        l.rails = std::move(kept);
        fail_link(l, make_error_code(Errc::malformed), "peer accepted rails we did not offer");
        return;
    }
    l.rails = std::move(kept);
    if (auto pr = program_rails(l); !pr) {
        fail_link(l, pr.error(), "programming the DMA paths failed");
        return;
    }
    announce_rails(l);
    log(l, std::to_string(l.rails.size()) + " rail(s) up");
}

void ConnectionManager::announce_rails(Link& l) {
    l.state = LinkState::up;
    l.rails_announced = true;
    if (opts_.on_rails) {
        opts_.on_rails(l, true);
    }
}

}  // namespace tbv::usb4
