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
#include <cstring>

namespace tbv::emu {

namespace {

/// "tbvcabl" + layout version 1: a file with another layout is refused, not misread.
constexpr std::uint64_t kMagic = 0x7462'7663'6162'6c01ULL;
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
    std::uint8_t kind, lane, sof, eof;
    std::uint8_t crc_error, st_reset, st_lanes, st_bond;
};
static_assert(sizeof(SlotHeader) == 16);

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

pid_t self_pid() noexcept {
    return ::getpid();
}

}  // namespace

struct ShmCable::Layout {
    std::uint64_t magic;
    EndInfo ends[2];
    Queue<kCtlPayload, kCtlSlots> ctl[2];  ///< ctl[i]: towards end i
    Queue<kDataPayload, kDataSlots> data[2];
};

namespace {

template <typename Q>
void discard(Q& q) noexcept {
    at(q.tail).store(at(q.head).load(std::memory_order_acquire), std::memory_order_release);
}

template <typename Q>
bool push(Q& q, const WirePacket& p) noexcept {
    const std::uint64_t head = at(q.head).load(std::memory_order_relaxed);
    const std::uint64_t tail = at(q.tail).load(std::memory_order_acquire);
    if (head - tail >= Q::kSlots) {
        return false;
    }
    auto& s = q.slots[head % Q::kSlots];
    s.h.len = static_cast<std::uint32_t>(p.data.size());
    s.h.hop = p.hop;
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

/// Hands up to `budget` packets to `deliver`; the slot is released after each call.
template <typename Q, typename F>
unsigned pop(Q& q, unsigned budget, F&& deliver) noexcept {
    std::uint64_t tail = at(q.tail).load(std::memory_order_relaxed);
    const std::uint64_t head = at(q.head).load(std::memory_order_acquire);
    unsigned n = 0;
    while (tail != head && n < budget) {
        const auto& s = q.slots[tail % Q::kSlots];
        WirePacket p;
        const std::size_t len = std::min<std::size_t>(s.h.len, Q::kPayload);  // never trusted
        p.kind = static_cast<WireKind>(s.h.kind);
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
        if (p.kind == WireKind::control || p.kind == WireKind::data || p.kind == WireKind::status) {
            deliver(p);
        }
        ++tail;
        ++n;
        at(q.tail).store(tail, std::memory_order_release);
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
      side_(side) {}

ShmCable::~ShmCable() {
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
    std::lock_guard lk(send_mu_);
    faults_.configure(f);
}

void ShmCable::send(const WirePacket& p) noexcept {
    const unsigned to = 1 - side_;
    bool ok = false;
    bool oversize = false;
    FaultInjector::Verdict v;
    {
        std::lock_guard lk(send_mu_);
        v = faults_.decide(p.kind);
        if (!v.drop) {
            std::array<std::byte, hw::nhi::kMaxFrameSize> bad;
            const WirePacket q = v.corrupt ? FaultInjector::corrupted(p, bad) : p;
            const unsigned copies = v.dup ? 2 : 1;
            if (q.kind == WireKind::data) {
                oversize = q.data.size() > kDataPayload;
                for (unsigned i = 0; i < copies && !oversize; ++i) {
                    ok = push(map_->data[to], q) || (ok && i > 0);
                }
            } else {
                oversize = q.data.size() > kCtlPayload;
                for (unsigned i = 0; i < copies && !oversize; ++i) {
                    ok = push(map_->ctl[to], q) || (ok && i > 0);
                }
            }
        }
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

void ShmCable::check_peer(Clock::Duration now) noexcept {
    const EndInfo& peer = map_->ends[1 - side_];
    const auto pid = static_cast<pid_t>(at(const_cast<std::int32_t&>(peer.pid)).load());
    const std::uint32_t gen = at(const_cast<std::uint32_t&>(peer.generation)).load();
    const std::uint64_t hb = at(const_cast<std::uint64_t&>(peer.heartbeat)).load();
    const bool was = present_.load(std::memory_order_relaxed);
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
        present_.store(false, std::memory_order_release);
        discard_incoming();
        {
            std::lock_guard lk(stats_mu_);
            ++stats_.peer_losses;
        }
        notify();
    } else if (was == alive) {
        return;
    }
    if (!alive) {
        discard_incoming();
    }
    peer_gen_ = gen;
    present_.store(alive, std::memory_order_release);
    {
        std::lock_guard lk(stats_mu_);
        ++(alive ? stats_.peer_arrivals : stats_.peer_losses);
    }
    notify();
}

unsigned ShmCable::drain() noexcept {
    CableSink* const sink = sink_.load(std::memory_order_acquire);
    if (sink == nullptr) {
        return 0;
    }
    const unsigned port = port_.load(std::memory_order_relaxed);
    const auto deliver = [&](const WirePacket& p) { sink->cable_receive(port, p); };
    unsigned n = pop(map_->ctl[side_], kDrainBudget, deliver);
    n += pop(map_->data[side_], kDrainBudget, deliver);
    return n;
}

void ShmCable::poll() noexcept {
    std::unique_lock lk(poll_mu_, std::try_to_lock);
    if (!lk.owns_lock()) {
        return;  // another thread of this process is polling the cable
    }
    at(map_->ends[side_].heartbeat).fetch_add(1, std::memory_order_relaxed);
    const Clock::Duration now = clock_.now();
    if (now >= next_check_) {
        next_check_ = now + cfg_.liveness_interval;
        check_peer(now);
    }
    if (present_.load(std::memory_order_relaxed)) {
        const unsigned n = drain();
        if (n != 0) {
            std::lock_guard slk(stats_mu_);
            stats_.received += n;
        }
    }
}

ShmCableStats ShmCable::stats() const {
    std::lock_guard lk(stats_mu_);
    return stats_;
}

}  // namespace tbv::emu
