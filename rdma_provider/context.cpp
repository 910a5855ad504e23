// SPDX-License-Identifier: Apache-2.0
// A provider context: the async-event pipe, the service thread and the link wait of query_port.
//
// The service thread (TBV_PROGRESS=irq, the default) loops: forward async and channel events;
// if the application did not drive progress since the last look, run rounds of progress until
// one finds nothing to do; then verbs::Context::wait() — arm the rails' RX interrupts, re-check,
// sleep on the interrupt, the channels' fds and the next transport timer (TBV_PROGRESS_US, by
// default 10 ms, is only the longest sleep). A process that spins on memory (ib_write_lat) or is
// only an RDMA target is woken by the frame itself instead of finding it at the next timer tick.
// A process that polls its CQs takes its frames in itself, and there every interrupt costs it:
// its own poll raises the interrupt as it takes a frame in (an eventfd write), the sender pays a
// FUTEX_WAKE, and the emulated NHI's helper and this thread preempt spinning application threads
// on a machine with as few cores as perftest has processes. An interrupt that finds the
// application in a poll loop (its last call less than kPollingGap ago) is left to it, and one
// after which our round of progress finds nothing was useless too; after kUselessWakeups useless
// ones in a row the thread stops arming and checks back on a timer (kBackoffMin doubling to
// kBackoffMax). It arms again as soon as the application made no call during such a sleep, or
// left work that a round finds. ib_write_lat alternates between polling its send CQ (the peer's
// WRITE, if it comes then, is taken in by the application) and spinning on memory (the wake-up
// is useful), so it rarely backs off, and not for long. One misjudgement remains: when this
// thread and the emulator's helper preempt the application on its own core, a polling
// application looks quiet and its frame still waiting, so the wake-up looks useful and keeps
// happening. Every kProbeEvery-th useful-looking wake-up therefore steps aside for kProbeDelay
// first: if the application calls and takes the frame in meanwhile, it is polling after all and
// the thread backs off at once; if not (it spins on memory), the round goes ahead kProbeDelay
// late. A frame left behind by any misjudgement is not lost: the next wait's re-check takes it
// in.
// TBV_PROGRESS=timer: the fixed period of earlier versions (TBV_PROGRESS_US, default 50 µs).
//
// The link wait (TBV_LINK_WAIT_MS, set by `tbv run`): the first process of a pair starts before
// its peer, and perftest and the pingpong examples give up on a port that is not ACTIVE, so the
// first ibv_query_port of a context waits for the link. When it comes up, both processes go on
// to their out-of-band TCP exchange at the same moment, and a client that connects before the
// server listens fails ("Couldn't connect"; they do not retry). The provider knows the process
// at the other end of an emulated cable: the one that started later waits until the other has a
// listening TCP socket (/proc/<peer>/net/tcp{,6} and /proc/<peer>/fd), at most
// TBV_LINK_SETTLE_MS (default 3000). A pair that does not use TCP costs the later one that long
// once. Where the peer cannot be seen (a VFIO device: it is another machine), the later process
// is guessed as the one whose link came up within 2 s, and it waits a fixed 300 ms.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "provider.hpp"

namespace tbv::provider {

namespace {

using Clock = std::chrono::steady_clock;

long env_long(const char* name, long fallback) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') {
        return fallback;
    }
    char* end = nullptr;
    const long n = std::strtol(v, &end, 10);
    // At most 10^9 (11 days in ms, 16 min in us): a deadline now + n never overflows the clock.
    constexpr long kMax = 1'000'000'000L;
    return end != nullptr && *end == '\0' && n >= 0 ? std::min(n, kMax) : fallback;
}

/// struct ib_uverbs_async_event_desc: what ibv_get_async_event reads from context->async_fd.
struct AsyncRecord {
    std::uint64_t element;
    std::uint32_t event_type;
    std::uint32_t reserved;
};
static_assert(sizeof(AsyncRecord) == 16);

