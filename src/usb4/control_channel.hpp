// SPDX-License-Identifier: Apache-2.0
// ControlChannel: config-space access and XDomain requests over ring 0 (nhi-reference §5.4, §8.1;
// "ref §x" below), on top of nhi::ControlRing.
//
// Requests: one at a time. A config read/write is sent, then the channel polls the ring until a
// matching response arrives or 100 ms pass; it tries 4 times in all, the address dword's sequence
// number being the attempt number (Linux's TB_CTL_RETRIES / TB_TIMEOUT). A response matches when
// PDF, route (bit 63 masked), exact size and sequence agree and the offset/length/space echo the
// request; everything else that arrives meanwhile is dispatched like an unsolicited packet, so a
// late response to an earlier attempt is dropped (counted), never mistaken for the current one.
// An error packet (PDF 3, not an async code) answers the pending request whatever its route, as in
// Linux; it ends the request at once with an error from router_error_code(), and the packet is kept
// in last_router_error(). A timeout is Errc::timeout: the two are distinct because a connection
// manager detects an XDomain peer by a *router error* answering a read across a lane adapter.
//
// Unsolicited packets — hot-plug events (PDF 5), async error notifications (PDF 3 codes 1, 12, 13,
// 32–39), XDomain requests and unmatched XDomain responses (PDF 6/7: ThunderboltIP uses PDF 7 both
// ways) — go to a bounded inbox (overflow drops the newest, counted) which the connection manager
// drains with next_notification(). The channel never acks anything itself: the CM sends plug acks
// (ack_hot_plug) and XDomain responses (send).
//
// Time: every deadline uses an injectable Clock; between two polls of an empty ring the channel
// calls a WaitStrategy (sleep briefly, sleep on the ring-0 RX interrupt, or — in tests — advance a
// ManualClock), never a hot spin. Polling the ring is also what drives an emulated device
// (ControlRing::receive → Device::poll).
//
// Not thread safe: one thread (the connection manager's) owns a channel.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "nhi/control_ring.hpp"
#include "nhi/irq_wait.hpp"
#include "nhi/nhi.hpp"
#include "tbv/result.hpp"
#include "usb4/packets.hpp"

