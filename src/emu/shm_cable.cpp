// SPDX-License-Identifier: Apache-2.0
#include "emu/shm_cable.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <climits>
#include <cstring>
#include <ctime>

#include <linux/futex.h>

#include "emu/batch.hpp"

namespace tbv::emu {

namespace {

/// "tbvcabl" + layout version 3 (3: the doorbells): a file with another layout is refused, not
/// misread.
constexpr std::uint64_t kMagic = 0x7462'7663'6162'6c03ULL;
constexpr std::size_t kCtlPayload = 256;
constexpr std::size_t kCtlSlots = 64;
constexpr std::size_t kDataPayload = 4096;
constexpr std::size_t kDataSlots = 256;
constexpr unsigned kDrainBudget = 128;  ///< packets handed up per poll (bounded work)

template <typename T>
std::atomic_ref<T> at(T& v) noexcept {
    return std::atomic_ref<T>(v);
}

struct SlotHeader {
    std::uint32_t len;
    std::uint32_t hop;
    std::uint32_t pull;  ///< pull state the packet was sent in (PullState)
    std::uint8_t kind, lane, sof, eof;
    std::uint8_t crc_error, st_reset, st_lanes, st_bond;
    std::uint32_t rsvd;
};
static_assert(sizeof(SlotHeader) == 24);

template <std::size_t Payload, std::size_t N>
struct Queue {
    static constexpr std::size_t kPayload = Payload;
    static constexpr std::size_t kSlots = N;
    struct Slot {
        SlotHeader h;
        std::byte data[Payload];
    };
    alignas(64) std::uint64_t head;  ///< written by the producer only
    alignas(64) std::uint64_t tail;  ///< written by the consumer only
    alignas(64) Slot slots[N];
};

struct EndInfo {
    alignas(64) std::int32_t pid;  ///< 0: free
    std::uint32_t generation;      ///< bumped each time a process takes the end
    std::uint64_t heartbeat;       ///< bumped on every poll of the owner
};

/// The scheduled unplug, shared by both ends: one word, (epoch << 1) | puller. The epoch is even
/// while the cable is plugged and odd while it is pulled; `puller` is the side that pulled (0
/// while plugged). Only the puller ends its own pull, so every change is a compare-exchange from
/// the value the changing end last saw.
struct PullState {
    alignas(64) std::uint32_t word;
};

constexpr std::uint32_t pull_epoch(std::uint32_t w) noexcept {
    return w >> 1;
}
/// The "frame arrived" signal towards one end (header: "Frame-arrived signal"). `seq` is the
/// futex word; the receiving end writes `sleepers`, the sending end only reads it.
struct Doorbell {
    alignas(64) std::uint32_t seq;
    std::uint32_t sleepers;  ///< nonzero: FUTEX_WAKE `seq` after sending
};

// Shared futexes (the waker is another process): FUTEX_WAIT / FUTEX_WAKE without the private flag.
void futex_wait(std::uint32_t* word, std::uint32_t expected,
                std::chrono::nanoseconds timeout) noexcept {
    const auto secs = std::chrono::duration_cast<std::chrono::seconds>(timeout);
    timespec ts{};
    ts.tv_sec = static_cast<time_t>(secs.count());
    ts.tv_nsec = static_cast<long>((timeout - secs).count());
    // EAGAIN (the word moved already), EINTR and ETIMEDOUT all just return: callers look again.
    (void)::syscall(SYS_futex, word, FUTEX_WAIT, expected, &ts, nullptr, 0);
}

void futex_wake_all(std::uint32_t* word) noexcept {
    (void)::syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

constexpr bool is_pulled(std::uint32_t w) noexcept {
    return (pull_epoch(w) & 1) != 0;
}
constexpr unsigned puller_of(std::uint32_t w) noexcept {
    return w & 1;
}
constexpr std::uint32_t pulled_by(std::uint32_t w, unsigned side) noexcept {
    return (pull_epoch(w) + 1) << 1 | side;
}
constexpr std::uint32_t replugged(std::uint32_t w) noexcept {
    return (pull_epoch(w) + 1) << 1;
}
/// Pulls that began after `from` up to and including `to` (odd epochs entered).
constexpr std::uint32_t pulls_between(std::uint32_t from, std::uint32_t to) noexcept {
    return (pull_epoch(to) + 1) / 2 - (pull_epoch(from) + 1) / 2;
}
static_assert(!is_pulled(0) && is_pulled(pulled_by(0, 1)) && puller_of(pulled_by(0, 1)) == 1);
static_assert(!is_pulled(replugged(pulled_by(0, 1))) && pulls_between(0, pulled_by(0, 0)) == 1);
static_assert(pulls_between(pulled_by(0, 0), replugged(pulled_by(0, 0))) == 0);
static_assert(pulls_between(0, replugged(pulled_by(0, 0))) == 1);

pid_t self_pid() noexcept {
    return ::getpid();
}

}  // namespace

struct ShmCable::Layout {
    std::uint64_t magic;
    EndInfo ends[2];
    PullState pull;
    Doorbell bell[2];                      ///< bell[i]: towards end i
    Queue<kCtlPayload, kCtlSlots> ctl[2];  ///< ctl[i]: towards end i
    Queue<kDataPayload, kDataSlots> data[2];
};

namespace {

template <typename Q>
void discard(Q& q) noexcept {
    at(q.tail).store(at(q.head).load(std::memory_order_acquire), std::memory_order_release);
}

template <typename Q>
bool push(Q& q, const WirePacket& p, std::uint32_t pull) noexcept {
    const std::uint64_t head = at(q.head).load(std::memory_order_relaxed);
    const std::uint64_t tail = at(q.tail).load(std::memory_order_acquire);
    if (head - tail >= Q::kSlots) {
        return false;
    }
    auto& s = q.slots[head % Q::kSlots];
    s.h.len = static_cast<std::uint32_t>(p.data.size());
    s.h.hop = p.hop;
    s.h.pull = pull;
    s.h.kind = static_cast<std::uint8_t>(p.kind);
    s.h.lane = static_cast<std::uint8_t>(p.lane);
    s.h.sof = static_cast<std::uint8_t>(p.sof_pdf);
    s.h.eof = static_cast<std::uint8_t>(p.eof_pdf);
    s.h.crc_error = p.crc_error ? 1 : 0;
    s.h.st_reset = p.status.in_reset ? 1 : 0;
    s.h.st_lanes = static_cast<std::uint8_t>(
        (p.status.lane0_enabled ? 1 : 0) | (p.status.lane1_enabled ? 2 : 0) |
        (p.status.lane0_trained ? 4 : 0) | (p.status.lane1_trained ? 8 : 0));
    s.h.st_bond = p.status.bond_request ? 1 : 0;
    if (!p.data.empty()) {
        std::memcpy(s.data, p.data.data(), p.data.size());
    }
    at(q.head).store(head + 1, std::memory_order_release);
    return true;
}

/// Packets handed to the router in one cable_receive_batch.
constexpr std::size_t kDeliverBatch = 32;

/// Hands up to `budget` packets sent in pull state `pull` to `deliver`, up to kDeliverBatch at a
/// time as a span of WirePackets whose data points into the slots; the slots are released after
/// each call. Packets sent in an earlier pull state were on the way when the cable was pulled:
/// they are lost and counted in `stale`.
template <typename Q, typename F>
unsigned pop(Q& q, unsigned budget, std::uint32_t pull, std::uint64_t& stale,
             F&& deliver) noexcept {
    std::uint64_t tail = at(q.tail).load(std::memory_order_relaxed);
    const std::uint64_t head = at(q.head).load(std::memory_order_acquire);
    if (tail == head) {
        return 0;  // the usual case in a poll: nothing to set up
    }
    BatchBuffer<WirePacket, kDeliverBatch> batch;
    unsigned n = 0;
    while (tail != head && n < budget) {
        batch.clear();
        while (tail != head && !batch.full() && n + batch.size() < budget) {
            const auto& s = q.slots[tail % Q::kSlots];
            ++tail;
            const auto kind = static_cast<WireKind>(s.h.kind);
            if (kind != WireKind::control && kind != WireKind::data && kind != WireKind::status) {
                continue;  // not ours to interpret
            }
            if (s.h.pull != pull) {
                ++stale;
                continue;
            }
            WirePacket& p = batch.push();
            const std::size_t len = std::min<std::size_t>(s.h.len, Q::kPayload);  // never trusted
            p.kind = kind;
            p.lane = s.h.lane;
            p.hop = s.h.hop;
            p.sof_pdf = s.h.sof;
            p.eof_pdf = s.h.eof;
            p.crc_error = s.h.crc_error != 0;
            p.status.in_reset = s.h.st_reset != 0;
            p.status.lane0_enabled = (s.h.st_lanes & 1) != 0;
            p.status.lane1_enabled = (s.h.st_lanes & 2) != 0;
            p.status.lane0_trained = (s.h.st_lanes & 4) != 0;
            p.status.lane1_trained = (s.h.st_lanes & 8) != 0;
            p.status.bond_request = s.h.st_bond != 0;
            p.data = std::span<const std::byte>(s.data, len);
        }
        if (!batch.empty()) {
            deliver(batch.span());
        }
        n += static_cast<unsigned>(batch.size());
        at(q.tail).store(tail, std::memory_order_release);  // the slots are free again
    }
    return n;
}

bool pid_alive(pid_t pid) noexcept {
    return pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM);
}

}  // namespace

Result<std::unique_ptr<ShmCable>> ShmCable::open(const std::string& name, ShmCableConfig cfg) {
    if (name.empty() || name.find('/') != std::string::npos) {
        return fail(std::errc::invalid_argument);
    }
    std::string path = cfg.dir + "/tbv-cable-" + name;
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        return fail_errno(errno);
    }
    const auto fail_close = [fd](int err) {
        ::close(fd);
        return fail_errno(err);
    };
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        return fail_close(errno);
    }
    constexpr auto kSize = static_cast<off_t>(sizeof(Layout));
    if (st.st_size == 0) {
        // Both openers may get here: extending to the same size twice is harmless, and the
        // zero-filled file is a valid empty cable.
        if (::ftruncate(fd, kSize) != 0) {
            return fail_close(errno);
        }
    } else if (st.st_size != kSize) {
        return fail_close(EINVAL);
    }
    void* const m = ::mmap(nullptr, sizeof(Layout), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        return fail_close(errno);
    }
    auto* const map = static_cast<Layout*>(m);
    std::uint64_t magic = 0;
    if (!at(map->magic).compare_exchange_strong(magic, kMagic) && magic != kMagic) {
        ::munmap(m, sizeof(Layout));
        return fail_close(EINVAL);
    }
    const pid_t me = self_pid();
    int side = -1;
    for (unsigned s = 0; s < 2 && side < 0; ++s) {
        if ((cfg.side == ShmSide::a && s != 0) || (cfg.side == ShmSide::b && s != 1)) {
            continue;
        }
        std::int32_t cur = at(map->ends[s].pid).load();
        // A free end, or one left behind by a process that died without closing.
        if ((cur == 0 || !pid_alive(cur)) &&
            at(map->ends[s].pid).compare_exchange_strong(cur, me)) {
            side = static_cast<int>(s);
        }
    }
    if (side < 0) {
        ::munmap(m, sizeof(Layout));
        return fail_close(EBUSY);
    }
    const auto s = static_cast<unsigned>(side);
    at(map->ends[s].generation).fetch_add(1);
    // A pull whose owner left without ending it (closed or died while the cable was pulled):
    // the new owner of that end plugs the cable back in.
    std::uint32_t w = at(map->pull.word).load();
    if (is_pulled(w) && puller_of(w) == s) {
        at(map->pull.word).compare_exchange_strong(w, replugged(w));
    }
    // A previous owner that died while asking for wake-ups would cost the peer a system call per
    // send until we ask for them ourselves.
    at(map->bell[s].sleepers).store(0);
    // Whatever a previous owner of this end left unread is stale.
    discard(map->ctl[s]);
    discard(map->data[s]);
    return std::unique_ptr<ShmCable>(new ShmCable(std::move(path), std::move(cfg), fd, map, s));
}

