// SPDX-License-Identifier: Apache-2.0
#include "verbs/context.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <ctime>

#include "verbs/stats_shm.hpp"

namespace tbv::verbs {

namespace {
constexpr std::size_t kMaxQueuedEvents = 1024;  // a peer cannot make us queue without bound

/// Longest wait() sleep on a single poll(2): beyond a day, TimePoint arithmetic is not needed.
constexpr std::chrono::hours kForever{24};
/// A timer that is already due after a round that did nothing cannot be served right now (a
/// control frame waiting for credit): look again this much later instead of spinning.
constexpr std::chrono::microseconds kStuckTimerRetry{10};
/// Descriptors of the caller's fds wait() takes at most.
constexpr std::size_t kMaxWaitFds = 16;

void drain_eventfd(int fd) noexcept {
    std::uint64_t n = 0;
    (void)!::read(fd, &n, sizeof n);  // non-blocking: EAGAIN when nothing was counted
}

/// Whether a send on `qp` goes to this device itself (loopback): nothing raises an interrupt for
/// it, so a sleeping wait() must be woken by hand.
bool to_self(const Qp& qp, const SendWr& wr, std::uint16_t own_lid) noexcept {
    if (qp.type() != QpType::ud) {
        return qp.attr().ah_attr.dlid == own_lid;
    }
    for (const SendWr* w = &wr; w != nullptr; w = w->next) {
        if (w->ah != nullptr && w->ah->peer() != nullptr && w->ah->peer()->loopback) {
            return true;
        }
    }
    return false;
}

template <typename T>
Result<void> erase_owned(std::vector<std::unique_ptr<T>>& v, const T* p) {
    const auto it = std::find_if(v.begin(), v.end(), [&](const auto& u) { return u.get() == p; });
    if (it == v.end()) {
        return fail(std::errc::invalid_argument);
    }
    v.erase(it);
    return ok();
}
}  // namespace

const char* to_string(WaitOutcome w) noexcept {
    switch (w) {
        case WaitOutcome::work: return "work";
        case WaitOutcome::interrupt: return "interrupt";
        case WaitOutcome::event: return "event";
        case WaitOutcome::timer: return "timer";
        case WaitOutcome::timeout: return "timeout";
    }
    return "?";
}

Result<std::unique_ptr<Context>> Context::open(hw::Device& dev, ContextOptions opts) {
    auto c = std::unique_ptr<Context>(new Context(std::move(opts)));
    c->wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (c->wake_fd_ < 0) {
        return fail_errno(errno);
    }
    // Vectors 0..rx_irq_vector, if the device has them; a device that cannot enable them is
    // driven without interrupts (wait() then sleeps on timers).
    const std::optional<unsigned> vec = c->opts_.rx_irq_vector;
    nhi::NhiOptions nopts;
    if (vec && *vec < dev.irq_vector_count() && *vec < hw::nhi::kMaxMsixVectors) {
        nopts.irq_vectors = *vec + 1;
    }
    auto nhi = nhi::Nhi::open(dev, nopts);
    if (!nhi && nopts.irq_vectors != 0) {
        nopts.irq_vectors = 0;
        nhi = nhi::Nhi::open(dev, nopts);
    }
    if (!nhi) {
        return Failure{nhi.error()};
    }
    c->nhi_ = std::move(*nhi);
    if (vec && c->nhi_->irq_vectors() > *vec && dev.irq_eventfd(*vec) >= 0) {
        c->irq_fd_ = dev.irq_eventfd(*vec);
        c->irq_vector_ = *vec;
        // Masked whenever nobody sleeps, so moderation is only for a sleeper woken again and
        // again; Nhi::open gave every vector Linux's 128 µs, far too long for a sleeper's latency.
        const auto ns = std::clamp<std::int64_t>(c->opts_.rx_irq_throttle.count(), 0, 0xffffffff);
        c->nhi_->interrupts().set_throttle(*vec, static_cast<std::uint32_t>(ns));
    }
    auto ring = nhi::ControlRing::create(*c->nhi_);
    if (!ring) {
        return Failure{ring.error()};
    }
    c->ring_ = std::move(*ring);
    auto ch = usb4::ControlChannel::create(*c->ring_);
    if (!ch) {
        return Failure{ch.error()};
    }
    c->ch_ = std::move(*ch);
    usb4::CmOptions cm = c->opts_.cm;
    if (c->irq_fd_ >= 0) {
        cm.rail_rx_irq_vector = c->irq_vector_;  // routed, masked until someone sleeps
    }
    Context* self = c.get();
    cm.on_rails = [self](usb4::Link& l, bool up) {
        std::lock_guard g(self->mu_);  // the CM thread already holds cm_mu_ (order cm → data)
        if (up) {
            if (auto r = self->fabric_->attach(l); !r) {
                if (self->opts_.cm.trace) {
                    self->opts_.cm.trace("transport: cannot use the rails: " + r.error().message());
                }
                return;
            }
            self->rail_rings_changed_locked(l, true);
        } else {
            self->fabric_->detach(l);  // stops the rings: their interrupts are disabled
            self->rail_rings_changed_locked(l, false);
        }
    };
    auto mgr = usb4::ConnectionManager::create(*c->nhi_, *c->ch_, std::move(cm));
    if (!mgr) {
        return Failure{mgr.error()};
    }
    c->cm_ = std::move(*mgr);
    if (c->opts_.gid == Gid{}) {
        // The router UUID, dwords in order, each little-endian (api/address.cpp gid_of).
        const hw::usb4::UuidDwords u = c->cm_->uuid();
        for (std::size_t i = 0; i < u.size(); ++i) {
            for (std::size_t b = 0; b < 4; ++b) {
                c->opts_.gid[4 * i + b] = static_cast<std::uint8_t>(u[i] >> (8 * b));
            }
        }
    }
    c->fabric_ =
        std::make_unique<transport::Fabric>(dev, c->cm_->uuid(), [self](std::uint16_t, bool up) {
            self->push_event(up ? AsyncEventType::port_active : AsyncEventType::port_err, 1);
        });
    auto mrs = MrTable::create(dev, c->opts_.limits);
    if (!mrs) {
        return Failure{mrs.error()};
    }
    c->mrs_ = std::move(*mrs);
    if (c->opts_.publish_stats) {
        c->stats_ = StatsPublisher::start(*c, dev.name());  // null if off or impossible
    }
    if (c->opts_.cm_thread) {
        c->cm_thread_ = std::thread([self] { self->cm_loop(); });
    }
    return c;
}

Context::Context(ContextOptions opts) : opts_(std::move(opts)) {}

Context::~Context() {
    stop_.store(true, std::memory_order_release);
    if (cm_thread_.joinable()) {
        cm_thread_.join();
    }
    stats_.reset();  // removes the counters file
    // QPs before the objects they name; the CM (rails) before the fabric's ports go.
    qps_.clear();
    ahs_.clear();
    srqs_.clear();
    cqs_.clear();
    channels_.clear();
    mrs_.reset();
    pds_.clear();
    cm_.reset();  // detaches the fabric's ports through on_rails (takes mu_)
    fabric_.reset();
    if (wake_fd_ >= 0) {
        ::close(wake_fd_);
    }
}

void Context::cm_loop() {
    while (!stop_.load(std::memory_order_acquire)) {
        {
            std::lock_guard g(cm_mu_);
            cm_->poll();
        }
        if (stats_) {
            stats_->tick(*this);
        }
        std::this_thread::sleep_for(opts_.cm_period);
    }
}

void Context::poll_cm() {
    {
        std::lock_guard g(cm_mu_);
        cm_->poll();
    }
    if (stats_ && !opts_.cm_thread) {  // otherwise the CM thread publishes
        stats_->tick(*this);
    }
}

bool Context::port_active() {
    std::lock_guard g(cm_mu_);
    for (const usb4::Link& l : cm_->links()) {
        if (l.state == usb4::LinkState::up) {
            return true;
        }
    }
    return false;
}

void Context::snapshot(std::vector<PortStats>& ports, std::vector<QpStats>& qps) {
    ports.clear();
    qps.clear();
    std::lock_guard g(mu_);
    fabric_->for_each_port([&](const transport::Port& p, unsigned adapter, std::uint16_t lid) {
        ports.push_back({p.id(), adapter, lid, p.data_credits(), p.counters()});
    });
    for (const auto& q : qps_) {
        QpStats s;
        s.qpn = q->qpn();
        s.type = q->type();
        s.state = q->state();
        s.dlid = q->attr().ah_attr.dlid;
        s.dest_qpn = q->attr().dest_qp_num;
        s.counters = q->counters();
        if (q->sender() != nullptr) {
            s.sender = q->sender()->counters();
        }
        if (q->receiver() != nullptr) {
            s.receiver = q->receiver()->counters();
        }
        qps.push_back(s);
    }
}

// ---- events ------------------------------------------------------------------------------------

void Context::async_thunk(void* self, AsyncEventType type, std::uint32_t object) noexcept {
    static_cast<Context*>(self)->push_event(type, object);
}

void Context::push_event(AsyncEventType type, std::uint32_t object) noexcept {
    {
        std::lock_guard g(ev_mu_);
        if (events_.size() >= kMaxQueuedEvents) {
            return;  // the application is not reading them; drop the newest
        }
        try {
            events_.push_back({type, object});
        } catch (...) {
            return;  // out of memory: an event is lost, nothing else
        }
    }
    ev_cv_.notify_all();
    wake();  // a thread asleep in wait() forwards events too (the provider's service thread)
}

bool Context::get_async_event(AsyncEvent& ev, std::chrono::nanoseconds timeout) {
    std::unique_lock g(ev_mu_);
    if (!ev_cv_.wait_for(g, timeout, [&] { return !events_.empty(); })) {
        return false;
    }
    ev = events_.front();
    events_.pop_front();
    return true;
}

// ---- objects -----------------------------------------------------------------------------------

Result<Pd*> Context::alloc_pd() {
    std::lock_guard g(mu_);
    if (pds_.size() >= opts_.limits.max_pd) {
        return fail(std::errc::not_enough_memory);
    }
    pds_.push_back(std::make_unique<Pd>(next_handle_++));
    return pds_.back().get();
}

Result<void> Context::dealloc_pd(Pd* pd) {
    std::lock_guard g(mu_);
    if (pd == nullptr) {
        return fail(std::errc::invalid_argument);
    }
    if (auto c = pd->check_dealloc(); !c) {
        return c;
    }
    return erase_owned(pds_, pd);
}

Result<Mr*> Context::reg_mr(Pd& pd, void* addr, std::size_t len, std::uint32_t access) {
    std::lock_guard g(mu_);
    return mrs_->reg_mr(pd, addr, len, access);
}

Result<void> Context::dereg_mr(Mr* mr) {
    std::lock_guard g(mu_);
    if (mr == nullptr) {
        return fail(std::errc::invalid_argument);
    }
    // Answers owed to peers do not keep an MR alive (the application cannot know about them);
    // only this host's own pending work requests do (EBUSY).
    for (const auto& q : qps_) {
        q->revoke(mr);
    }
    return mrs_->dereg_mr(*mr);
}

Result<CompChannel*> Context::create_comp_channel() {
    auto ch = CompChannel::create();
    if (!ch) {
        return Failure{ch.error()};
    }
    std::lock_guard g(mu_);
    channels_.push_back(std::move(*ch));
    return channels_.back().get();
}

Result<void> Context::destroy_comp_channel(CompChannel* ch) {
    std::lock_guard g(mu_);
    if (ch != nullptr && ch->users() != 0) {
        return fail(std::errc::device_or_resource_busy);
    }
    return erase_owned(channels_, ch);
}

Result<Cq*> Context::create_cq(std::uint32_t cqe, CompChannel* ch) {
    std::lock_guard g(mu_);
    if (cqs_.size() >= opts_.limits.max_cq) {
        return fail(std::errc::not_enough_memory);
    }
    auto cq = Cq::create(cqe, opts_.limits, next_handle_++, AsyncHandler{&async_thunk, this});
    if (!cq) {
        return Failure{cq.error()};
    }
    if (ch != nullptr) {
        ch->attach();
        (*cq)->set_channel(ch);
    }
    cqs_.push_back(std::move(*cq));
    return cqs_.back().get();
}

Result<void> Context::req_notify_cq(Cq& cq, bool solicited_only) {
    std::lock_guard g(mu_);
    return cq.arm(solicited_only);
}

Result<Cq*> Context::get_cq_event(CompChannel& ch, std::chrono::nanoseconds timeout) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        {
            std::lock_guard g(mu_);
            progress_locked();
            std::uint32_t h = 0;
            if (ch.pop(h)) {
                for (const auto& c : cqs_) {
                    if (c->handle() == h) {
                        return c.get();
                    }
                }
                continue;  // its CQ was destroyed meanwhile
            }
        }
        const auto left = end - std::chrono::steady_clock::now();
        if (left <= std::chrono::nanoseconds::zero()) {
            return fail(std::errc::timed_out);
        }
        // The slow path the application chose by blocking: sleep until a frame arrives (RX
        // interrupt), another thread's progress signals the channel, or a transport timer is
        // due, then drive progress again.
        const std::array<int, 1> fd{ch.fd()};
        if (auto w = wait(left, fd); !w) {
            return Failure{w.error()};
        }
    }
}