namespace tbv::usb4 {

// ---- time -----------------------------------------------------------------------------------

class Clock {
public:
    using time_point = std::chrono::steady_clock::time_point;
    Clock() = default;
    Clock(const Clock&) = delete;
    Clock& operator=(const Clock&) = delete;
    virtual ~Clock() = default;
    virtual time_point now() const noexcept = 0;
};

class SteadyClock final : public Clock {
public:
    time_point now() const noexcept override { return std::chrono::steady_clock::now(); }
};

/// A clock that moves only when told to (tests).
class ManualClock final : public Clock {
public:
    time_point now() const noexcept override { return now_; }
    void advance(std::chrono::nanoseconds d) noexcept { now_ += d; }

private:
    time_point now_{};
};

/// What the channel does when the ring is empty and its deadline has not passed.
class WaitStrategy {
public:
    WaitStrategy() = default;
    WaitStrategy(const WaitStrategy&) = delete;
    WaitStrategy& operator=(const WaitStrategy&) = delete;
    virtual ~WaitStrategy() = default;
    /// Returns after at most about `max` (earlier is fine: the channel polls and calls again).
    virtual void wait(std::chrono::nanoseconds max) noexcept = 0;
};

/// Sleeps `step` (default 50 µs) at a time: for polled NHIs without interrupt vectors.
class SleepWait final : public WaitStrategy {
public:
    explicit SleepWait(std::chrono::nanoseconds step = std::chrono::microseconds(50)) noexcept
        : step_(step) {}
    void wait(std::chrono::nanoseconds max) noexcept override;

private:
    std::chrono::nanoseconds step_;
};

/// Sleeps on the ring-0 RX interrupt (the ControlRing must have been created with `vector` as its
/// irq_vector), at most `max_sleep` at a time so a device model driven by polling still
/// progresses and a lost interrupt costs little. Clears ring 0's RX status after each wake-up.
class IrqWait final : public WaitStrategy {
public:
    static Result<std::unique_ptr<IrqWait>> create(
        nhi::Nhi& nhi, unsigned vector,
        std::chrono::nanoseconds max_sleep = std::chrono::milliseconds(1));
    void wait(std::chrono::nanoseconds max) noexcept override;

private:
    IrqWait(nhi::Nhi& nhi, std::unique_ptr<nhi::IrqWaiter> w, std::chrono::nanoseconds max_sleep)
        : nhi_(nhi), waiter_(std::move(w)), max_sleep_(max_sleep) {}
    nhi::Nhi& nhi_;
    std::unique_ptr<nhi::IrqWaiter> waiter_;
    std::chrono::nanoseconds max_sleep_;
};

/// Tests: advances a ManualClock by `step` (capped at `max`) per wait, after running an optional
/// hook (e.g. a scripted peer that answers "later").
class ManualClockWait final : public WaitStrategy {
public:
    explicit ManualClockWait(ManualClock& clock,
                             std::chrono::nanoseconds step = std::chrono::milliseconds(1))
        : clock_(clock), step_(step) {}
    void wait(std::chrono::nanoseconds max) noexcept override;
    std::function<void()> on_wait;  ///< runs before the clock moves; must not throw
    std::uint64_t waits = 0;

private:
    ManualClock& clock_;
    std::chrono::nanoseconds step_;
};

// ---- channel -----------------------------------------------------------------------------------

struct ChannelOptions {
    std::chrono::nanoseconds timeout = std::chrono::milliseconds(100);  ///< per attempt
    unsigned attempts = 4;                                              ///< config read/write
    std::size_t inbox_capacity = 64;
    Clock* clock = nullptr;        ///< not owned; nullptr = steady_clock
    WaitStrategy* wait = nullptr;  ///< not owned; nullptr = SleepWait(50 µs)
};

struct ChannelCounters {
    std::uint64_t tx = 0;                 ///< packets sent
    std::uint64_t rx = 0;                 ///< packets received (valid CRC)
    std::uint64_t timeouts = 0;           ///< attempts that saw no response in time
    std::uint64_t retries = 0;            ///< attempts after the first
    std::uint64_t unmatched_dropped = 0;  ///< late/unexpected responses, bad echoes (PDF 1/2/3/4)
    std::uint64_t malformed_dropped = 0;  ///< failed decoding (bad shape, unknown PDF)
    std::uint64_t router_errors = 0;      ///< error packets that answered a request
    std::uint64_t notifications = 0;      ///< queued to the inbox
    std::uint64_t inbox_overflow = 0;     ///< dropped because the inbox was full
};

enum class NotificationKind : std::uint8_t {
    hot_plug,     ///< PDF 5: decode as HotPlugEvent
    async_error,  ///< PDF 3 with an async code: ErrorPacket
    xdomain,      ///< PDF 6/7: XdomainPacket
};

/// An unsolicited packet, already validated (decode() succeeds).
struct Notification {
    NotificationKind kind = NotificationKind::hot_plug;
    ControlPacket packet;
    /// Typed view; spans inside point into this object's `packet`.
    Result<AnyPacket> decode() const noexcept { return usb4::decode(packet.pdf, packet.payload()); }
};

/// Extra acceptance test for an XDomain response (after PDF 7 + route + protocol UUID matched).
using XdMatch = std::function<bool(const XdomainPacket&)>;

/// Error code for an error packet answering a request: port_not_connected → Errc::link_down,
/// invalid_config_space → std::errc::no_such_device, lock → std::errc::permission_denied, anything
/// else → Errc::router_error.
std::error_code router_error_code(const ErrorPacket& e) noexcept;

class ControlChannel {
public:
    /// `ring` must outlive the channel. std::errc::invalid_argument for attempts 0, attempts > 4
    /// (the sequence field has 2 bits), a zero timeout or inbox capacity.
    static Result<std::unique_ptr<ControlChannel>> create(nhi::ControlRing& ring,
                                                          const ChannelOptions& opts = {});

