// SPDX-License-Identifier: Apache-2.0
// The provider's objects. Every object libibverbs hands back to us embeds its libibverbs struct as
// the first member (style.md B6), so an ibv_qp* is our Qp* (to_qp below); the verbs core object it
// stands for (src/verbs) is owned by the core's Context, the wrapper only points at it.
//
//   Device   one tbvN in the device list: pabi34::verbs_device first, then how to open it.
//            Devices live as long as the process (one permanent reference), so a list entry
//            never dangles.
//   Instance what an open device is: the emulated host (or, later, the VFIO function) and the
//            verbs core Context on it. One per device and process, shared by every ibv_context
//            opened on it; the last context to close closes it (and frees the cable end).
//   Context  one ibv_context: a ContextShell that libibverbs allocates (the public verbs_context
//            inside it) pointing at a Context of ours, which holds the Instance, the event pipes
//            and the service thread.
//
// Threads. The data path (post_*, poll_cq) runs on the application's threads through the core
// Context, which serialises them with its lock. Each context has one service thread: it forwards
// async events and completion-channel events into the pipes libibverbs reads, and drives progress
// when the application does not (a process that is only the target of RDMA WRITEs, or that spins
// on memory as ib_write_lat does, must still receive frames and send ACKs). It never spins: it
// sleeps in verbs::Context::wait() on the rails' RX interrupt (an MSI-X eventfd; on the emulator
// the shared-memory cable's doorbell wakes the NHI model, which raises it), the channels' fds and
// the next transport timer, with TBV_PROGRESS_US as the longest sleep. While the application
// polls by itself and the interrupts only wake the thread for frames the application already
// took in, it backs off to a timer instead (context.cpp). TBV_PROGRESS=timer restores the fixed
// period of earlier versions (TBV_PROGRESS_US, default 50 µs there).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <infiniband/verbs.h>

#include "api/emu_open.hpp"
#include "pabi34.hpp"
#include "verbs/context.hpp"

namespace tbv::provider {

// ---- devices --------------------------------------------------------------------------------

struct Instance {
    detail::EmuDevice emu;  ///< an emulated host: host, then the context on it (destroyed first)
    /// Or a VFIO-bound NHI: the function, then the context on it (destroyed first).
    std::unique_ptr<hw::Device> vfio;
    std::unique_ptr<verbs::Context> vfio_ctx;
    verbs::Context& core() const noexcept { return vfio_ctx ? *vfio_ctx : *emu.ctx; }
};

struct Device {
    pabi34::verbs_device vdev{};  ///< first: libibverbs casts ibv_device* to it
    std::string spec;             ///< "emu:<cable>[/a|/b]" or "vfio:<PCI address>"
    std::uint64_t guid = 0;       ///< node GUID (host byte order): the router UID
    /// RoCE-style GID mode (TBV_GID_ADDR): the IPv4 address of GID 0 (host byte order), 0: IB.
    std::uint32_t gid_ipv4 = 0;
    std::mutex mu;
    std::weak_ptr<Instance> open;  ///< the running instance, if any context holds it

