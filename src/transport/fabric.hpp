// SPDX-License-Identifier: Apache-2.0
// Fabric: every port of one device and the QPs frames are delivered to.
//
// Peers are named by LID. A host's LID is derived from its router UUID (lid_of), so the two ends
// of a cable agree on each other's LID without asking: perftest and friends exchange only LID, QPN
// and PSN out of band, and a QP connected with a destination LID is bound to the peer with that
// LID. Peer objects live as long as the fabric (a QP keeps a pointer across unplug and replug);
// their port lists change when the connection manager brings rails up or takes them down.
// The device's own LID is a peer too: its one port is a LoopPort (loopback QPs).
//
// Dispatch: a frame goes to the QP registered under its destination QPN; the QP checks that it
// came from its peer (the port's LID) and its connected source QPN (peer binding). Frames for no
// QP are counted and dropped.
//
// Not synchronised: the device context holds its progress lock around every call.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "hw/device.hpp"
#include "hw/usb4_regs.hpp"
#include "tbv/result.hpp"
#include "transport/rail_io.hpp"
#include "usb4/connection_manager.hpp"

namespace tbv::transport {

/// LIDs are unicast, 1 .. 0xBFFF (IB reserves 0 and the multicast range).
std::uint16_t lid_of(const hw::usb4::UuidDwords& uuid) noexcept;

class QpSink {
public:
    /// A frame for this QP; `from` is the port it arrived on (its peer_lid() says from whom).
    /// false: not now (a datagram with no receive WQE posted); the port offers it again.
    virtual bool on_frame(const wire::Frame& f, Port& from) noexcept = 0;

protected:
    ~QpSink() = default;
};

struct Peer {
    std::uint16_t lid = 0;
    bool loopback = false;
    std::vector<Port*> ports;    ///< empty while no link to the peer is up
    unsigned next = 0;           ///< round-robin cursor (striping)
    std::uint64_t no_route = 0;  ///< frames given up because no port existed (link down)

    /// A port with credit for a data (or control) frame, round robin over the peer's ports;
    /// nullptr when every port is out of credit or there is none.
    Port* pick(bool control) noexcept {
        const auto n = static_cast<unsigned>(ports.size());
        for (unsigned i = 0; i < n; ++i) {
            Port* p = ports[(next + i) % n];
            if (p->can_send(control)) {
                next = (next + i + 1) % n;
                return p;
            }
        }
        return nullptr;
    }
    bool up() const noexcept { return !ports.empty(); }
};

class Fabric final : public FrameHandler {
public:
    /// `events` hears link changes: (peer LID, up).
    Fabric(hw::Device& dev, const hw::usb4::UuidDwords& own_uuid,
           std::function<void(std::uint16_t, bool)> events = {});
    ~Fabric();
    Fabric(const Fabric&) = delete;
    Fabric& operator=(const Fabric&) = delete;

    std::uint16_t lid() const noexcept { return lid_; }

    /// CmOptions::on_rails: wraps the link's rails in ports (up) or lets go of them (down).
    Result<void> attach(usb4::Link& link);
    void detach(usb4::Link& link);

    /// The peer with this LID, created (without ports) if not seen yet; nullptr for LID 0.
    Peer* peer(std::uint16_t lid);

    /// QP numbers: 24-bit, ≥ 2 (0 and 1 are special in IB); a number is not reused soon after
    /// its QP is destroyed (a generation in the high bits), so stale frames find no QP.
    Result<std::uint32_t> add_qp(QpSink& sink);
    void remove_qp(std::uint32_t qpn) noexcept;

    /// Polls every port once; returns frames received.
    unsigned poll() noexcept;
    /// Posts what every port committed, and a CREDIT frame where the peer is owed credits or a
    /// port out of credit should ask for them (Port::service).
    void flush(TimePoint now) noexcept;

    /// Every port, for counters (tbv status).
    template <typename F>
    void for_each_port(F&& f) const {
        for (const auto& p : ports_) {
            f(*p.port, p.adapter, p.peer->lid);
        }
    }

    bool on_frame(const wire::Frame& f, Port& from) noexcept override;

private:
    struct Owned {
        std::unique_ptr<Port> port;
        unsigned adapter = 0;  ///< link (lane adapter) the rail belongs to; 0 for loopback
        Peer* peer = nullptr;
        std::uint64_t polled = 0;  ///< last poll round that polled it
    };
    void rebuild_peer(Peer& p);

    hw::Device& dev_;
    std::uint16_t lid_;
    std::function<void(std::uint16_t, bool)> events_;
    std::vector<std::unique_ptr<Peer>> peers_;
    std::vector<Owned> ports_;
    std::vector<QpSink*> qps_;        ///< by slot
    std::vector<std::uint32_t> qpn_;  ///< full QPN per slot (0: free)
    std::uint32_t generation_ = 1;
    std::uint64_t round_ = 0;
    std::uint32_t next_port_id_ = 0;
};

}  // namespace tbv::transport