Result<void> Context::destroy_cq(Cq* cq) {
    std::lock_guard g(mu_);
    for (const auto& q : qps_) {
        if (q->uses(cq)) {
            return fail(std::errc::device_or_resource_busy);
        }
    }
    CompChannel* ch = cq != nullptr ? cq->channel() : nullptr;
    auto r = erase_owned(cqs_, cq);
    if (r && ch != nullptr) {
        ch->detach();
    }
    return r;
}

Result<Srq*> Context::create_srq(Pd& pd, std::uint32_t max_wr, std::uint32_t max_sge,
                                 std::uint32_t limit) {
    std::lock_guard g(mu_);
    if (srqs_.size() >= opts_.limits.max_srq) {
        return fail(std::errc::not_enough_memory);
    }
    auto s = Srq::create(pd, *mrs_, max_wr, max_sge, limit, opts_.limits, next_handle_++,
                         AsyncHandler{&async_thunk, this});
    if (!s) {
        return Failure{s.error()};
    }
    srqs_.push_back(std::move(*s));
    return srqs_.back().get();
}

Result<void> Context::modify_srq(Srq& srq, std::uint32_t limit) {
    std::lock_guard g(mu_);
    return srq.arm(limit);
}

Result<void> Context::destroy_srq(Srq* srq) {
    std::lock_guard g(mu_);
    if (srq == nullptr) {
        return fail(std::errc::invalid_argument);
    }
    if (srq->users() != 0) {
        return fail(std::errc::device_or_resource_busy);
    }
    return erase_owned(srqs_, srq);
}