ShmCable::ShmCable(std::string path, ShmCableConfig cfg, int fd, Layout* map,
                   unsigned side) noexcept
    : path_(std::move(path)),
      cfg_(std::move(cfg)),
      clock_(cfg_.clock != nullptr ? *cfg_.clock : Clock::steady()),
      fd_(fd),
      map_(map),
      side_(side),
      seen_pull_(at(map->pull.word).load()) {}

ShmCable::~ShmCable() {
    if (pulling_) {
        std::uint32_t w = at(map_->pull.word).load();
        if (is_pulled(w) && puller_of(w) == side_) {
            at(map_->pull.word).compare_exchange_strong(w, replugged(w));  // end our pull
        }
    }
    at(map_->ends[side_].pid).store(0);  // seq_cst, paired with the load below in the peer
    const std::int32_t peer = at(map_->ends[1 - side_].pid).load();
    if (peer == 0 || !pid_alive(peer)) {
        ::unlink(path_.c_str());  // the last end out removes the file
    }
    if (peer_pidfd_ >= 0) {
        ::close(peer_pidfd_);
    }
    ::munmap(map_, sizeof(Layout));
    ::close(fd_);
}

void ShmCable::bind(CableSink* sink, unsigned port) noexcept {
    // poll_mu_ makes sure no delivery to the previous sink is in progress when this returns.
    std::lock_guard lk(poll_mu_);
    port_.store(port, std::memory_order_relaxed);
    sink_.store(sink, std::memory_order_release);
}