    /// Reads out.size() (1..60) dwords of config space; returns the reply's adapter field (for a
    /// router space read: the router's upstream adapter). Errors: timeout, router error (see
    /// router_error_code), std::errc::invalid_argument for bad arguments.
    Result<unsigned> read(std::uint64_t route, Space space, unsigned port, unsigned offset,
                          std::span<std::uint32_t> out);
    /// Convenience: `len` dwords into a new vector.
    Result<std::vector<std::uint32_t>> read(std::uint64_t route, Space space, unsigned port,
                                            unsigned offset, unsigned len);
    Result<std::uint32_t> read1(std::uint64_t route, Space space, unsigned port, unsigned offset);
    /// Writes 1..60 dwords.
    Result<void> write(std::uint64_t route, Space space, unsigned port, unsigned offset,
                       std::span<const std::uint32_t> data);
    /// tb_cfg_get_upstream_port: a 1-dword router-space read at offset 0, the reply's adapter.
    Result<unsigned> upstream_adapter(std::uint64_t route);

    /// Sends an XDomain request (its seq is replaced by attempt % 4 on each attempt) and waits for
    /// the response: PDF 7 from the same route (bit 63 masked) with the same protocol UUID and
    /// accepted by `match` (if given), or an error packet (→ router_error_code). Returns the raw
    /// response packet (decode it with decode_xdomain). Errc::timeout after `attempts` tries.
    Result<ControlPacket> xdomain_request(const XdomainPacket& request, const XdMatch& match,
                                          std::chrono::nanoseconds timeout, unsigned attempts);

    /// Sends one packet as is (acks, XDomain responses).
    Result<void> send(const ControlPacket& p);
    Result<void> send_raw(unsigned pdf, std::span<const std::uint32_t> dwords);
    /// Plug ack for an event (PDF 3 code 7, PG plug/unplug, ref §5.6).
    Result<void> ack_hot_plug(const HotPlugEvent& e);

    /// Drains the ring into the inbox (nothing is pending, so responses are all late).
    void poll();
    /// Polls, then pops the oldest notification.
    std::optional<Notification> next_notification();
    std::size_t pending_notifications() const noexcept { return inbox_count_; }

    /// The error packet that ended the last failed request, if it was one.
    const std::optional<ErrorPacket>& last_router_error() const noexcept { return last_error_; }
    const ChannelCounters& counters() const noexcept { return ctr_; }
    nhi::ControlRing& ring() noexcept { return ring_; }
    Clock& clock() noexcept { return *clock_; }

private:
    using Builder = std::function<Result<ControlPacket>(unsigned attempt)>;
    using Matcher = std::function<bool(const ControlPacket&, unsigned attempt)>;

    ControlChannel(nhi::ControlRing& ring, const ChannelOptions& opts);
    Result<ControlPacket> transact(const Builder& build, const Matcher& match,
                                   std::chrono::nanoseconds timeout, unsigned attempts);
    /// A packet that is not the awaited response.
    void dispatch(const ControlPacket& p);
    void enqueue(NotificationKind kind, const ControlPacket& p);

    nhi::ControlRing& ring_;
    ChannelOptions opts_;
    SteadyClock steady_;
    SleepWait sleep_;
    Clock* clock_;
    WaitStrategy* wait_;
    std::vector<Notification> inbox_;  ///< ring buffer, allocated once
    std::size_t inbox_head_ = 0;
    std::size_t inbox_count_ = 0;
    std::optional<ErrorPacket> last_error_;
    ChannelCounters ctr_{};
};

}  // namespace tbv::usb4