Result<Ah*> Context::create_ah(Pd& pd, const AddressVector& av) {
    std::lock_guard g(mu_);
    if (ahs_.size() >= opts_.limits.max_ah) {
        return fail(std::errc::not_enough_memory);
    }
    if (av.dlid == 0 || av.port_num > opts_.limits.phys_port_cnt) {
        return fail(std::errc::invalid_argument);
    }
    ahs_.push_back(std::make_unique<Ah>(pd, av, fabric_->peer(av.dlid)));
    return ahs_.back().get();
}

Result<void> Context::destroy_ah(Ah* ah) {
    std::lock_guard g(mu_);
    return erase_owned(ahs_, ah);
}

Result<Qp*> Context::create_qp(const QpInit& init) {
    std::lock_guard g(mu_);
    if (qps_.size() >= opts_.limits.max_qp) {
        return fail(std::errc::not_enough_memory);
    }
    QpEnv env{fabric_.get(), mrs_.get(),       opts_.limits, AsyncHandler{&async_thunk, this},
              opts_.gid,     opts_.gid_roce_v2};
    auto qp = Qp::create(env, init);
    if (!qp) {
        return Failure{qp.error()};
    }
    if (init.srq != nullptr) {
        init.srq->retain();
    }
    qps_.push_back(std::move(*qp));
    return qps_.back().get();
}

