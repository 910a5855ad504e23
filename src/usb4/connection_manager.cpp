// SPDX-License-Identifier: Apache-2.0
// Ports, hot-plug events, probing the far side, teardown (ref §7.2, §7.3).
#include "usb4/connection_manager.hpp"

#include <cstdio>
#include <random>
#include <string>

#include "usb4/uuid.hpp"

namespace tbv::usb4 {

using namespace hw::usb4;

std::string_view to_string(LinkState s) noexcept {
    switch (s) {
        case LinkState::down: return "down";
        case LinkState::lane: return "lane";
        case LinkState::uuid: return "uuid";
        case LinkState::properties: return "properties";
        case LinkState::rails: return "rails";
        case LinkState::up: return "up";
        case LinkState::discovered: return "discovered";
        case LinkState::not_xdomain: return "not-xdomain";
        case LinkState::failed: return "failed";
    }
    return "?";
}

ConnectionManager::ConnectionManager(nhi::Nhi& nhi, ControlChannel& ch, CmOptions opts)
    : nhi_(nhi),
      ch_(ch),
      opts_(std::move(opts)),
      clock_(opts_.clock != nullptr ? opts_.clock : &steady_),
      router_(ch) {}

Result<std::unique_ptr<ConnectionManager>> ConnectionManager::create(nhi::Nhi& nhi,
                                                                     ControlChannel& ch,
                                                                     CmOptions opts) {
    if (opts.rail_ring_size < 2 || opts.rail_ring_size > hw::nhi::kMaxRingSize ||
        opts.xd_attempts == 0 || opts.lane_polls == 0) {
        return fail(std::errc::invalid_argument);
    }
    std::unique_ptr<ConnectionManager> cm(new ConnectionManager(nhi, ch, std::move(opts)));
    if (auto r = cm->router_.enumerate(); !r) {
        return Failure{r.error()};
    }
    // What we publish (ref §8.3): the caller's identity plus the tbverbs service and our max
    // input HopID; Linux requires vendorid and deviceid immediates.
    HostInfo host = cm->opts_.host;
    if (host.vendor_id == 0) {
        host.vendor_id = 0x1d6b;  // Linux Foundation: not a hardware vendor claim
        host.vendor_name = "tbverbs";
    }
    if (host.device_id == 0) {
        host.device_id = 0x1;
    }
    bool has_service = false;
    for (const auto& s : host.services) {
        has_service = has_service || s.key == kTbverbsServiceKey;
    }
    if (!has_service) {
        host.services.push_back(tbverbs_service());
    }
    unsigned max_hop = 0;
    for (unsigned port : cm->router_.usb4_ports()) {
        const AdapterInfo* a = cm->router_.adapter(port);
        max_hop = max_hop == 0 || a->max_in_hop < max_hop ? a->max_in_hop : max_hop;
        Link l;
        l.adapter = port;
        l.route = port;  // host router at depth 0: the route to the far side is the port number
        cm->links_.push_back(std::move(l));
        cm->hops_.push_back(HopIdAllocator::for_lane(a->max_in_hop));
    }
    host.max_hop_id = max_hop;
    auto block = encode_properties(build_host_directory(host));
    if (!block) {
        return Failure{block.error()};
    }
    cm->properties_ = std::move(*block);
    // A cable that was plugged before we started produces no event: look at each port once.
    for (auto& l : cm->links_) {
        auto s = cm->router_.lane_status(l.adapter);
        if (s && (s->up() || s->state == LaneState::training)) {
            l.state = LinkState::lane;
            l.deadline = cm->now();
            l.attempts = 0;
            cm->log(l, "cable present at start-up");
        }
    }
    return cm;
}

ConnectionManager::~ConnectionManager() {
    for (auto& l : links_) {
        release_rails(l);
    }
}

Link* ConnectionManager::link(unsigned adapter) noexcept {
    for (auto& l : links_) {
        if (l.adapter == adapter) {
            return &l;
        }
    }
    return nullptr;
}

void ConnectionManager::log(const Link& l, std::string_view msg) const {
    if (opts_.trace) {
        std::string line = "port " + std::to_string(l.adapter) + " [" +
                           std::string(to_string(l.state)) + "] " + std::string(msg);
        opts_.trace(line);
    }
}

void ConnectionManager::fail_link(Link& l, std::error_code ec, std::string_view why) {
    release_rails(l);
    l.state = LinkState::failed;
    l.error = ec;
    l.deadline = now() + opts_.failed_retry;
    log(l, std::string(why) + ": " + ec.message());
}

void ConnectionManager::poll() {
    while (auto n = ch_.next_notification()) {
        if (n->kind == NotificationKind::hot_plug) {
            auto e = decode_event(n->packet.payload());
            if (e) {
                on_hot_plug(*e);
            }
        } else if (n->kind == NotificationKind::xdomain) {
            on_xdomain(n->packet);
        }
        // Async error notifications (link errors, HEC, flow control) need no action from a CM
        // that only runs DMA paths; the channel counts them.
    }
    const auto t = now();
    for (auto& l : links_) {
        advance(l, t);
    }
}

void ConnectionManager::on_hot_plug(const HotPlugEvent& e) {
    ++ctr_.events;
    // ref §5.6: ack first, then act. The router re-sends until acked.
    (void)ch_.ack_hot_plug(e);
    Link* l = route_key(e.route) == 0 ? link(e.port) : nullptr;
    if (l == nullptr) {
        return;  // lane 1 of a port, or a protocol adapter: nothing to do
    }
    if (e.unplug) {
        log(*l, "unplug event acked");
        teardown(*l);
        return;
    }
    log(*l, "plug event acked");
    if (l->state == LinkState::down || l->state == LinkState::failed ||
        l->state == LinkState::not_xdomain) {
        l->state = LinkState::lane;
        l->error.clear();
        l->attempts = 0;
        l->deadline = now();
    }
}

void ConnectionManager::teardown(Link& l) {
    release_rails(l);
    if (l.state != LinkState::down && l.state != LinkState::lane) {
        (void)router_.set_inter_domain(l.adapter, false);  // ref §7.3 step 6
    }
    l.state = LinkState::down;
    l.peer.reset();
    l.peer_uuid = {};
    l.attempts = 0;
    log(l, "link down, rails released");
}

void ConnectionManager::advance(Link& l, Clock::time_point t) {
    if (t < l.deadline) {
        return;
    }
    switch (l.state) {
        case LinkState::lane: probe(l, t); break;
        case LinkState::uuid:
        case LinkState::properties:
            if (l.attempts >= opts_.xd_attempts) {
                fail_link(l, make_error_code(Errc::timeout),
                          l.state == LinkState::uuid ? "peer did not answer the UUID request"
                                                     : "peer did not send its properties");
                return;
            }
            request_next(l);
            break;
        case LinkState::rails:
            if (l.attempts >= opts_.xd_attempts) {
                fail_link(l, make_error_code(Errc::timeout), "rail handshake got no answer");
                return;
            }
            if (l.initiator) {
                send_offer(l);
            } else {
                // The responder only waits; the offer counts its attempts on the other side.
                ++l.attempts;
                l.deadline = t + opts_.xd_timeout;
            }
            break;
        case LinkState::failed:
            if (opts_.failed_retry.count() > 0) {
                l.state = LinkState::lane;
                l.attempts = 0;
                log(l, "probing the link again");
                probe(l, t);
            }
            break;
        default: break;
    }
}

void ConnectionManager::probe(Link& l, Clock::time_point t) {
    auto s = router_.lane_status(l.adapter);
    if (!s) {
        fail_link(l, s.error(), "cannot read the lane state");
        return;
    }
    l.lane = *s;
    if (!s->up()) {
        if (++l.attempts >= opts_.lane_polls) {
            fail_link(l, make_error_code(Errc::link_down), "lane did not reach CL0");
            return;
        }
        l.deadline = t + opts_.lane_poll;
        return;
    }
    char buf[64];
    std::snprintf(buf, sizeof buf, "lane up: %u Gb/s x%u", lane_gbps(s->speed), s->width);
    log(l, buf);
    if (auto u = router_.unlock(l.adapter); !u) {
        fail_link(l, u.error(), "cannot unlock the adapter");
        return;
    }
    // ref §7.3 step 4: read the far router's CS_0 through the new route. A router *error packet*
    // means the far side is another host (XDomain); an answer means a device router; a timeout
    // is neither (retry).
    auto r = ch_.read1(l.route, Space::router, 0, ROUTER_CS_0);
    if (r) {
        l.state = LinkState::not_xdomain;
        l.error = make_error_code(Errc::not_supported);
        log(l, "a device router answered: not a host-to-host link (not supported)");
        return;
    }
    if (!ch_.last_router_error()) {
        if (++l.attempts >= opts_.lane_polls) {
            fail_link(l, r.error(), "far side never answered the probe");
        } else {
            l.deadline = t + opts_.lane_poll;
        }
        return;
    }
    log(l, "router error on route " + std::to_string(l.route) + ": XDomain peer");
    if (auto p = router_.set_inter_domain(l.adapter, true); !p) {
        fail_link(l, p.error(), "cannot mark the port inter-domain");
        return;
    }
    l.state = LinkState::uuid;
    l.attempts = 0;
    l.deadline = t;
    std::random_device rd;
    l.session = rd();
}

}  // namespace tbv::usb4
