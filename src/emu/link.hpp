// SPDX-License-Identifier: Apache-2.0
// The emulator's optional link model (DESIGN.md "Optional link model"): how fast a cable carries
// frames, how long they take to cross it, and how fast one NHI ring can put them on it. Off by
// default: with it off, frames cross the emulated fabric the moment they are sent, as before.
//
//   TBV_EMU_LINK=gen=3[,lanes=2][,latency_ns=1000][,ring_gbps=12][,ring_desc_ns=2730]
//
//   gen          USB4 generation of the cable: 2, 3 or 4 = 10, 20 or 40 Gb/s per lane (ref §6.3
//                LANE_ADP_CS_1 current speed, §11 "Lane rates"); 0 or absent: the cable adds no
//                serialization delay
//   lanes        lanes that carry one direction, 1 or 2 (default 2: a bonded link, ref §11
//                "Gen3x2 = 40 Gb/s"). The model treats one direction of a cable as one serial
//                pipe of lanes × lane rate: a frame occupies it for bytes × 8 / (lanes × rate).
//                Assumptions: the rate applies to the frame bytes as they are (USB4 tunnelling,
//                256-byte packet headers and line encoding are not added, so this is an upper
//                bound), the two directions are independent, and the width is taken from this
//                setting, not from the emulated lane-bonding state
//   latency_ns   added after a frame's last byte left: it arrives at wire end + latency
//   ring_gbps    per-ring TX DMA ceiling, in Gb/s of 4 KiB frames (real NHIs: ~12 Gb/s per ring,
//                DESIGN.md "Hard facts"); 0 or absent: no ceiling. Data rings only: ring 0 (the
//                control channel, a few small packets) is not paced
//   ring_desc_ns the part of one descriptor's cost that does not depend on its length; the rest
//                of a 4 KiB descriptor's cost (4096 × 8 / ring_gbps ns) is spread over its bytes.
//                Default: all of it (DESIGN.md: "the limit is the descriptor rate"), so a 64-byte
//                frame costs as much as a 4 KiB one. How real hardware splits it is not known
//
// Any one key turns its part on; `TBV_EMU_LINK=off` (or empty) is the same as unset. A malformed
// value is an error naming the item (parse_link), never silently ignored.
//
// Where it acts. The ring ceiling: the TX DMA engine (dma_engine.cpp) paces each ring with a
// RingPacer; descriptors it may not start yet stay pending and are taken up by a later doorbell
// or poll of the NHI. The cable: each router models the direction *into* each of its USB4 ports
// with a LinkPipe (router.cpp): a data frame that reaches the port is copied in, serialized
// behind the frames before it, and handed on to the NHI only once its arrival time has passed,
// when the router next runs (the receiving side's poll, or the next frame arriving). So it works
// the same on the in-process and the shared-memory cable (where a frame enters the pipe when the
// receiving process takes it from shared memory). Control packets and link-status messages are
// not delayed (they are few and tiny; their timing belongs to the CM's own timers).
//
// Time: the emulator's Clock (clock.hpp), so a ManualClock makes every figure exact. Nothing
// spins: held frames wait until someone polls.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "emu/clock.hpp"
#include "emu/wire.hpp"

namespace tbv::emu {

struct LinkConfig {
    unsigned gen = 0;    ///< 0: no serialization; 2, 3, 4: USB4 Gen2/3/4 lane rate
    unsigned lanes = 2;  ///< lanes carrying one direction (1 or 2)
    std::chrono::nanoseconds latency{0};
    double ring_gbps = 0;  ///< per-ring TX ceiling at 4 KiB frames; 0: none
    /// Fixed part of a descriptor's cost; nullopt: the whole 4 KiB cost (descriptor-rate bound).
    std::optional<std::chrono::nanoseconds> ring_desc;

    /// Gb/s of one lane at `gen` (ref §6.3: Gen2 10, Gen3 20, Gen4 40), 0 for gen 0.
    static double lane_gbps(unsigned gen) noexcept;
    /// What one direction of the cable carries: lanes × lane rate (0: unlimited).
    double cable_gbps() const noexcept { return lane_gbps(gen) * lanes; }
    bool cable_on() const noexcept { return gen != 0 || latency.count() > 0; }
    bool ring_on() const noexcept { return ring_gbps > 0; }
    bool any() const noexcept { return cable_on() || ring_on(); }
};

/// parse_link's answer: a configuration, or what is wrong with the text.
struct LinkParse {
    LinkConfig config{};
    std::string error;  ///< empty: valid; otherwise names the offending item
    explicit operator bool() const noexcept { return error.empty(); }
};

/// Parses the TBV_EMU_LINK syntax above ("off" and "" give a config with any() false).
LinkParse parse_link(std::string_view spec);
/// TBV_EMU_LINK from the environment: nullopt when unset, empty or "off".
std::optional<LinkParse> link_from_env();
/// One line for logs and benchmark headers, e.g. "gen=3 lanes=2 (40 Gb/s) latency_ns=1000
/// ring_gbps=12 ring_desc_ns=2731", or "off".
std::string describe(const LinkConfig& l);

/// Picoseconds: a 4 KiB frame at 40 Gb/s is 819.2 ns, so whole nanoseconds would drift.
using Ps = std::int64_t;
inline constexpr Ps kPsPerNs = 1000;

/// The TX DMA ceiling of one ring (ref: DESIGN.md "Hard facts"): each descriptor keeps the engine
/// busy for cost(len), so the ring never starts descriptors faster than that. A rate, not a delay:
/// an idle ring starts its next descriptor at once. Not thread safe (the TX ring's lock).
class RingPacer {
public:
    RingPacer() = default;
    explicit RingPacer(const LinkConfig& l) noexcept;
    bool on() const noexcept { return on_; }
    /// Engine time one descriptor of `len` bytes takes.
    Ps cost(std::size_t len) const noexcept;