void ShmCable::set_faults(const FaultConfig& f) {
    {
        std::lock_guard lk(send_mu_);
        faults_.configure(f);
    }
    std::lock_guard lk(poll_mu_);
    unplug_for_ = f.unplug;
    unplug_after_ = f.unplug_after;
    unplug_done_ = false;
}

bool ShmCable::pulled() const noexcept {
    return is_pulled(at(map_->pull.word).load(std::memory_order_acquire));
}

void ShmCable::send(const WirePacket& p) noexcept {
    const unsigned to = 1 - side_;
    bool ok = false;
    bool oversize = false;
    FaultInjector::Verdict v;
    {
        std::lock_guard lk(send_mu_);
        // Read under send_mu_ so that packets of this end enter the queue in pull-state order.
        const std::uint32_t pull = at(map_->pull.word).load(std::memory_order_acquire);
        if (is_pulled(pull)) {
            std::lock_guard slk(stats_mu_);
            ++stats_.unplugged_drops;  // nothing to send into: the faults' RNG is not consumed
            return;
        }
        v = faults_.decide(p.kind);
        if (!v.drop) {
            std::array<std::byte, hw::nhi::kMaxFrameSize> bad;
            const WirePacket q = v.corrupt ? FaultInjector::corrupted(p, bad) : p;
            const unsigned copies = v.dup ? 2 : 1;
            if (q.kind == WireKind::data) {
                oversize = q.data.size() > kDataPayload;
                for (unsigned i = 0; i < copies && !oversize; ++i) {
                    ok = send_data_locked(q, pull) || (ok && i > 0);
                }
            } else {
                oversize = q.data.size() > kCtlPayload;
                for (unsigned i = 0; i < copies && !oversize; ++i) {
                    ok = push(map_->ctl[to], q, pull) || (ok && i > 0);
                }
            }
        }
    }
    if (ok) {
        ring_bell();
    }
    std::lock_guard lk(stats_mu_);
    if (v.drop) {
        ++stats_.fault_drops;
        return;
    }
    stats_.fault_dups += v.dup ? 1 : 0;
    stats_.fault_corrupted += v.corrupt ? 1 : 0;
    if (ok) {
        ++stats_.sent;
    } else if (oversize) {
        ++stats_.oversize_drops;
    } else {
        ++stats_.full_drops;
    }
}

