// SPDX-License-Identifier: Apache-2.0
// ShmCable: one end of a USB4 cable between two processes, through a file in /dev/shm named
// after the cable (/dev/shm/tbv-cable-<name>). The first two processes to open it take ends a and
// b (or ask for one). Each direction has two single-producer single-consumer rings of fixed-size
// slots: control (packets ≤ 256 bytes, link status) and data (frames ≤ 4096 bytes); indices are
// 64-bit counters accessed with acquire/release through std::atomic_ref, so the file needs no
// construction beyond being zero-filled.
//
// Nothing runs on its own: received packets are handed to the bound router when the local side
// polls (EmuNhi::poll → Router::poll → ShmCable::poll), up to 32 consecutive ones in one
// CableSink::cable_receive_batch, their slots released after the call. Peer liveness is checked in
// poll at most every `liveness_interval`: a pid that has exited (pidfd when available, else
// kill(pid, 0)), an end that was closed, or a heartbeat counter that stopped moving for
// `heartbeat_timeout` mean the peer is gone and the router sees the link drop; a peer that opens
// the end again (new generation) is seen as a replug. The file is removed when the second end
// closes.
//
// Scheduled unplug (FaultConfig::unplug, TBV_EMU_FAULTS unplug_ms / unplug_after_ms): the cable
// is pulled once, unplug_after after this end first saw the peer, for `unplug`, as the in-process
// Cable does. The pull is a state of the cable, not of one end: a pull epoch in the file, even
// while plugged and odd while pulled, which the end that pulls advances twice (pull, then replug
// on its own clock when `unplug` has passed). Whichever end's schedule fires first pulls; the
// other end observes it and drops its own schedule (once per cable). Both ends observe the epoch
// in every poll: a pull takes the peer away (the router sees the link drop, hot-unplug event), the
// replug brings it back (hot-plug event); an end that slept through a whole pull still sees an
// unplug followed by a replug. Every packet carries the epoch it was sent in: what is sent while
// pulled is dropped at once, and what was still in flight when the cable was pulled is dropped
// when the receiver reaches it (both counted as unplugged_drops). Deterministic with a
// ManualClock: the pull and the replug happen in the puller's poll, the other end follows at its
// next poll.
//
// Flow control: a data frame that finds the peer's data queue full is not lost. It waits in this
// end, in order behind any that already wait, and goes out at the next send or poll as slots
// free up; only a backlog beyond kMaxHeldFrames (a peer that stopped reading), a peer that went
// away, or the cable being pulled discards it. A USB4 link does the same with its link-level
// flow control: a frame is held back, never discarded, while the far side has no buffer for it.
// The transport's rail credits bound what any one RX ring can receive, but not what all the rails
// of a cable can have on the way at once (2 rails × 255 credits > the queue's 256 slots): before
// this, a burst of UD datagrams while the receiving process was descheduled overflowed the queue
// and the datagrams were lost with only full_drops to show for it (ib_send_bw -c UD hung; RC hid
// the loss behind retransmissions).
//
// Frame-arrived signal (InboundSignal, wire.hpp): each direction has a doorbell in the file, a
// futex word `seq` and a `sleepers` flag. The sender bumps `seq` after every send or batch (one
// locked add, no system call) and calls FUTEX_WAKE only while the receiver has set `sleepers`
// (want_wakeups(true)), so two ends that both poll never make a system call for each other. A
// receiver that wants to sleep (the emulated NHI's RX helper, only while the driver has armed an
// RX interrupt) reads `seq`, checks its queues, and waits for `seq` to move: a packet sent after
// the read moves it (the wait returns at once or is woken), one sent before is found in the
// queues. The words are shared between processes: plain (not FUTEX_PRIVATE) futex operations.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "emu/clock.hpp"
#include "emu/faults.hpp"
#include "emu/wire.hpp"
#include "tbv/result.hpp"

namespace tbv::emu {

enum class ShmSide : std::uint8_t { any, a, b };

struct ShmCableConfig {
    ShmSide side = ShmSide::any;
    std::string dir = "/dev/shm";
    std::chrono::nanoseconds liveness_interval = std::chrono::milliseconds(10);
    /// 0 disables the heartbeat check (pid liveness still applies).
    std::chrono::nanoseconds heartbeat_timeout = std::chrono::seconds(5);
    const Clock* clock = nullptr;
};

struct ShmCableStats {
    std::uint64_t sent = 0;
    std::uint64_t received = 0;
    std::uint64_t full_drops = 0;      ///< the peer's queue was full and kMaxHeldFrames wait
    std::uint64_t held = 0;            ///< data frames that waited for a slot (flow control)
    std::uint64_t held_discards = 0;   ///< waiting frames discarded (peer gone or replugged)
    std::uint64_t oversize_drops = 0;  ///< larger than a slot
    std::uint64_t peer_losses = 0;     ///< peer seen gone (death, close, restart)
    std::uint64_t peer_arrivals = 0;
    std::uint64_t fault_drops = 0;  ///< lost by fault injection
    std::uint64_t fault_dups = 0;
    std::uint64_t fault_corrupted = 0;
    std::uint64_t unplugs = 0;          ///< scheduled unplugs seen (this end's or the peer's)
    std::uint64_t unplugged_drops = 0;  ///< sent while pulled, or in flight when it was pulled
    std::uint64_t wakes_sent = 0;       ///< FUTEX_WAKEs this end made after sending (peer slept)
    std::uint64_t waits = 0;            ///< times this end slept in wait_inbound()
};

class ShmCable final : public CableEnd, public InboundSignal {
public:
    /// Data frames that may wait in this end for the peer's queue (see "Flow control"): more than
    /// every rail credit of one link (kMaxRailsPerLink rings of 256) can have on the way.
    static constexpr std::size_t kMaxHeldFrames = 4096;
    /// Opens (creating if needed) the cable file and takes an end. Errc-style failures: the file
    /// cannot be created or mapped, has a foreign layout, or both ends are held by live processes
    /// (std::errc::device_or_resource_busy).
    static Result<std::unique_ptr<ShmCable>> open(const std::string& name, ShmCableConfig cfg = {});
    ~ShmCable() override;
    ShmCable(const ShmCable&) = delete;
    ShmCable& operator=(const ShmCable&) = delete;