Result<void> Context::modify_qp(Qp& qp, const QpAttr& attr, std::uint32_t mask) {
    std::lock_guard g(mu_);
    return qp.modify(attr, mask);
}

Result<void> Context::destroy_qp(Qp* qp) {
    std::lock_guard g(mu_);
    if (qp == nullptr) {
        return fail(std::errc::invalid_argument);
    }
    Srq* srq = qp->srq();
    auto r = erase_owned(qps_, qp);
    if (r && srq != nullptr) {
        srq->release_user();
    }
    return r;
}

// ---- data path ---------------------------------------------------------------------------------

Result<void> Context::post_send(Qp& qp, const SendWr& wr, const SendWr** bad) noexcept {
    std::lock_guard g(mu_);
    auto r = qp.post_send(wr, bad);
    // Start at once: a latency-bound caller should not wait for its next poll to hit the wire.
    const auto now = transport::Clock::now();
    (void)qp.pump(now);
    fabric_->flush(now);
    if (sleepers_ != 0 && r && to_self(qp, wr, fabric_->lid())) {
        // Loopback frames raise no interrupt: a thread asleep in wait() must run them.
        wake();
    }
    return r;
}

Result<void> Context::post_recv(Qp& qp, const RecvWr& wr, const RecvWr** bad) noexcept {
    std::lock_guard g(mu_);
    return qp.post_recv(wr, bad);
}