void ShmCable::send_batch(std::span<const WirePacket> ps) noexcept {
    const unsigned to = 1 - side_;
    std::uint64_t sent = 0;
    std::uint64_t full = 0;
    std::uint64_t oversize = 0;
    bool pulled = false;
    {
        std::unique_lock lk(send_mu_);
        if (faults_.active()) {
            lk.unlock();
            for (const WirePacket& p : ps) {
                send(p);  // each packet rolls its own faults, in order
            }
            return;
        }
        const std::uint32_t pull = at(map_->pull.word).load(std::memory_order_acquire);
        pulled = is_pulled(pull);
        for (std::size_t i = 0; i < ps.size() && !pulled; ++i) {
            const WirePacket& p = ps[i];
            const bool data = p.kind == WireKind::data;
            if (p.data.size() > (data ? kDataPayload : kCtlPayload)) {
                ++oversize;
            } else if (data ? send_data_locked(p, pull) : push(map_->ctl[to], p, pull)) {
                ++sent;
            } else {
                ++full;
            }
        }
    }
    if (sent != 0) {
        ring_bell();  // once per batch
    }
    std::lock_guard lk(stats_mu_);
    if (pulled) {
        stats_.unplugged_drops += ps.size();
        return;
    }
    stats_.sent += sent;
    stats_.full_drops += full;
    stats_.oversize_drops += oversize;
}