    /// The running instance, or a new one. errno-style error with a message on stderr.
    std::shared_ptr<Instance> acquire(int& err);
};
static_assert(offsetof(Device, vdev) == 0);

/// Our devices, created on first use: the emulated one (TBV_EMU) and the NHIs bound to vfio-pci
/// (unless TBV_VFIO=0). Never freed.
const std::vector<Device*>& devices();
/// Whether `dev` is one of ours (its verbs_device ops are our table).
bool is_ours(const ibv_device* dev) noexcept;
Device* to_device(ibv_device* dev) noexcept;

// ---- contexts -------------------------------------------------------------------------------

class Context;

/// What libibverbs allocates for us (_verbs_init_and_alloc_context): the public verbs_context,
/// then our pointer. Plain data, calloc'ed and freed by libibverbs' rules.
struct ContextShell {
    verbs_context vctx;
    Context* impl;
};

struct Pd {
    ibv_pd ibv{};
    verbs::Pd* core = nullptr;
};
struct Mr {
    pabi34::verbs_mr vmr{};
    verbs::Mr* core = nullptr;
};
struct Cq {
    pabi34::verbs_cq vcq{};
    verbs::Cq* core = nullptr;
};
struct Srq {
    pabi34::verbs_srq vsrq{};
    verbs::Srq* core = nullptr;
};
struct Qp {
    pabi34::verbs_qp vqp{};  ///< comp_mask and xrcd stay 0 (see pabi34.hpp)
    verbs::Qp* core = nullptr;
    Context* ctx = nullptr;
    ibv_qp_init_attr init{};  ///< as created (caps as granted), for query_qp
};
struct Ah {
    ibv_ah ibv{};
    verbs::Ah* core = nullptr;
};
struct CompChannel {
    ibv_comp_channel ibv{};  ///< fd: the read end of a pipe of 8-byte CQ event records
    verbs::CompChannel* core = nullptr;
    int write_fd = -1;
};
static_assert(offsetof(Pd, ibv) == 0 && offsetof(Mr, vmr) == 0 && offsetof(Cq, vcq) == 0);
static_assert(offsetof(Srq, vsrq) == 0 && offsetof(Qp, vqp) == 0 && offsetof(Ah, ibv) == 0);
static_assert(offsetof(CompChannel, ibv) == 0);

class Context {
public:
    Context(ContextShell* shell, Device* dev, std::shared_ptr<Instance> inst);
    ~Context();  ///< stops the service thread, closes the async pipe's write end
    Context(const Context&) = delete;
    Context& operator=(const Context&) = delete;

    /// Starts the service thread and creates the async-event pipe (context->async_fd).
    int start() noexcept;

    ibv_context* ibv() noexcept { return &shell_->vctx.context; }
    Device& device() noexcept { return *dev_; }
    Instance& instance() noexcept { return *inst_; }
    verbs::Context& core() noexcept { return inst_->core(); }

    /// The application drove progress itself (poll_cq, post_*): the service thread need not.
    /// One clock read (vDSO, no system call) and a relaxed store: the service thread tells an
    /// application in a poll loop from one that spins on memory by how long ago it last called.
    void note_app_progress() noexcept {
        app_last_call_.store(std::chrono::steady_clock::now().time_since_epoch().count(),
                             std::memory_order_relaxed);
    }

    // Objects that async and channel events name, by their core identifiers.
    void add(Qp* qp);
    void remove(Qp* qp);
    void add(Cq* cq);
    void remove(Cq* cq);
    void add(Srq* srq);
    void remove(Srq* srq);
    void add(CompChannel* ch);
    void remove(CompChannel* ch);

    /// Before a QP (nullptr: every QP) goes away: runs progress for a moment while it still owes
    /// the peer something — above all the coalesced ACK of the last message it received, which
    /// an HCA would send whatever the application does next, and without which the peer's last
    /// send ends in a retry error. Bounded (TBV_LINGER_US, default 2000 µs).
    void linger(const verbs::Qp* only) noexcept;

    /// Port state with the first-query wait of TBV_LINK_WAIT_MS (see query_port in ops.cpp).
    bool port_active_waiting();

private:
    void service_loop() noexcept;
    /// After the first link wait: if the process at the other end of the cable started first,
    /// wait (at most TBV_LINK_SETTLE_MS) until it listens on TCP (context.cpp).
    void let_peer_listen(bool came_up_soon);
    void forward_async(const verbs::AsyncEvent& ev) noexcept;

    ContextShell* shell_;
    Device* dev_;
    std::shared_ptr<Instance> inst_;
    int async_write_fd_ = -1;
    /// note_app_progress(): steady_clock ticks (ns) of the application's last verbs call.
    std::atomic<std::chrono::steady_clock::rep> app_last_call_{0};
    std::atomic<bool> stop_{false};
    std::atomic<bool> waited_link_{false};