Result<void> Context::post_srq_recv(Srq& srq, const RecvWr& wr, const RecvWr** bad) noexcept {
    std::lock_guard g(mu_);
    return srq.post_recv(wr, bad);
}

std::uint32_t Context::poll_cq(Cq& cq, std::span<Wc> out) noexcept {
    std::lock_guard g(mu_);
    progress_locked();
    return cq.poll(out);
}

void Context::progress() noexcept {
    std::lock_guard g(mu_);
    (void)progress_locked();
}

bool Context::progress_round() noexcept {
    std::lock_guard g(mu_);
    return progress_locked();
}

bool Context::progress_locked() noexcept {
    bool did = fabric_->poll() != 0;
    const auto now = transport::Clock::now();
    // Each QP gets a bounded turn (kPumpBudget frames), starting one further each round, so
    // QPs sharing rails share their credits.
    const std::size_t n = qps_.size();
    for (std::size_t k = 0; k < n; ++k) {
        Qp& q = *qps_[(next_qp_ + k) % n];
        if (q.busy()) {
            did |= q.pump(now);
        }
    }
    next_qp_ = n == 0 ? 0 : (next_qp_ + 1) % n;
    fabric_->flush(now);
    return did;
}

// ---- sleeping ----------------------------------------------------------------------------------

void Context::rail_rings_changed_locked(const usb4::Link& l, bool up) noexcept {
    for (const usb4::Rail& r : l.rails) {
        if (r.rx_ring >= 64) {
            continue;
        }
        const std::uint64_t bit = std::uint64_t{1} << r.rx_ring;
        if (!up) {
            rail_rx_rings_ &= ~bit;  // the ring is stopped: its interrupt is already disabled
            continue;
        }
        rail_rx_rings_ |= bit;
        if (irq_fd_ >= 0 && sleepers_ != 0) {
            nhi_->interrupts().unmask(nhi::IrqKind::rx, r.rx_ring);  // someone sleeps on it
        }
    }
}

void Context::arm_locked() noexcept {
    if (sleepers_++ != 0 || irq_fd_ < 0) {
        return;  // already armed by another sleeper, or nothing to arm
    }
    nhi::Interrupts& irq = nhi_->interrupts();
    // Status first: in clear-on-read mode a part raises new messages only once NOTIFY was read
    // (ref §2.4); in W1C mode the bits of every frame since the last sleep are still set.
    if (irq.mode() != nhi::IrqMode::w1c) {
        (void)irq.take_status();
    }
    for (std::uint64_t m = rail_rx_rings_; m != 0; m &= m - 1) {
        const auto ring = static_cast<unsigned>(std::countr_zero(m));
        if (irq.mode() == nhi::IrqMode::w1c) {
            (void)irq.clear(nhi::IrqKind::rx, ring);
        }
        irq.unmask(nhi::IrqKind::rx, ring);
    }
}

void Context::disarm_locked() noexcept {
    if (sleepers_ == 0 || --sleepers_ != 0) {
        return;  // another sleeper still relies on the interrupt and the wake-up fd
    }
    if (irq_fd_ >= 0) {
        nhi::Interrupts& irq = nhi_->interrupts();
        for (std::uint64_t m = rail_rx_rings_; m != 0; m &= m - 1) {
            irq.mask(nhi::IrqKind::rx, static_cast<unsigned>(std::countr_zero(m)));
        }
        // Masked: nothing can count any more. What was counted belongs to this sleep (or to a
        // frame the re-check already handled): the next sleep must not wake for it.
        drain_eventfd(irq_fd_);
    }
    // Nobody is in ppoll now, so no one can miss the write this drains; a wake it swallows
    // is still counted in wake_count_ and ends the next wait.
    drain_eventfd(wake_fd_);
}