bool ShmCable::flush_held_locked() noexcept {
    auto& q = map_->data[1 - side_];
    while (!held_.empty()) {
        HeldFrame& h = held_.front();
        h.p.data = h.bytes;
        if (!push(q, h.p, h.pull)) {
            return false;
        }
        held_.pop_front();
    }
    has_held_.store(false, std::memory_order_relaxed);
    return true;
}

bool ShmCable::send_data_locked(const WirePacket& p, std::uint32_t pull) noexcept {
    auto& q = map_->data[1 - side_];
    if ((held_.empty() || flush_held_locked()) && push(q, p, pull)) {
        return true;
    }
    // The peer's queue is full: the frame waits here, behind the others (link flow control).
    if (held_.size() >= kMaxHeldFrames) {
        return false;
    }
    try {
        HeldFrame& h = held_.emplace_back();
        h.p = p;
        h.bytes.assign(p.data.begin(), p.data.end());
        h.pull = pull;
    } catch (...) {
        return false;  // no memory: lost, as before flow control
    }
    has_held_.store(true, std::memory_order_relaxed);
    std::lock_guard lk(stats_mu_);
    ++stats_.held;
    return true;
}

void ShmCable::discard_held() noexcept {
    std::size_t n = 0;
    {
        std::lock_guard lk(send_mu_);
        n = held_.size();
        held_.clear();
        has_held_.store(false, std::memory_order_relaxed);
    }
    if (n != 0) {
        std::lock_guard lk(stats_mu_);
        stats_.held_discards += n;
    }
}

bool ShmCable::process_alive(pid_t pid) noexcept {
    if (pid != peer_pid_) {
        if (peer_pidfd_ >= 0) {
            ::close(peer_pidfd_);
        }
        peer_pid_ = pid;
        // A pidfd also sees a killed child that is not reaped yet (kill(pid, 0) would not).
        peer_pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    }
    if (peer_pidfd_ >= 0) {
        pollfd pf{peer_pidfd_, POLLIN, 0};
        return ::poll(&pf, 1, 0) == 0;
    }
    return pid_alive(pid);
}

void ShmCable::discard_incoming() noexcept {
    discard(map_->ctl[side_]);
    discard(map_->data[side_]);
}

void ShmCable::notify() noexcept {
    if (CableSink* s = sink_.load(std::memory_order_acquire)) {
        s->cable_changed(port_.load(std::memory_order_relaxed));
    }
}

void ShmCable::set_present(bool present) noexcept {
    if (present_.exchange(present, std::memory_order_acq_rel) != present) {
        notify();
    }
}

