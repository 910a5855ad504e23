// SPDX-License-Identifier: Apache-2.0
// What crosses a USB4 cable between two emulated routers, and the two interfaces that join a
// router's USB4 port to a cable (ref §12.5): a router sends through a CableEnd, a cable delivers
// into a CableSink (the router on the other side). The in-process Cable (cable.hpp) and the
// shared-memory cable (shm_cable.hpp) both implement CableEnd.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>

#include "emu/clock.hpp"

namespace tbv::emu {

enum class WireKind : std::uint8_t {
    control = 1,  ///< a control packet: big-endian dwords + CRC, PDF in eof_pdf (HopID 0 path)
    data = 2,     ///< a DMA frame on HopID `hop`
    status = 3,   ///< link management between the two port ends (PortStatus in `status`)
};

/// Link-management state one USB4 port end publishes to the other. This stands in for the
/// electrical layer (training, lane disable, bonding negotiation, port reset), which the reference
/// does not describe below the register level.
struct PortStatus {
    bool in_reset = false;       ///< PORT_CS_19.DPR held: the link is down
    bool lane0_enabled = true;   ///< not LD
    bool lane1_enabled = true;   ///< not LD
    bool bond_request = false;   ///< LB + target width dual on both lanes, lane 1 enabled
    bool lane0_trained = false;  ///< this end finished training lane 0 (CL0 needs both ends)
    bool lane1_trained = false;
    friend bool operator==(const PortStatus&, const PortStatus&) = default;
};

struct WirePacket {
    WireKind kind = WireKind::control;
    unsigned lane = 0;  ///< 0 or 1: which lane adapter of the port it travels on
    unsigned hop = 0;   ///< data: HopID on the cable
    unsigned sof_pdf = 0;
    unsigned eof_pdf = 0;
    bool crc_error = false;           ///< data: link CRC error (fault injection)
    PortStatus status{};              ///< kind == status
    std::span<const std::byte> data;  ///< valid during the call only
    /// data: FrameView::sent_at of the frame (the link model's send time), kNoStamp if none.
    /// Carried by the in-process cable; a cable that does not carry it leaves kNoStamp.
    Clock::Duration::rep sent_at = kNoStamp;
};

/// The router side of a cable: what a cable delivers into.
class CableSink {
public:
    CableSink() = default;
    CableSink(const CableSink&) = delete;
    CableSink& operator=(const CableSink&) = delete;
    virtual ~CableSink() = default;

    /// A packet arrived on USB4 port `port`. Any thread; must not block.
    virtual void cable_receive(unsigned port, const WirePacket& p) noexcept = 0;
    /// Packets that arrived together, in order (a TX batch that crossed the cable). A sink
    /// overrides it to take its locks once per batch; the default takes them one by one.
    virtual void cable_receive_batch(unsigned port, std::span<const WirePacket> ps) noexcept {
        for (const WirePacket& p : ps) {
            cable_receive(port, p);
        }
    }
    /// The far end appeared or went away (plug, unplug, peer process death/restart).
    virtual void cable_changed(unsigned port) noexcept = 0;
};

/// The "frame arrived" signal of a cable whose far end runs in another process (ShmCable): a
/// doorbell the far end rings after it sends, which a sleeping device model (EmuNhi's RX helper,
/// through Router::wait_inbound) waits on. An in-process cable has none: it delivers in the
/// sender's thread, so there is never anything to wait for. Thread safe.
class InboundSignal {
public:
    /// Asks the far end to wake a sleeper here after every batch it sends (true), or not to
    /// (false, the default: sending then costs the far end no system call).
    virtual void want_wakeups(bool on) noexcept = 0;
    /// The doorbell's count now: wait_inbound(seen) returns at once once it has moved on.
    virtual std::uint32_t inbound_seq() const noexcept = 0;
    /// Whether packets from the far end wait for the next poll().
    virtual bool inbound_pending() const noexcept = 0;
    /// Blocks until the doorbell moves past `seen` (the far end sent, or wake_local() was called),
    /// or `timeout` passes. Returns at once if it already has.
    virtual void wait_inbound(std::uint32_t seen, std::chrono::nanoseconds timeout) noexcept = 0;
    /// Moves the doorbell and wakes whoever waits on it in this process.
    virtual void wake_local() noexcept = 0;

protected:
    ~InboundSignal() = default;
};

/// The cable side of a router port: how a router sends.
class CableEnd {
public:
    CableEnd() = default;
    CableEnd(const CableEnd&) = delete;
    CableEnd& operator=(const CableEnd&) = delete;
    virtual ~CableEnd() = default;

    /// Where packets from the far end go (nullptr: nowhere). Called by Router::connect_port and
    /// disconnect_port; the end never calls a sink after bind(nullptr) returns.
    virtual void bind(CableSink* sink, unsigned port) noexcept = 0;
    /// Sends a packet to the far end. Thread safe; may drop (fault injection, full queue).
    virtual void send(const WirePacket& p) noexcept = 0;
    /// Sends packets in order, as send() would one by one (the router's data plane hands over a
    /// TX batch). The default sends them one by one.
    virtual void send_batch(std::span<const WirePacket> ps) noexcept {
        for (const WirePacket& p : ps) {
            send(p);
        }
    }
    /// True while a far end is there to receive (plugged in, process alive).
    virtual bool peer_present() const noexcept = 0;
    /// Runs from the local router's poll with no router lock held: delivers what arrived from
    /// another process, checks peer liveness, ends an unplug_for() interval.
    virtual void poll() noexcept {}
    /// Its "frame arrived" signal, if the far end is in another process; nullptr otherwise.
    virtual InboundSignal* inbound_signal() noexcept { return nullptr; }
};

}  // namespace tbv::emu
