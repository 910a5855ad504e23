// SPDX-License-Identifier: Apache-2.0
// XDomain discovery (ref §8): our requests toward the peer (UUID, properties) and our answers to
// the peer's requests (UUID, properties, properties changed, link state status). Every request
// and response travels as a control packet through the inbox; nothing here blocks.
#include <cstdio>
#include <string>

#include "usb4/connection_manager.hpp"
#include "usb4/uuid.hpp"

namespace tbv::usb4 {

using namespace hw::usb4;

void ConnectionManager::send_discovery(Link& l, const XdMessage& m, unsigned seq) {
    // encode_discovery picks PDF 6 or 7 from the message type (requests vs responses).
    auto p = encode_discovery(l.route, seq & 3u, m);
    if (p) {
        (void)ch_.send(*p);
    }
}

void ConnectionManager::request_next(Link& l) {
    const unsigned seq = l.attempts % 4;  // requests: retry number mod 4 (ref §8.1)
    ++l.attempts;
    ++ctr_.xd_requests_sent;
    l.deadline = now() + opts_.xd_timeout;
    if (l.state == LinkState::uuid) {
        send_discovery(l, XdUuidRequest{}, seq);
        return;
    }
    XdPropertiesRequest req;
    req.src_uuid = uuid();
    req.dst_uuid = l.peer_uuid;
    req.offset = static_cast<std::uint16_t>(l.assembler.next_offset());
    send_discovery(l, req, seq);
}

void ConnectionManager::on_xdomain(const ControlPacket& raw) {
    auto p = decode_xdomain(raw.pdf, raw.payload());
    if (!p) {
        ++ctr_.xd_malformed;
        return;
    }
    Link* l = link(static_cast<unsigned>(route_key(p->route)));
    if (l == nullptr || l->state == LinkState::down || l->state == LinkState::lane ||
        l->state == LinkState::not_xdomain) {
        ++ctr_.xd_unexpected;  // nothing of ours is connected there (yet)
        return;
    }
    if (p->protocol == kRailProtocolUuid) {
        on_rail_packet(*l, *p);
        return;
    }
    auto m = decode_discovery(*p);
    if (!m) {
        // Another protocol (e.g. ThunderboltIP login) or a malformed discovery packet: a request
        // gets "not supported" so a Linux peer does not keep waiting.
        ++ctr_.xd_malformed;
        if (p->pdf == Pdf::xdomain_req && p->protocol == kXdomainDiscoveryUuid) {
            send_discovery(*l, XdErrorResponse{XdError::not_supported}, p->seq);
        }
        return;
    }
    if (is_request(*m)) {
        serve_discovery(*l, *p, *m);
    } else {
        on_discovery_response(*l, *m);
    }
}

void ConnectionManager::serve_discovery(Link& l, const XdomainPacket& p, const XdMessage& m) {
    ++ctr_.xd_requests_served;
    const unsigned seq = p.seq;  // responses echo the request's sequence (ref §8.1)
    if (std::holds_alternative<XdUuidRequest>(m)) {
        XdUuidResponse r;
        r.src_uuid = uuid();
        r.src_route = l.route;
        send_discovery(l, r, seq);
    } else if (const auto* pr = std::get_if<XdPropertiesRequest>(&m)) {
        if (pr->dst_uuid != uuid()) {
            send_discovery(l, XdErrorResponse{XdError::unknown_domain}, seq);
            return;
        }
        auto chunk = property_chunk(properties_, pr->offset);
        if (!chunk) {
            send_discovery(l, XdErrorResponse{XdError::unknown_packet}, seq);
            return;
        }
        XdPropertiesResponse r;
        r.src_uuid = uuid();
        r.dst_uuid = pr->src_uuid;
        r.offset = pr->offset;
        r.total = static_cast<std::uint16_t>(properties_.size());
        r.generation = generation_;
        r.data = *chunk;
        send_discovery(l, r, seq);
    } else if (std::holds_alternative<XdPropertiesChangedRequest>(m)) {
        send_discovery(l, XdPropertiesChangedResponse{}, seq);
        if (l.state == LinkState::up || l.state == LinkState::discovered) {
            log(l, "peer properties changed (re-read on next discovery)");
        }
    } else if (std::holds_alternative<XdLinkStateStatusRequest>(m)) {
        // We do not bond lanes: answer single-lane support so a Linux peer skips bonding at once
        // instead of retrying for ~10 s (ref §8.4).
        XdLinkStateStatusResponse r;
        r.slw = 0x1;
        r.tlw = 0x1;
        r.sls = static_cast<std::uint8_t>(l.lane.speed);
        r.tls = static_cast<std::uint8_t>(l.lane.speed);
        send_discovery(l, r, seq);
    } else {
        send_discovery(l, XdErrorResponse{XdError::not_supported}, seq);
    }
}

void ConnectionManager::on_discovery_response(Link& l, const XdMessage& m) {
    if (const auto* e = std::get_if<XdErrorResponse>(&m)) {
        // not_ready: the peer is still starting; retry on the normal schedule.
        log(l, "peer answered error " + std::to_string(static_cast<unsigned>(e->error)));
        return;
    }
    if (const auto* u = std::get_if<XdUuidResponse>(&m);
        u != nullptr && l.state == LinkState::uuid) {
        if (u->src_uuid == uuid()) {
            fail_link(l, make_error_code(Errc::malformed), "cable loops back to this host");
            return;
        }
        l.peer_uuid = u->src_uuid;
        log(l, "peer UUID " + uuid_to_string(l.peer_uuid));
        l.state = LinkState::properties;
        l.assembler.reset();
        l.attempts = 0;
        request_next(l);
        return;
    }
    const auto* pr = std::get_if<XdPropertiesResponse>(&m);
    if (pr == nullptr || l.state != LinkState::properties || pr->src_uuid != l.peer_uuid ||
        pr->dst_uuid != uuid()) {
        ++ctr_.xd_unexpected;
        return;
    }
    auto done = l.assembler.add(*pr);
    if (!done) {
        ++ctr_.xd_malformed;
        l.assembler.reset();  // start over on the next attempt
        return;
    }
    if (!*done) {
        l.attempts = 0;
        request_next(l);  // next chunk at once
        return;
    }
    auto dir = parse_properties(l.assembler.block());
    auto info = dir ? read_host_directory(*dir) : Result<HostInfo>(Failure{dir.error()});
    if (!info) {
        fail_link(l, info.error(), "peer property block rejected");
        return;
    }
    l.peer = *info;
    bool tbverbs = false;
    for (const auto& s : info->services) {
        tbverbs = tbverbs || (s.key == kTbverbsServiceKey && s.prtcid == kTbverbsProtocolId);
    }
    char buf[160];
    std::snprintf(buf, sizeof buf,
                  "properties: %zu dwords, vendor 0x%x, device 0x%x \"%s\", %zu services%s",
                  l.assembler.block().size(), info->vendor_id, info->device_id,
                  info->device_name.c_str(), info->services.size(), tbverbs ? ", tbverbs" : "");
    log(l, buf);
    if (!tbverbs) {
        l.state = LinkState::discovered;
        return;
    }
    l.state = LinkState::rails;
    l.attempts = 0;
    l.deadline = now();
    // The larger UUID offers (compared as the wire dwords, like Linux's memcmp for bonding roles).
    l.initiator = uuid() > l.peer_uuid;
    log(l, l.initiator ? "offering rails" : "waiting for the peer's rail offer");
}

}  // namespace tbv::usb4