    unsigned side() const noexcept { return side_; }  ///< 0 = a, 1 = b
    const std::string& path() const noexcept { return path_; }
    ShmCableStats stats() const;
    /// Drop / duplicate / corrupt what this end sends (FaultConfig, TBV_EMU_FAULTS), and arms
    /// the scheduled unplug (once per cable; calling this again re-arms it).
    void set_faults(const FaultConfig& f);
    /// True while the cable is pulled by the scheduled unplug (either end's).
    bool pulled() const noexcept;

    // ---- CableEnd ----
    void bind(CableSink* sink, unsigned port) noexcept override;
    void send(const WirePacket& p) noexcept override;
    /// One lock and one stats update per batch (packet by packet while drop/dup/crc are active).
    void send_batch(std::span<const WirePacket> ps) noexcept override;
    bool peer_present() const noexcept override { return present_.load(std::memory_order_acquire); }
    void poll() noexcept override;
    InboundSignal* inbound_signal() noexcept override { return this; }

    // ---- InboundSignal: the doorbell towards this end (see "Frame-arrived signal") ----
    void want_wakeups(bool on) noexcept override;
    std::uint32_t inbound_seq() const noexcept override;
    bool inbound_pending() const noexcept override;
    void wait_inbound(std::uint32_t seen, std::chrono::nanoseconds timeout) noexcept override;
    void wake_local() noexcept override;

    /// The process holding the other end (0: none). It may have exited since (poll() finds out).
    pid_t peer_pid() const noexcept;

    struct Layout;  ///< the file's contents (shm_cable.cpp)

private:
    ShmCable(std::string path, ShmCableConfig cfg, int fd, Layout* map, unsigned side) noexcept;
    void check_peer(Clock::Duration now) noexcept;
    void check_pull(Clock::Duration now) noexcept;
    void set_present(bool present) noexcept;
    bool process_alive(pid_t pid) noexcept;
    void discard_incoming() noexcept;
    void notify() noexcept;
    unsigned drain() noexcept;
    /// After a send: moves the peer's doorbell and wakes it if it sleeps. No lock needed.
    void ring_bell() noexcept;
    /// send_mu_ held. Queues a data frame behind those waiting; false if it is lost (backlog
    /// full, or no memory).
    bool send_data_locked(const WirePacket& p, std::uint32_t pull) noexcept;
    /// send_mu_ held. Moves waiting frames into the peer's queue while it has slots; true if
    /// none wait any more.
    bool flush_held_locked() noexcept;
    void discard_held() noexcept;

    const std::string path_;
    const ShmCableConfig cfg_;
    const Clock& clock_;
    int fd_ = -1;
    Layout* map_ = nullptr;
    const unsigned side_;

    std::atomic<CableSink*> sink_{nullptr};
    std::atomic<unsigned> port_{0};
    std::atomic<bool> present_{false};

    std::mutex send_mu_;    ///< one producer per queue within this process
    FaultInjector faults_;  ///< send_mu_ held
    struct HeldFrame {
        WirePacket p;  ///< p.data is re-pointed at `bytes` when it goes out
        std::vector<std::byte> bytes;
        std::uint32_t pull = 0;  ///< pull state it was sent in
    };
    std::deque<HeldFrame> held_;         ///< send_mu_ held; oldest first
    std::atomic<bool> has_held_{false};  ///< !held_.empty(), read by poll without the lock
    std::mutex poll_mu_;  ///< one consumer; also guards the liveness and pull state below
    Clock::Duration next_check_{0};
    bool peer_alive_ = false;  ///< liveness (pid, generation, heartbeat); present_ also needs
                               ///< the cable not to be pulled
    // Scheduled unplug.
    std::chrono::milliseconds unplug_for_{0};  ///< FaultConfig::unplug; 0: none
    std::chrono::milliseconds unplug_after_{0};
    bool unplug_done_ = false;                      ///< pulled once (by either end)
    std::optional<Clock::Duration> first_present_;  ///< when the peer was first seen
    bool pulling_ = false;                          ///< this end pulled and owns the replug
    Clock::Duration replug_at_{0};
    std::uint32_t seen_pull_ = 0;  ///< the file's pull state as last reported to the router
    pid_t peer_pid_ = 0;
    int peer_pidfd_ = -1;
    std::uint32_t peer_gen_ = 0;
    std::uint64_t peer_hb_ = 0;
    Clock::Duration peer_hb_at_{0};

    mutable std::mutex stats_mu_;
    ShmCableStats stats_{};
};

}  // namespace tbv::emu