void ShmCable::check_peer(Clock::Duration now) noexcept {
    const EndInfo& peer = map_->ends[1 - side_];
    const auto pid = static_cast<pid_t>(at(const_cast<std::int32_t&>(peer.pid)).load());
    const std::uint32_t gen = at(const_cast<std::uint32_t&>(peer.generation)).load();
    const std::uint64_t hb = at(const_cast<std::uint64_t&>(peer.heartbeat)).load();
    const bool was = peer_alive_;
    bool alive = pid != 0 && process_alive(pid);
    if (alive && (!was || gen != peer_gen_ || hb != peer_hb_)) {
        peer_hb_ = hb;
        peer_hb_at_ = now;
    } else if (alive && cfg_.heartbeat_timeout.count() > 0 &&
               now - peer_hb_at_ > cfg_.heartbeat_timeout) {
        alive = false;  // alive but silent: treat as gone
    }
    if (was && alive && gen != peer_gen_) {
        // The peer restarted between two checks: a replug.
        peer_alive_ = false;
        discard_incoming();
        discard_held();  // for the process that went away, not the one that came
        {
            std::lock_guard lk(stats_mu_);
            ++stats_.peer_losses;
        }
        set_present(false);
    } else if (was == alive) {
        return;
    }
    if (!alive) {
        discard_incoming();
        discard_held();
    }
    peer_gen_ = gen;
    peer_alive_ = alive;
    {
        std::lock_guard lk(stats_mu_);
        ++(alive ? stats_.peer_arrivals : stats_.peer_losses);
    }
    set_present(alive && !is_pulled(seen_pull_));
}

void ShmCable::check_pull(Clock::Duration now) noexcept {
    auto word = at(map_->pull.word);
    if (peer_alive_ && !first_present_) {
        first_present_ = now;  // unplug_after counts from here
    }
    // Our pull has lasted `unplug_for_`: plug back in (only the puller ends a pull).
    if (pulling_ && now >= replug_at_) {
        pulling_ = false;
        std::uint32_t w = word.load(std::memory_order_acquire);
        if (is_pulled(w) && puller_of(w) == side_) {
            word.compare_exchange_strong(w, replugged(w), std::memory_order_acq_rel);
        }
    }
    // Our schedule: once, unplug_after after we first saw the peer, unless the peer's schedule
    // pulled first (seen below, which sets unplug_done_).
    if (!pulling_ && !unplug_done_ && unplug_for_.count() > 0 && first_present_ &&
        now - *first_present_ >= std::chrono::duration_cast<Clock::Duration>(unplug_after_)) {
        unplug_done_ = true;
        std::uint32_t w = word.load(std::memory_order_acquire);
        if (w == seen_pull_ && !is_pulled(w) &&
            word.compare_exchange_strong(w, pulled_by(w, side_), std::memory_order_acq_rel)) {
            pulling_ = true;
            replug_at_ = now + std::chrono::duration_cast<Clock::Duration>(unplug_for_);
        }
    }
    // What both ends see, whoever changed it.
    const std::uint32_t w = word.load(std::memory_order_acquire);
    if (w == seen_pull_) {
        return;
    }
    const std::uint32_t pulls = pulls_between(seen_pull_, w);
    seen_pull_ = w;
    if (pulls > 0) {
        unplug_done_ = true;  // once per cable, whichever end pulled
        std::lock_guard lk(stats_mu_);
        stats_.unplugs += pulls;
    }
    // Pulled: the peer goes away. Plugged again (even if we slept through the whole pull): it
    // went away and comes back, so the router sees an unplug and then a plug.
    set_present(false);
    if (!is_pulled(w)) {
        set_present(peer_alive_);
    }
}

unsigned ShmCable::drain() noexcept {
    CableSink* const sink = sink_.load(std::memory_order_acquire);
    if (sink == nullptr) {
        return 0;
    }
    // Only packets of the pull state the router has been told about: after a change it has not
    // seen yet, the next poll reports it first and then delivers.
    if (at(map_->pull.word).load(std::memory_order_acquire) != seen_pull_) {
        return 0;
    }
    const unsigned port = port_.load(std::memory_order_relaxed);
    const auto deliver = [&](std::span<const WirePacket> ps) {
        sink->cable_receive_batch(port, ps);
    };
    std::uint64_t stale = 0;
    unsigned n = pop(map_->ctl[side_], kDrainBudget, seen_pull_, stale, deliver);
    n += pop(map_->data[side_], kDrainBudget, seen_pull_, stale, deliver);
    if (stale != 0) {
        std::lock_guard lk(stats_mu_);
        stats_.unplugged_drops += stale;
    }
    return n;
}