    std::mutex mu_;  ///< the maps below (control path and the service thread)
    std::unordered_map<std::uint32_t, Qp*> qps_;    ///< by QP number
    std::unordered_map<std::uint32_t, Cq*> cqs_;    ///< by core handle
    std::unordered_map<std::uint32_t, Srq*> srqs_;  ///< by core handle
    /// Held by the service thread while it serves the channels, so destroy waits for it. Taken
    /// before mu_ (never the other way round).
    std::mutex chan_mu_;
    std::vector<CompChannel*> channels_;
    // The service thread's policy (TBV_PROGRESS, TBV_PROGRESS_US; context.cpp) and what it did.
    bool irq_progress_ = true;              ///< sleep on the RX interrupt; false: a fixed period
    std::chrono::microseconds period_{50};  ///< timer mode: the period; irq mode: longest sleep
    std::vector<int> chan_fds_;             ///< service thread only: the channels' fds
    struct ServiceStats {
        std::uint64_t waits[5] = {};    ///< by verbs::WaitOutcome
        std::uint64_t rounds = 0;       ///< progress rounds run for the application
        std::uint64_t useful_irqs = 0;  ///< interrupt wake-ups that found the application away
        std::uint64_t backoffs = 0;     ///< timer sleeps while the application polled by itself
        std::uint64_t probes = 0;       ///< wake-ups that stepped aside to see if it polls
    } sstats_;             ///< service thread only; printed at close with TBV_PROGRESS_STATS=1
    std::thread service_;  ///< last: joined first
};

inline Context& to_ctx(ibv_context* c) noexcept {
    auto* vctx = reinterpret_cast<verbs_context*>(reinterpret_cast<char*>(c) -
                                                  offsetof(verbs_context, context));
    return *reinterpret_cast<ContextShell*>(vctx)->impl;
}
inline Pd* to_pd(ibv_pd* p) noexcept {
    return reinterpret_cast<Pd*>(p);
}
inline Mr* to_mr(pabi34::verbs_mr* m) noexcept {
    return reinterpret_cast<Mr*>(m);
}
inline Cq* to_cq(ibv_cq* c) noexcept {
    return reinterpret_cast<Cq*>(c);
}
inline Srq* to_srq(ibv_srq* s) noexcept {
    return reinterpret_cast<Srq*>(s);
}
inline Qp* to_qp(ibv_qp* q) noexcept {
    return reinterpret_cast<Qp*>(q);
}
inline Ah* to_ah(ibv_ah* a) noexcept {
    return reinterpret_cast<Ah*>(a);
}
inline CompChannel* to_channel(ibv_comp_channel* c) noexcept {
    return reinterpret_cast<CompChannel*>(c);
}

/// The errno value for an error of the core (generic category as is; tbv::Errc mapped).
int to_errno(std::error_code ec) noexcept;

/// The device's ops (alloc_context, uninit_device; device.cpp).
extern const pabi34::verbs_device_ops kDeviceOps;
/// The context ops (ops.cpp, datapath.cpp); what we leave null stays libibverbs' EOPNOTSUPP.
extern const pabi34::verbs_context_ops kContextOps;

// ---- the data path (datapath.cpp) -----------------------------------------------------------

int post_send(ibv_qp* qp, ibv_send_wr* wr, ibv_send_wr** bad) noexcept;
int post_recv(ibv_qp* qp, ibv_recv_wr* wr, ibv_recv_wr** bad) noexcept;
int post_srq_recv(ibv_srq* srq, ibv_recv_wr* wr, ibv_recv_wr** bad) noexcept;
int poll_cq(ibv_cq* cq, int num_entries, ibv_wc* wc) noexcept;

// ---- what tbvdv.cpp and the interposer need ------------------------------------------------

/// GID `index` of `port` (IB style: fe80::/64 + node GUID); EINVAL beyond the table.
int query_gid(Context& ctx, unsigned port, unsigned index, ibv_gid& gid) noexcept;
/// Our single P_Key (default, full membership), index 0 only.
inline constexpr std::uint16_t kDefaultPkey = 0xffff;

}  // namespace tbv::provider