    /// The start time of a descriptor of `len` bytes, if it may start by `now`: the engine is
    /// free at `free_at()`, and the descriptor was not there before `posted` (pass the doorbell
    /// time for a descriptor the engine has not seen before, a time ≤ free_at() for one it had to
    /// leave pending: a backlog keeps the engine busy even when nobody polls). nullopt: not yet.
    std::optional<Ps> start(Ps posted, Ps now, std::size_t len) noexcept;
    Ps free_at() const noexcept { return free_at_; }
    void reset() noexcept { free_at_ = std::numeric_limits<Ps>::min() / 2; }

private:
    bool on_ = false;
    Ps fixed_ = 0;
    double per_byte_ = 0;  ///< ps; fractional (12 Gb/s over 4 KiB is 666.67 ps a byte)
    Ps free_at_ = std::numeric_limits<Ps>::min() / 2;
};

/// One direction of a cable, as the receiving port sees it: a FIFO of frames with their arrival
/// times. admit() copies a frame in and serializes it behind the frames before it (it occupies
/// the pipe for bytes × 8 / rate from max(its send time, end of the previous frame)); it arrives
/// `latency` after its last byte. release() hands over, in order, the frames that have arrived.
///
/// Thread safe: admit() runs in the sender's thread, release() in whichever thread polls the
/// receiving router. One mutex guards the indices (held briefly); a second one lets one thread at
/// a time release, so frames are handed on in order, and release does not hold the first one
/// while the receiver copies frames out, so senders are not blocked by it. Frame buffers are
/// allocated on first use of a slot and reused: no allocation per frame once warm.
class LinkPipe {
public:
    /// Frames a pipe holds at most. The transport's credits keep far fewer in flight (one RX
    /// ring's worth per rail, ~256); a sender that ignores credits loses what does not fit
    /// (counted), as it would lose it in the receiver's RX ring.
    static constexpr std::size_t kCapacity = 2048;

    explicit LinkPipe(const LinkConfig& l);
    LinkPipe(const LinkPipe&) = delete;
    LinkPipe& operator=(const LinkPipe&) = delete;

    /// Copies the data frames `ps` in, sent at `sent` each (their stamp, kNoStamp: `now`).
    /// Returns how many did not fit (dropped).
    std::size_t admit(std::span<const WirePacket> ps, Clock::Duration now) noexcept;
    /// True if a frame may have arrived by `now` (lock free: one atomic load).
    bool due(Clock::Duration now) const noexcept {
        return now.count() >= due_ns_.load(std::memory_order_acquire);
    }
    /// Frames handed on per deliver() call.
    static constexpr std::size_t kReleaseBatch = 32;
    /// Hands every frame that has arrived by `now` to `deliver(std::span<const WirePacket>)`, in
    /// order, in batches of at most kReleaseBatch (the data stays valid during the call). Returns
    /// at once if another thread is releasing. `deliver` must not call back into this pipe.
    template <typename F>
    void release(Clock::Duration now, F&& deliver) noexcept {
        std::unique_lock rl(release_mu_, std::try_to_lock);
        if (!rl.owns_lock()) {
            return;  // that thread hands them on, in order
        }
        std::array<WirePacket, kReleaseBatch> batch;
        for (;;) {
            const std::size_t n = take_due(now.count() * kPsPerNs, batch);
            if (n == 0) {
                return;
            }
            deliver(std::span<const WirePacket>(batch.data(), n));
            done_with(n);
        }
    }
    /// Drops everything held (the cable was pulled: frames on it are lost). Returns how many.
    std::size_t clear() noexcept;

    /// Arrival time of the next held frame (nullopt: empty).
    std::optional<Clock::Duration> next_arrival() const noexcept;
    std::size_t held() const noexcept;

private:
    struct Held {
        WirePacket pkt;  ///< data points into the slot's buffer
        Ps arrival = 0;
    };
    /// Up to out.size() frames that have arrived by `now`, from head_ on; their slots stay out of
    /// admit()'s reach until done_with() frees them.
    std::size_t take_due(Ps now, std::span<WirePacket> out) noexcept;
    void done_with(std::size_t n) noexcept;
    void publish_locked() noexcept;

    const Ps per_byte_;  ///< 0: no serialization
    const Ps latency_;

    mutable std::mutex mu_;  ///< leaf: indices, slots, wire time
    std::vector<Held> slots_;
    std::vector<std::unique_ptr<std::byte[]>> bufs_;
    std::uint64_t freed_ = 0;                            ///< slots before this are free again
    std::uint64_t head_ = 0;                             ///< next frame to release
    std::uint64_t tail_ = 0;                             ///< next slot to fill
    Ps wire_free_ = std::numeric_limits<Ps>::min() / 2;  ///< when the last frame's last byte left
    std::atomic<Clock::Duration::rep> due_ns_{std::numeric_limits<Clock::Duration::rep>::max()};
    std::mutex release_mu_;  ///< one releaser at a time (taken before mu_)
};

}  // namespace tbv::emu
