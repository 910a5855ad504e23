// SPDX-License-Identifier: Apache-2.0
#include "transport/fabric.hpp"

#include <algorithm>
#include <cstring>

#include "util/crc32c.hpp"

namespace tbv::transport {

namespace {
constexpr unsigned kQpSlotBits = 12;  // 4096 QP slots; the generation takes the other 12 bits
constexpr std::uint32_t kQpSlots = 1u << kQpSlotBits;
constexpr std::uint32_t kQpSlotMask = kQpSlots - 1;
}  // namespace

std::uint16_t lid_of(const hw::usb4::UuidDwords& uuid) noexcept {
    std::byte raw[sizeof uuid];
    std::memcpy(raw, uuid.data(), sizeof raw);
    return static_cast<std::uint16_t>(util::crc32c(raw) % 0xBFFFu + 1u);
}

Fabric::Fabric(hw::Device& dev, const hw::usb4::UuidDwords& own_uuid,
               std::function<void(std::uint16_t, bool)> events)
    : dev_(dev), lid_(lid_of(own_uuid)), events_(std::move(events)) {
    qps_.assign(kQpSlots, nullptr);
    qpn_.assign(kQpSlots, 0);
    Peer* self = peer(lid_);
    self->loopback = true;
    auto loop = std::make_unique<LoopPort>(next_port_id_++);
    loop->set_peer_lid(lid_);
    ports_.push_back({std::move(loop), 0, self});
    rebuild_peer(*self);
}

Fabric::~Fabric() = default;

Peer* Fabric::peer(std::uint16_t lid) {
    if (lid == 0) {
        return nullptr;
    }
    for (auto& p : peers_) {
        if (p->lid == lid) {
            return p.get();
        }
    }
    peers_.push_back(std::make_unique<Peer>());
    peers_.back()->lid = lid;
    return peers_.back().get();
}

void Fabric::rebuild_peer(Peer& p) {
    p.ports.clear();
    for (const Owned& o : ports_) {
        if (o.peer == &p) {
            p.ports.push_back(o.port.get());
        }
    }
    p.next = 0;
}

Result<void> Fabric::attach(usb4::Link& link) {
    const std::uint16_t lid = lid_of(link.peer_uuid);
    Peer* p = peer(lid);
    const bool was_up = p->up();
    for (usb4::Rail& r : link.rails) {
        if (!r.tx || !r.rx) {
            continue;
        }
        auto port = RingPort::create(dev_, *r.tx, *r.rx, r.peer_credits, next_port_id_++);
        if (!port) {
            detach(link);
            return Failure{port.error()};
        }
        (*port)->set_peer_lid(lid);
        ports_.push_back({std::move(*port), link.adapter, p});
    }
    rebuild_peer(*p);
    if (!was_up && p->up() && events_) {
        events_(lid, true);
    }
    return ok();
}

void Fabric::detach(usb4::Link& link) {
    const std::uint16_t lid = lid_of(link.peer_uuid);
    Peer* p = peer(lid);
    const bool was_up = p->up();
    // Destroying a RingPort stops its rings before its buffers are unmapped.
    std::erase_if(ports_, [&](const Owned& o) { return o.adapter == link.adapter && o.peer == p; });
    rebuild_peer(*p);
    if (was_up && !p->up() && events_) {
        events_(lid, false);
    }
}

Result<std::uint32_t> Fabric::add_qp(QpSink& sink) {
    for (std::uint32_t i = 0; i < kQpSlots; ++i) {
        // Slots 0 and 1 of generation 0 would be QPNs 0 and 1: generations start at 1.
        if (qps_[i] == nullptr) {
            const std::uint32_t qpn = (generation_ << kQpSlotBits) | i;
            generation_ = generation_ == (1u << (24 - kQpSlotBits)) - 1 ? 1 : generation_ + 1;
            qps_[i] = &sink;
            qpn_[i] = qpn;
            return qpn;
        }
    }
    return fail(std::errc::not_enough_memory);
}

void Fabric::remove_qp(std::uint32_t qpn) noexcept {
    const std::uint32_t i = qpn & kQpSlotMask;
    if (qpn_[i] == qpn) {
        qps_[i] = nullptr;
        qpn_[i] = 0;
    }
}

bool Fabric::on_frame(const wire::Frame& f, Port& from) noexcept {
    const std::uint32_t qpn = f.header.dest_qpn;
    const std::uint32_t i = qpn & kQpSlotMask;
    if (qpn_[i] != qpn || qps_[i] == nullptr) {
        from.count_drop(DropReason::no_qp);
        return true;
    }
    return qps_[i]->on_frame(f, from);
}

unsigned Fabric::poll() noexcept {
    ++round_;
    unsigned n = 0;
    // Ports holding a refused frame go first, the longest waiting first: the receive WQEs the
    // application just posted belong to the oldest waiting datagram. Polled in a fixed order,
    // the first rail's new frames took every receive and a frame waiting on another rail
    // reached kParkLimit and was dropped.
    for (;;) {
        Owned* oldest = nullptr;
        for (Owned& o : ports_) {
            if (o.polled != round_ && o.port->holding() &&
                (oldest == nullptr || o.port->held_since() < oldest->port->held_since())) {
                oldest = &o;
            }
        }
        if (oldest == nullptr) {
            break;
        }
        oldest->polled = round_;
        n += oldest->port->poll(*this);
    }
    for (Owned& o : ports_) {
        if (o.polled != round_) {
            o.polled = round_;
            n += o.port->poll(*this);
        }
    }
    return n;
}

void Fabric::flush(TimePoint now) noexcept {
    for (const Owned& o : ports_) {
        o.port->service(now);
        o.port->flush();
    }
}

}  // namespace tbv::transport