void ShmCable::poll() noexcept {
    std::unique_lock lk(poll_mu_, std::try_to_lock);
    if (!lk.owns_lock()) {
        return;  // another thread of this process is polling the cable
    }
    // Only this end writes its heartbeat: a plain store, not a locked read-modify-write.
    auto hb = at(map_->ends[side_].heartbeat);
    hb.store(hb.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    const Clock::Duration now = clock_.now();
    if (now >= next_check_) {
        next_check_ = now + cfg_.liveness_interval;
        check_peer(now);
    }
    check_pull(now);
    if (has_held_.load(std::memory_order_relaxed)) {
        {
            std::lock_guard slk(send_mu_);  // order: poll_mu_, then send_mu_
            (void)flush_held_locked();
        }
        ring_bell();  // what moved into the peer's queue is news for a sleeping peer too
    }
    if (present_.load(std::memory_order_relaxed)) {
        const unsigned n = drain();
        if (n != 0) {
            std::lock_guard slk(stats_mu_);
            stats_.received += n;
        }
    }
}

// ---- frame-arrived signal ----------------------------------------------------------------------

void ShmCable::ring_bell() noexcept {
    Doorbell& b = map_->bell[1 - side_];
    // The locked add orders our queue writes before the read of `sleepers` (seq_cst on both
    // sides: with want_wakeups, a store-load pair across processes). Either the peer sees the
    // packets when it looks at its queues after announcing itself, or we see it asleep and wake
    // it; the common case (the peer polls) costs no system call.
    at(b.seq).fetch_add(1, std::memory_order_seq_cst);
    if (at(b.sleepers).load(std::memory_order_seq_cst) != 0) {
        futex_wake_all(&b.seq);
        std::lock_guard lk(stats_mu_);
        ++stats_.wakes_sent;
    }
}

void ShmCable::want_wakeups(bool on) noexcept {
    Doorbell& b = map_->bell[side_];
    at(b.sleepers).store(on ? 1u : 0u, std::memory_order_seq_cst);
    if (on) {
        // Pairs with ring_bell: a sender whose add came before our store may have read
        // `sleepers` as 0 and not woken us. This load then reads its add (or a later one) and
        // synchronises with it, so whoever looks at the queues after this returns sees its
        // packets (the driver's re-check after arming an interrupt).
        (void)at(b.seq).load(std::memory_order_seq_cst);
    }
}

std::uint32_t ShmCable::inbound_seq() const noexcept {
    return at(map_->bell[side_].seq).load(std::memory_order_seq_cst);
}

bool ShmCable::inbound_pending() const noexcept {
    const auto waiting = [](auto& q) {
        return at(q.head).load(std::memory_order_acquire) !=
               at(q.tail).load(std::memory_order_relaxed);
    };
    return waiting(map_->ctl[side_]) || waiting(map_->data[side_]);
}

void ShmCable::wait_inbound(std::uint32_t seen, std::chrono::nanoseconds timeout) noexcept {
    {
        std::lock_guard lk(stats_mu_);
        ++stats_.waits;
    }
    futex_wait(&map_->bell[side_].seq, seen, timeout);
}

void ShmCable::wake_local() noexcept {
    std::uint32_t& seq = map_->bell[side_].seq;
    at(seq).fetch_add(1, std::memory_order_seq_cst);
    futex_wake_all(&seq);
}

pid_t ShmCable::peer_pid() const noexcept {
    return static_cast<pid_t>(at(map_->ends[1 - side_].pid).load(std::memory_order_relaxed));
}

ShmCableStats ShmCable::stats() const {
    std::lock_guard lk(stats_mu_);
    return stats_;
}

}  // namespace tbv::emu
