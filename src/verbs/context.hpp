// SPDX-License-Identifier: Apache-2.0
// Context: one open verbs device on one NHI. It owns the driver stack (Nhi, control ring and
// channel, connection manager), the fabric (rails as ports, loopback), and every verbs object
// (PDs, MRs, CQs, QPs, SRQs), and it is the progress engine.
//
// Threads. The data path runs on the application's threads: post_send, post_recv and poll_cq
// take the context's lock, and poll_cq drives progress (receive on every port, run every QP's
// timers and queues, post what is ready with one doorbell per port) — no helper thread spins.
// The control plane needs a thread of its own, because a peer may plug in or start talking while
// the application is blocked elsewhere (perftest waits in accept()): the CM thread sleeps, wakes
// every `cm_period`, and runs the connection manager under the same lock; it brings rails up and
// down through the fabric, and raises port events. With `cm_thread = false` the owner calls
// poll_cm() itself (deterministic tests).
//
// Sleeping (wait()). A thread with nothing to do — the provider's service thread, a completion
// channel wait — sleeps on the rails' RX interrupt instead of a timer, NAPI style: the rails' RX
// rings are created with their interrupt routed to one MSI-X vector but masked, so the data path
// never takes an interrupt (and the device never writes an eventfd per frame); wait() unmasks
// them, runs a round of progress to close the race (a frame that arrived before the unmask is
// found there, one after it raises the interrupt), sleeps in poll(2) on the vector's eventfd, its
// own wake-up eventfd and the caller's fds until then, the next transport timer or the timeout,
// and masks them again. Only wait() makes system calls; post, poll_cq and progress make none.
//
// Lock order: the context lock is the only lock on these paths. The CQ and the MR refcounts are
// safe to read without it (poll of a CQ never races another poll of the same CQ under the lock).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <vector>

#include "hw/device.hpp"
#include "nhi/control_ring.hpp"
#include "nhi/nhi.hpp"
#include "tbv/result.hpp"
#include "transport/fabric.hpp"
#include "usb4/connection_manager.hpp"
#include "usb4/control_channel.hpp"
#include "verbs/ah.hpp"
#include "verbs/cq.hpp"
#include "verbs/limits.hpp"
#include "verbs/mr.hpp"
#include "verbs/pd.hpp"
#include "verbs/qp.hpp"
#include "verbs/srq.hpp"

namespace tbv::verbs {

struct ContextOptions {
    usb4::CmOptions cm{};
    DeviceLimits limits = kDefaultLimits;
    bool cm_thread = true;
    std::chrono::nanoseconds cm_period = std::chrono::milliseconds(2);
    /// Counters in a shared-memory file for `tbv status` (verbs/stats_shm.hpp); TBV_STATS=0 in
    /// the environment turns it off as well.
    bool publish_stats = true;
    /// MSI-X vector the rails' RX rings interrupt on, for wait() (the NHI is opened with this
    /// many + 1 vectors). nullopt, or a device with too few vectors: wait() sleeps on timers.
    std::optional<unsigned> rx_irq_vector = 1;
    /// Minimum gap between two RX interrupts (REG_INT_THROTTLING_RATE, 256 ns units). The
    /// interrupt is masked whenever nobody sleeps, so this only moderates a sleeper that is woken
    /// again and again while frames stream in; 0 adds no latency.
    std::chrono::nanoseconds rx_irq_throttle{0};
    /// GID 0 of the port, its only GID. A UD datagram sent with a GRH carries it as the SGID; a
    /// received GRH names it as the DGID. All zero: the router UUID, as tbv::Address carries it
    /// (the provider sets fe80::<node GUID>, or ::ffff:a.b.c.d in its GID mode).
    Gid gid{};
    /// The GID is a RoCE v2 GID (IPv4-mapped: the provider's GID mode). A received GRH is then
    /// written as RoCE v2 hardware writes it (qp_unreliable.cpp): an IPv4 header in bytes 20..39.
    bool gid_roce_v2 = false;
};

/// Why Context::wait() returned.
enum class WaitOutcome : std::uint8_t {
    work,       ///< the re-check after arming found something to do: it did not sleep
    interrupt,  ///< a rail's RX interrupt fired (a frame arrived)
    event,      ///< one of the caller's fds became readable, or wake() was called
    timer,      ///< a transport timer (retransmission, ACK delay, reorder, RNR) fell due
    timeout,    ///< the caller's timeout passed
};
const char* to_string(WaitOutcome w) noexcept;

/// Counters of one port (rail or loopback) at a moment (tbv status, tests).
struct PortStats {
    std::uint32_t id = 0;
    std::uint32_t adapter = 0;  ///< lane adapter of the link; 0 for loopback
    std::uint16_t peer_lid = 0;
    std::uint32_t data_credits = 0;  ///< what the peer lets us send now
    transport::PortCounters counters{};
};

/// Counters of one QP at a moment.
struct QpStats {
    std::uint32_t qpn = 0;
    QpType type = QpType::rc;
    QpState state = QpState::reset;
    std::uint16_t dlid = 0;
    std::uint32_t dest_qpn = 0;
    QpCounters counters{};
    transport::Sender::Counters sender{};      ///< RC only
    transport::Receiver::Counters receiver{};  ///< RC only
};

class StatsPublisher;

struct AsyncEvent {
    AsyncEventType type = AsyncEventType::port_active;
    std::uint32_t object = 0;  ///< QP number, CQ/SRQ handle, or port number
};

class Context {
public:
    static Result<std::unique_ptr<Context>> open(hw::Device& dev, ContextOptions opts = {});
    ~Context();
    Context(const Context&) = delete;
    Context& operator=(const Context&) = delete;

