// SPDX-License-Identifier: Apache-2.0
// A provider context: the async-event pipe, the service thread and the link wait of query_port.
#include <fcntl.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

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
    return end != nullptr && *end == '\0' && n >= 0 ? n : fallback;
}

/// struct ib_uverbs_async_event_desc: what ibv_get_async_event reads from context->async_fd.
struct AsyncRecord {
    std::uint64_t element;
    std::uint32_t event_type;
    std::uint32_t reserved;
};
static_assert(sizeof(AsyncRecord) == 16);

bool is_qp_event(verbs::AsyncEventType t) {
    using T = verbs::AsyncEventType;
    return t == T::qp_fatal || t == T::qp_req_err || t == T::qp_access_err || t == T::comm_est ||
           t == T::sq_drained || t == T::path_mig || t == T::path_mig_err ||
           t == T::qp_last_wqe_reached;
}

}  // namespace

Context::Context(ContextShell* shell, Device* dev, std::shared_ptr<Instance> inst)
    : shell_(shell), dev_(dev), inst_(std::move(inst)) {
    period_ = std::chrono::microseconds(std::clamp(env_long("TBV_PROGRESS_US", 50), 1L, 100000L));
}

Context::~Context() {
    stop_.store(true, std::memory_order_release);
    if (service_.joinable()) {
        service_.join();
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
    if (c.port_active()) {
        return true;
    }
    // Only the first query of a context waits, and only when asked to (tbv run sets it): the
    // first process of a pair starts before its peer exists, and perftest and the pingpong
    // examples give up at once on a port that is not ACTIVE.
    if (waited_link_.exchange(true)) {
        return false;
    }
    const long wait_ms = env_long("TBV_LINK_WAIT_MS", 0);
    if (wait_ms == 0) {
        return false;
    }
    const auto t0 = Clock::now();
    const auto end = t0 + std::chrono::milliseconds(wait_ms);
    while (Clock::now() < end) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        if (c.port_active()) {
            // A link that came up soon (2 s) after we asked means the peer was there first and is
            // probably waiting to accept our out-of-band connection only once it sees the link
            // too: give it a moment, or our connect() can beat its listen() (perftest and the
            // pingpong examples do not retry).
            if (Clock::now() - t0 < std::chrono::seconds(2)) {
                std::this_thread::sleep_for(
                    std::chrono::milliseconds(env_long("TBV_LINK_SETTLE_MS", 300)));
            }
            return true;
        }
    }
    return false;
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
    while (!stop_.load(std::memory_order_acquire)) {
        verbs::AsyncEvent ev;
        while (c.get_async_event(ev, std::chrono::nanoseconds::zero())) {
            forward_async(ev);
        }
        bool progressed = false;
        std::unique_lock chan_lock(chan_mu_);
        for (CompChannel* ch : channels_) {
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
        // memory): only if it did not poll or post since our last round.
        bool have_qps = false;
        {
            std::lock_guard g(mu_);
            have_qps = !qps_.empty();
        }
        if (have_qps && !app_progress_.exchange(false, std::memory_order_relaxed) && !progressed) {
            c.progress();
        }
        // Without QPs only events can come (port up/down): no need to wake often.
        std::this_thread::sleep_for(have_qps ? period_ : std::chrono::microseconds(5000));
    }
}

}  // namespace tbv::provider