/// Interrupt wake-ups in a row that found nothing the application had not already done, before
/// the service thread stops arming interrupts and checks back on a timer.
constexpr unsigned kUselessWakeups = 8;
constexpr std::chrono::microseconds kBackoffMin{100};
constexpr std::chrono::microseconds kBackoffMax{1000};
/// An application in a poll loop calls again within this (a call is well under 1 µs of work;
/// this leaves room for it being preempted by our own threads meanwhile).
constexpr std::chrono::microseconds kPollingGap{10};
constexpr unsigned kProbeEvery = 16;
constexpr std::chrono::microseconds kProbeDelay{5};

/// Start time of process `pid` in clock ticks after boot (/proc/<pid>/stat, field 22).
std::optional<unsigned long long> start_time(pid_t pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(f, line)) {
        return std::nullopt;
    }
    const auto rp = line.rfind(')');  // the command name may hold spaces and parentheses
    if (rp == std::string::npos || rp + 2 > line.size()) {
        return std::nullopt;
    }
    std::istringstream ss(line.substr(rp + 2));
    std::string tok;
    for (int field = 3; field <= 22; ++field) {
        if (!(ss >> tok)) {
            return std::nullopt;
        }
    }
    char* end = nullptr;
    const unsigned long long v = std::strtoull(tok.c_str(), &end, 10);
    return end != nullptr && *end == '\0' ? std::optional(v) : std::nullopt;
}

/// Whether process `pid` holds a TCP socket in LISTEN state; nullopt when /proc does not tell us
/// (another user's process, no procfs).
std::optional<bool> listening(pid_t pid) {
    const std::string dir = "/proc/" + std::to_string(pid);
    std::vector<unsigned long> inodes;
    bool readable = false;
    for (const char* table : {"/net/tcp", "/net/tcp6"}) {
        std::ifstream f(dir + table);
        std::string line;
        if (!std::getline(f, line)) {
            continue;  // the header; IPv6 may be absent
        }
        readable = true;
        while (std::getline(f, line)) {
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            std::istringstream ss(line);
            std::string tok[10];
            bool ok = true;
            for (auto& t : tok) {
                ok = ok && static_cast<bool>(ss >> t);
            }
            if (ok && tok[3] == "0A") {  // TCP_LISTEN
                inodes.push_back(std::strtoul(tok[9].c_str(), nullptr, 10));
            }
        }
    }
    if (!readable) {
        return std::nullopt;
    }
    if (inodes.empty()) {
        return false;
    }
    DIR* d = ::opendir((dir + "/fd").c_str());
    if (d == nullptr) {
        return std::nullopt;
    }
    bool found = false;
    while (const dirent* e = ::readdir(d)) {
        char target[64];
        const std::string link = dir + "/fd/" + e->d_name;
        const ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
        unsigned long ino = 0;
        if (n > 0 && (target[n] = '\0', std::sscanf(target, "socket:[%lu]", &ino) == 1) &&
            std::find(inodes.begin(), inodes.end(), ino) != inodes.end()) {
            found = true;
            break;
        }
    }
    ::closedir(d);
    return found;
}

bool is_qp_event(verbs::AsyncEventType t) {
    using T = verbs::AsyncEventType;
    return t == T::qp_fatal || t == T::qp_req_err || t == T::qp_access_err || t == T::comm_est ||
           t == T::sq_drained || t == T::path_mig || t == T::path_mig_err ||
           t == T::qp_last_wqe_reached;
}

}  // namespace

Context::Context(ContextShell* shell, Device* dev, std::shared_ptr<Instance> inst)
    : shell_(shell), dev_(dev), inst_(std::move(inst)) {
    const char* mode = std::getenv("TBV_PROGRESS");
    irq_progress_ = mode == nullptr || std::strcmp(mode, "timer") != 0;
    const long fallback = irq_progress_ ? 10000 : 50;
    period_ = std::chrono::microseconds(
        std::clamp(env_long("TBV_PROGRESS_US", fallback), 1L, irq_progress_ ? 1000000L : 100000L));
}