    const DeviceLimits& limits() const noexcept { return opts_.limits; }
    std::uint16_t lid() const noexcept { return fabric_->lid(); }
    /// GID 0 of the port (ContextOptions::gid, or the default it describes).
    const Gid& gid() const noexcept { return opts_.gid; }
    hw::usb4::UuidDwords uuid() const noexcept { return cm_->uuid(); }
    /// Port state: active when a peer with rails is connected (loopback always works).
    bool port_active();

    // ---- objects (control path) ----------------------------------------------------------------
    Result<Pd*> alloc_pd();
    Result<void> dealloc_pd(Pd* pd);
    Result<Mr*> reg_mr(Pd& pd, void* addr, std::size_t len, std::uint32_t access);
    Result<void> dereg_mr(Mr* mr);
    Result<CompChannel*> create_comp_channel();
    Result<void> destroy_comp_channel(CompChannel* ch);  ///< EBUSY while a CQ uses it
    Result<Cq*> create_cq(std::uint32_t cqe, CompChannel* ch = nullptr);
    Result<void> req_notify_cq(Cq& cq, bool solicited_only);
    /// ibv_get_cq_event: waits up to `timeout` for an armed CQ of `ch` to fire, driving progress
    /// meanwhile (another thread's progress also wakes it through the channel's fd).
    Result<Cq*> get_cq_event(CompChannel& ch, std::chrono::nanoseconds timeout);
    Result<void> destroy_cq(Cq* cq);
    Result<Srq*> create_srq(Pd& pd, std::uint32_t max_wr, std::uint32_t max_sge,
                            std::uint32_t limit = 0);
    Result<void> modify_srq(Srq& srq, std::uint32_t limit);
    Result<void> destroy_srq(Srq* srq);
    Result<Ah*> create_ah(Pd& pd, const AddressVector& av);
    Result<void> destroy_ah(Ah* ah);
    Result<Qp*> create_qp(const QpInit& init);
    Result<void> modify_qp(Qp& qp, const QpAttr& attr, std::uint32_t mask);
    Result<void> destroy_qp(Qp* qp);

    // ---- data path ------------------------------------------------------------------------------
    Result<void> post_send(Qp& qp, const SendWr& wr, const SendWr** bad = nullptr) noexcept;
    Result<void> post_recv(Qp& qp, const RecvWr& wr, const RecvWr** bad = nullptr) noexcept;
    Result<void> post_srq_recv(Srq& srq, const RecvWr& wr, const RecvWr** bad = nullptr) noexcept;
    /// Drives progress, then takes up to out.size() completions.
    std::uint32_t poll_cq(Cq& cq, std::span<Wc> out) noexcept;
    /// One round of progress (what poll_cq does first).
    void progress() noexcept;
    /// The same; returns whether it did anything (received a frame, moved a QP).
    bool progress_round() noexcept;

    // ---- sleeping (slow path; see the header) ---------------------------------------------------
    /// For a thread that just ran progress and found nothing to do: arms the rails' RX
    /// interrupts, runs a round of progress (returns WaitOutcome::work at once if it did
    /// anything), then sleeps until a frame arrives, one of `fds` becomes readable, wake() is
    /// called, the next transport timer is due, or `timeout` passes. It does not run progress
    /// after waking: the caller does (poll_cq, progress). Several threads may wait at once.
    /// Errors: poll(2) failing (not EINTR, which returns `event`).
    Result<WaitOutcome> wait(std::chrono::nanoseconds timeout, std::span<const int> fds = {});
    /// Ends every wait() in progress (WaitOutcome::event); if none is, the next one returns at
    /// once. Lock-free (callable with the context lock held): a counter and one eventfd write.
    void wake() noexcept;
    /// How many threads are inside wait() now (diagnostics; tests use it to know who sleeps).
    unsigned waiting();
    /// Whether wait() can sleep on an RX interrupt (false: timers and fds only).
    bool has_rx_irq() const noexcept { return irq_fd_ >= 0; }
    /// When the next transport timer of any QP or port falls due (TimePoint::max(): none).
    transport::TimePoint next_deadline();