transport::TimePoint Context::next_deadline_locked() noexcept {
    transport::TimePoint t = transport::TimePoint::max();
    for (const auto& q : qps_) {
        if (const transport::Sender* s = q->sender()) {
            t = std::min(t, s->next_deadline());
        }
        if (const transport::Receiver* r = q->receiver()) {
            t = std::min(t, r->next_deadline());
        }
    }
    // A parked datagram is dropped after kParkLimit even if nothing else happens.
    fabric_->for_each_port([&](const transport::Port& p, unsigned, std::uint16_t) {
        if (p.holding()) {
            t = std::min(t, p.held_since() + transport::kParkLimit);
        }
        t = std::min(t, p.probe_due());  // a port out of credit asks the peer again
    });
    return t;
}

transport::TimePoint Context::next_deadline() {
    std::lock_guard g(mu_);
    return next_deadline_locked();
}

void Context::wake() noexcept {
    // Count first, then ring: a waiter that sees the eventfd also sees the count.
    wake_count_.fetch_add(1, std::memory_order_release);
    const std::uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
}

unsigned Context::waiting() {
    std::lock_guard g(mu_);
    return sleepers_;
}

Result<WaitOutcome> Context::wait(std::chrono::nanoseconds timeout, std::span<const int> fds) {
    if (fds.size() > kMaxWaitFds) {
        return fail(std::errc::invalid_argument);
    }
    const auto start = transport::Clock::now();
    transport::TimePoint due;
    std::uint64_t woken_at = 0;  // the wake count this wait sleeps on
    {
        std::lock_guard g(mu_);
        if (sleepers_ == 0) {
            // Nobody is in ppoll: a write left by a wake() that the count already accounts for
            // (one taken below without sleeping) must not end this sleep at once.
            drain_eventfd(wake_fd_);
        }
        woken_at = wake_count_.load(std::memory_order_acquire);
        if (woken_at != wake_seen_) {
            wake_seen_ = woken_at;  // a wake() no wait has returned for yet: this one does
            return WaitOutcome::event;
        }
        arm_locked();
        // The re-check: a frame that came before the interrupt was unmasked raised none, but
        // it is in a ring now (or still in the device, which this round's poll takes in).
        if (progress_locked()) {
            disarm_locked();
            return WaitOutcome::work;
        }
        due = next_deadline_locked();
    }
    const transport::TimePoint limit =
        timeout >= kForever ? start + kForever : start + std::max(timeout, decltype(timeout){0});
    const auto now = transport::Clock::now();
    if (due <= now) {
        due = now + kStuckTimerRetry;
    }
    const bool timer_first = due < limit;
    const auto left = std::max(std::min(due, limit) - now, transport::Clock::duration::zero());

    std::array<pollfd, kMaxWaitFds + 2> pf{};
    nfds_t n = 0;
    const bool irq = irq_fd_ >= 0;
    if (irq) {
        pf[n++] = {irq_fd_, POLLIN, 0};
    }
    pf[n++] = {wake_fd_, POLLIN, 0};
    for (const int fd : fds) {
        pf[n++] = {fd, POLLIN, 0};
    }
    const auto secs = std::chrono::duration_cast<std::chrono::seconds>(left);
    timespec ts{};
    ts.tv_sec = static_cast<time_t>(secs.count());
    ts.tv_nsec = static_cast<long>(std::chrono::nanoseconds(left - secs).count());
    const int rc = ::ppoll(pf.data(), n, &ts, nullptr);
    const int err = errno;
    bool woken = false;
    {
        std::lock_guard g(mu_);
        const std::uint64_t now_count = wake_count_.load(std::memory_order_acquire);
        if (now_count != woken_at) {
            // wake() was called while this wait was in progress: it ends here, whatever else
            // woke it. Every wait in progress sees the same, so one wake() ends them all.
            woken = true;
            wake_seen_ = std::max(wake_seen_, now_count);
        }
        disarm_locked();
    }
    if (woken) {
        return WaitOutcome::event;
    }
    if (rc < 0 && err != EINTR) {
        return fail_errno(err);
    }
    if (rc <= 0) {
        return rc < 0        ? WaitOutcome::event
               : timer_first ? WaitOutcome::timer
                             : WaitOutcome::timeout;
    }
    return irq && pf[0].revents != 0 ? WaitOutcome::interrupt : WaitOutcome::event;
}

}  // namespace tbv::verbs