Context::~Context() {
    stop_.store(true, std::memory_order_release);
    core().wake();  // the service thread may be asleep in wait()
    if (service_.joinable()) {
        service_.join();
    }
    if (const char* s = std::getenv("TBV_PROGRESS_STATS"); s != nullptr && *s == '1') {
        const ServiceStats& st = sstats_;
        std::fprintf(stderr,
                     "tbverbs: service thread (%s): waits work=%llu interrupt=%llu event=%llu "
                     "timer=%llu timeout=%llu, rounds=%llu, useful interrupts=%llu, "
                     "backoffs=%llu, probes=%llu\n",
                     irq_progress_ ? "irq" : "timer", static_cast<unsigned long long>(st.waits[0]),
                     static_cast<unsigned long long>(st.waits[1]),
                     static_cast<unsigned long long>(st.waits[2]),
                     static_cast<unsigned long long>(st.waits[3]),
                     static_cast<unsigned long long>(st.waits[4]),
                     static_cast<unsigned long long>(st.rounds),
                     static_cast<unsigned long long>(st.useful_irqs),
                     static_cast<unsigned long long>(st.backoffs),
                     static_cast<unsigned long long>(st.probes));
    }
    if (async_write_fd_ >= 0) {
        ::close(async_write_fd_);
    }
    // The read end is context->async_fd: verbs_uninit_context closes it.
}

int Context::start() noexcept {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
        return errno;
    }
    // A full pipe (an application that never reads async events) drops events, never blocks us.
    (void)::fcntl(fds[1], F_SETFL, O_NONBLOCK);
    ibv()->async_fd = fds[0];
    async_write_fd_ = fds[1];
    try {
        chan_fds_.reserve(16);
        service_ = std::thread([this] { service_loop(); });
    } catch (...) {
        return EAGAIN;
    }
    return 0;
}

void Context::add(Qp* qp) {
    std::lock_guard g(mu_);
    qps_[qp->core->qpn()] = qp;
}
void Context::remove(Qp* qp) {
    std::lock_guard g(mu_);
    qps_.erase(qp->vqp.qp.qp_num);
}
void Context::add(Cq* cq) {
    std::lock_guard g(mu_);
    cqs_[cq->core->handle()] = cq;
}
void Context::remove(Cq* cq) {
    std::lock_guard g(mu_);
    for (auto it = cqs_.begin(); it != cqs_.end(); ++it) {
        if (it->second == cq) {
            cqs_.erase(it);
            break;
        }
    }
}
void Context::add(Srq* srq) {
    std::lock_guard g(mu_);
    srqs_[srq->core->handle()] = srq;
}
void Context::remove(Srq* srq) {
    std::lock_guard g(mu_);
    for (auto it = srqs_.begin(); it != srqs_.end(); ++it) {
        if (it->second == srq) {
            srqs_.erase(it);
            break;
        }
    }
}
void Context::add(CompChannel* ch) {
    std::lock_guard g(chan_mu_);
    channels_.push_back(ch);
}
void Context::remove(CompChannel* ch) {
    std::lock_guard g(chan_mu_);
    std::erase(channels_, ch);
}

bool Context::port_active_waiting() {
    verbs::Context& c = core();
    // Only the first query of a context waits, and only when asked to (tbv run sets it): the
    // first process of a pair starts before its peer exists, and perftest and the pingpong
    // examples give up at once on a port that is not ACTIVE.
    const bool first = !waited_link_.exchange(true);
    const long wait_ms = first ? env_long("TBV_LINK_WAIT_MS", 0) : 0;
    const auto t0 = Clock::now();
    if (c.port_active()) {
        if (wait_ms != 0) {
            let_peer_listen(false);
        }
        return true;
    }
    if (wait_ms == 0) {
        return false;
    }
    const auto end = t0 + std::chrono::milliseconds(wait_ms);
    while (Clock::now() < end) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        if (c.port_active()) {
            let_peer_listen(Clock::now() - t0 < std::chrono::seconds(2));
            return true;
        }
    }
    return false;
}