    // ---- control plane and events ---------------------------------------------------------------
    /// Runs the connection manager once (only needed with cm_thread = false).
    void poll_cm();
    /// Next async event, waiting up to `timeout`; false if none came.
    bool get_async_event(AsyncEvent& ev, std::chrono::nanoseconds timeout);

    /// Copies every port's and QP's counters (control path: allocates, takes the lock briefly).
    void snapshot(std::vector<PortStats>& ports, std::vector<QpStats>& qps);

    /// Counters (tbv status, tests): call with a function taking (const Qp&).
    template <typename F>
    void for_each_qp(F&& f) {
        std::lock_guard g(mu_);
        for (const auto& q : qps_) {
            f(*q);
        }
    }
    template <typename F>
    void for_each_port(F&& f) {
        std::lock_guard g(mu_);
        fabric_->for_each_port(f);
    }
    /// Runs `f` with the connection manager (links, counters) under its lock.
    template <typename F>
    void with_cm(F&& f) {
        std::lock_guard g(cm_mu_);
        f(static_cast<const usb4::ConnectionManager&>(*cm_));
    }

private:
    explicit Context(ContextOptions opts);
    bool progress_locked() noexcept;
    transport::TimePoint next_deadline_locked() noexcept;
    /// wait(): the first sleeper unmasks the rails' RX interrupts, the last one masks them again
    /// and consumes what the eventfds counted meanwhile. mu_ held.
    void arm_locked() noexcept;
    void disarm_locked() noexcept;
    /// A rail came up or went down (on_rails, mu_ held).
    void rail_rings_changed_locked(const usb4::Link& l, bool up) noexcept;
    void push_event(AsyncEventType type, std::uint32_t object) noexcept;
    static void async_thunk(void* self, AsyncEventType type, std::uint32_t object) noexcept;
    void cm_loop();

    ContextOptions opts_;
    std::mutex cm_mu_;
    std::mutex mu_;
    std::unique_ptr<nhi::Nhi> nhi_;
    std::unique_ptr<nhi::ControlRing> ring_;
    std::unique_ptr<usb4::ControlChannel> ch_;
    std::unique_ptr<transport::Fabric> fabric_;
    std::unique_ptr<usb4::ConnectionManager> cm_;
    std::unique_ptr<MrTable> mrs_;
    std::vector<std::unique_ptr<Pd>> pds_;
    std::vector<std::unique_ptr<Cq>> cqs_;
    std::vector<std::unique_ptr<Srq>> srqs_;
    std::vector<std::unique_ptr<Qp>> qps_;
    std::vector<std::unique_ptr<Ah>> ahs_;
    std::vector<std::unique_ptr<CompChannel>> channels_;
    std::uint32_t next_handle_ = 1;
    std::size_t next_qp_ = 0;  ///< first QP of the next progress round (fairness)

    // The wait path (wait()). The fds are owned by the device (irq_fd_) and by us (wake_fd_).
    int irq_fd_ = -1;   ///< MSI-X eventfd of the rails' RX rings; -1: no interrupts
    int wake_fd_ = -1;  ///< wake()
    unsigned irq_vector_ = 0;
    std::uint64_t rail_rx_rings_ = 0;  ///< mu_; bit r: RX ring r belongs to a rail that is up
    unsigned sleepers_ = 0;            ///< mu_; threads between arm_locked and disarm_locked
    // wake() counts; a wait that returns for it records the count it saw. A count above the
    // recorded one is a wake no wait has seen yet: the next wait returns at once. The eventfd
    // only interrupts ppoll; the counter says whether a wake happened, so draining the fd
    // (when the last sleeper leaves) can never lose one.
    std::atomic<std::uint64_t> wake_count_{0};
    std::uint64_t wake_seen_ = 0;  ///< mu_; the wake count the last woken wait returned for

    std::mutex ev_mu_;
    std::condition_variable ev_cv_;
    std::deque<AsyncEvent> events_;

    std::unique_ptr<StatsPublisher> stats_;  ///< written by the CM thread (or poll_cm)
    std::atomic<bool> stop_{false};
    std::thread cm_thread_;
};

}  // namespace tbv::verbs