void Context::let_peer_listen(bool came_up_soon) {
    const long max_ms = env_long("TBV_LINK_SETTLE_MS", 3000);
    if (max_ms == 0) {
        return;
    }
    pid_t peer = 0;
    if (inst_->emu.host) {
        if (const emu::ShmCable* cable = inst_->emu.host->shm_cable(0)) {
            peer = cable->peer_pid();
        }
    }
    const pid_t me = ::getpid();
    const auto mine = start_time(me);
    const auto theirs = peer > 0 ? start_time(peer) : std::nullopt;
    const auto guess = [&] {
        // The peer cannot be seen: the process whose link came up soon after it asked is most
        // likely the second; give the first a moment to reach listen().
        if (came_up_soon) {
            std::this_thread::sleep_for(std::chrono::milliseconds(std::min(max_ms, 300L)));
        }
    };
    if (!mine || !theirs) {
        guess();
        return;
    }
    if (*mine < *theirs || (*mine == *theirs && me < peer)) {
        return;  // we came first: the peer waits for us, not the other way round
    }
    const auto end = Clock::now() + std::chrono::milliseconds(max_ms);
    while (Clock::now() < end) {
        const auto l = listening(peer);
        if (!l) {
            guess();
            return;
        }
        if (*l || (::kill(peer, 0) != 0 && errno == ESRCH)) {
            return;  // it listens (or it is gone: nothing to wait for; EPERM: another user's)
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
}

void Context::linger(const verbs::Qp* only) noexcept {
    verbs::Context& c = core();
    const auto end = Clock::now() + std::chrono::microseconds(env_long("TBV_LINGER_US", 2000));
    for (;;) {
        bool busy = false;
        c.for_each_qp([&](const verbs::Qp& q) {
            if ((only == nullptr || &q == only) && q.busy()) {
                busy = true;
            }
        });
        if (!busy || Clock::now() >= end) {
            return;
        }
        c.progress();
        std::this_thread::yield();
    }
}

void Context::forward_async(const verbs::AsyncEvent& ev) noexcept {
    AsyncRecord rec{0, static_cast<std::uint32_t>(ev.type), 0};
    using T = verbs::AsyncEventType;
    {
        std::lock_guard g(mu_);
        if (is_qp_event(ev.type)) {
            const auto it = qps_.find(ev.object);
            if (it == qps_.end()) {
                return;  // destroyed meanwhile
            }
            rec.element = reinterpret_cast<std::uintptr_t>(&it->second->vqp.qp);
        } else if (ev.type == T::cq_err) {
            const auto it = cqs_.find(ev.object);
            if (it == cqs_.end()) {
                return;
            }
            rec.element = reinterpret_cast<std::uintptr_t>(&it->second->vcq.cq);
        } else if (ev.type == T::srq_err || ev.type == T::srq_limit_reached) {
            const auto it = srqs_.find(ev.object);
            if (it == srqs_.end()) {
                return;
            }
            rec.element = reinterpret_cast<std::uintptr_t>(&it->second->vsrq.srq);
        } else {
            rec.element = ev.object;  // port number (device events: ignored by libibverbs)
        }
    }
    (void)!::write(async_write_fd_, &rec, sizeof rec);
}

void Context::service_loop() noexcept {
    // Our sleeps are short and their timing matters (a peer waits for our ACK or READ answer):
    // the default 50 µs timer slack would dominate them.
    (void)::prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);
    verbs::Context& c = core();
    unsigned useless = 0;  // interrupt wake-ups in a row the application had made pointless
    unsigned useful = 0;   // useful-looking ones since the last probe
    std::chrono::microseconds backoff = kBackoffMin;
    using SteadyClock = std::chrono::steady_clock;
    const auto ticks = [] { return SteadyClock::now().time_since_epoch().count(); };
    const auto since_call = [&] {
        return SteadyClock::duration(ticks() - app_last_call_.load(std::memory_order_relaxed));
    };
    SteadyClock::rep looked = ticks();
    while (!stop_.load(std::memory_order_acquire)) {
        verbs::AsyncEvent ev;
        while (c.get_async_event(ev, std::chrono::nanoseconds::zero())) {
            forward_async(ev);
        }
        bool progressed = false;
        std::unique_lock chan_lock(chan_mu_);
        chan_fds_.clear();
        for (CompChannel* ch : channels_) {
            if (chan_fds_.size() < chan_fds_.capacity()) {
                chan_fds_.push_back(ch->core->fd());  // reserved in start(): no allocation
            }
            // get_cq_event runs a round of progress, then takes one pending CQ event.
            for (;;) {
                auto cq = c.get_cq_event(*ch->core, std::chrono::nanoseconds::zero());
                progressed = true;
                if (!cq) {
                    break;
                }
                Cq* ours = nullptr;
                {
                    std::lock_guard g(mu_);
                    const auto it = cqs_.find((*cq)->handle());
                    ours = it != cqs_.end() ? it->second : nullptr;
                }
                if (ours != nullptr) {
                    // struct ib_uverbs_comp_event_desc: the CQ's user handle, our ibv_cq*.
                    const std::uint64_t rec = reinterpret_cast<std::uintptr_t>(&ours->vcq.cq);
                    (void)!::write(ch->write_fd, &rec, sizeof rec);
                }
            }
        }
        chan_lock.unlock();
        // Progress for an application that is not driving it (blocked elsewhere, or spinning on
        // memory): only if it did not poll or post since our last look.
        bool have_qps = false;
        {
            std::lock_guard g(mu_);
            have_qps = !qps_.empty();
        }
        const bool app = app_last_call_.load(std::memory_order_relaxed) >= looked;
        looked = ticks();
        if (!irq_progress_) {
            if (have_qps && !app && !progressed) {
                c.progress();
            }
            // Without QPs only events can come (port up/down): no need to wake often.
            std::this_thread::sleep_for(have_qps ? period_ : std::chrono::microseconds(5000));
            continue;
        }
        if (useless >= kUselessWakeups) {
            // The application polls by itself: no interrupts for a while (see the top of the
            // file). Back to them once it stops polling or leaves work behind.
            ++sstats_.backoffs;
            std::this_thread::sleep_for(backoff);
            const bool still = since_call() < backoff;  // it called during our sleep
            looked = ticks();
            if (still && !c.progress_round()) {
                backoff = std::min(backoff * 2, kBackoffMax);
                continue;
            }
            useless = 0;
            backoff = kBackoffMin;
        }
        if (have_qps && !app && !progressed) {
            while (c.progress_round() && !stop_.load(std::memory_order_relaxed)) {
                ++sstats_.rounds;  // until a round finds nothing: then it is safe to sleep
            }
        }
        const auto w = c.wait(period_, chan_fds_);
        if (!w) {
            std::this_thread::sleep_for(period_);  // poll(2) failed: do not spin on it
            continue;
        }
        ++sstats_.waits[static_cast<unsigned>(*w)];
        if (*w == verbs::WaitOutcome::interrupt) {
            // Useful if the application is not polling and the frame was still waiting for us.
            // (When its own poll raised the interrupt, it holds the core's lock until it has
            // taken the frame in, so our round then finds nothing.)
            bool quiet = since_call() >= kPollingGap;
            if (quiet && ++useful % kProbeEvery == 0) {
                ++sstats_.probes;
                std::this_thread::sleep_for(kProbeDelay);  // step aside (see the top)
                quiet = since_call() >= kProbeDelay;
                if (!quiet) {
                    useless = kUselessWakeups;  // it polls: back off now
                }
            }
            if (quiet && c.progress_round()) {
                useless = 0;
                ++sstats_.useful_irqs;
            } else if (useless < kUselessWakeups) {
                ++useless;
            }
        }
    }
}

}  // namespace tbv::provider
