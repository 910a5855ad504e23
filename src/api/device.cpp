// SPDX-License-Identifier: Apache-2.0
// The embedding API (include/tbv/tbv.hpp) over the verbs core: Device::open picks the layer-0
// device (an emulated host on a shared-memory cable, or a VFIO function), opens a verbs Context on
// it and one PD; Mr, Cq and Qp are thin handles on the context's objects.
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <random>
#include <thread>

#include "api/detail.hpp"
#include "api/emu_open.hpp"
#include "tbv/tbv.hpp"
#include "vfio/error.hpp"

namespace tbv {

namespace {

using Clock = std::chrono::steady_clock;
using detail::DeviceImpl;

/// How long ~Mr keeps the device running for the memory to be released (include/tbv/tbv.hpp).
constexpr auto kDeregPatience = std::chrono::seconds(2);

/// The detail of the last failure of Device::open on this thread, for describe().
struct LastError {
    std::error_code code;
    std::string detail;
};
thread_local LastError t_last;

Failure fail_with(std::error_code code, std::string detail) {
    t_last = {code, std::move(detail)};
    return {code};
}

/// "DDDD:BB:DD.F" (hex digits), the form sysfs and vfio-pci use.
bool is_pci_address(std::string_view s) {
    constexpr std::string_view kShape = "hhhh:hh:hh.h";
    if (s.size() != kShape.size()) {
        return false;
    }
    for (std::size_t i = 0; i < s.size(); ++i) {
        const bool hex = std::isxdigit(static_cast<unsigned char>(s[i])) != 0;
        if (kShape[i] == 'h' ? !hex : s[i] != kShape[i]) {
            return false;
        }
    }
    return true;
}

Result<void> open_context(DeviceImpl& d, hw::Device& dev) {
    verbs::ContextOptions o;
    o.cm.host.device_name = detail::emu_host_name();
    auto ctx = verbs::Context::open(dev, std::move(o));
    if (!ctx) {
        return fail_with(ctx.error(), "cannot bring up the USB4 stack on " + d.name);
    }
    d.ctx = std::move(*ctx);
    auto pd = d.ctx->alloc_pd();
    if (!pd) {
        return Failure{pd.error()};
    }
    d.pd = *pd;
    return ok();
}

/// "emu:<cable>[/a|/b]": an emulated host of its own, port 0 plugged into the cable.
Result<void> open_emu(DeviceImpl& d, std::string_view spec) {
    std::string why;
    auto cable = detail::parse_emu_spec(spec, why);
    if (!cable) {
        return fail_with(cable.error(), why);
    }
    auto e = detail::open_emu_device(*cable, "emu-" + std::to_string(::getpid()),
                                     detail::random_emu_uid(), {}, why);
    if (!e) {
        return fail_with(e.error(), why);
    }
    d.host = std::move(e->host);
    d.ctx = std::move(e->ctx);
    auto pd = d.ctx->alloc_pd();
    if (!pd) {
        return Failure{pd.error()};
    }
    d.pd = *pd;
    return ok();
}

Result<void> open_vfio(DeviceImpl& d, const std::string& bdf) {
    auto dev = vfio::VfioDevice::open(bdf);
    if (!dev) {
        return fail_with(dev.error(), vfio::last_error_detail());
    }
    d.vfio = std::move(*dev);
    return open_context(d, *d.vfio);
}

/// Polls `cq` of `d` for at most out.size() completions (one round of progress first).
std::uint32_t poll_cq(DeviceImpl& d, verbs::Cq& cq, std::span<Wc> out) noexcept {
    return d.ctx->poll_cq(cq, out);
}

}  // namespace

std::string describe(std::error_code ec) {
    if (ec && ec == t_last.code && !t_last.detail.empty()) {
        return ec.message() + ": " + t_last.detail;
    }
    return ec.message();
}

// ---- Device ------------------------------------------------------------------------------------

Device::Device(std::shared_ptr<DeviceImpl> impl) noexcept : impl_(std::move(impl)) {}
Device::~Device() = default;

Result<std::unique_ptr<Device>> Device::open(std::string_view where) {
    t_last = {};
    std::string spec(where);
    if (spec.empty()) {
        const char* env = std::getenv("TBV_EMU");
        if (env == nullptr || *env == '\0') {
            return fail_with(std::make_error_code(std::errc::no_such_device),
                             "no device named and TBV_EMU is not set");
        }
        spec = std::string("emu:") + env;
    }
    auto d = std::make_shared<DeviceImpl>();
    d->name = spec;
    constexpr std::string_view kEmu = "emu:";
    Result<void> r = ok();
    if (spec.starts_with(kEmu)) {
        r = open_emu(*d, std::string_view(spec).substr(kEmu.size()));
    } else if (is_pci_address(spec)) {
        r = open_vfio(*d, spec);
    } else {
        r = fail_with(std::make_error_code(std::errc::invalid_argument),
                      "'" + spec + "' is neither emu:<cable>[/a|/b] nor a PCI address such as " +
                          "0000:c3:00.5");
    }
    if (!r) {
        return Failure{r.error()};
    }
    return std::unique_ptr<Device>(new Device(std::move(d)));
}

const std::string& Device::name() const noexcept {
    return impl_->name;
}

std::uint16_t Device::lid() const noexcept {
    return impl_->ctx->lid();
}

bool Device::active() const noexcept {
    return impl_->ctx->port_active();
}

Result<void> Device::wait_active(std::chrono::milliseconds timeout) {
    const auto end = Clock::now() + timeout;
    while (!impl_->ctx->port_active()) {
        if (Clock::now() >= end) {
            return fail(Errc::timeout);
        }
        impl_->ctx->progress();
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return ok();
}

void Device::progress() noexcept {
    impl_->ctx->progress();
}

Result<std::unique_ptr<Mr>> Device::reg_mr(void* addr, std::size_t len, std::uint32_t access) {
    auto m = impl_->ctx->reg_mr(*impl_->pd, addr, len, access);
    if (!m) {
        return Failure{m.error()};
    }
    auto mr = std::unique_ptr<Mr>(new Mr());
    mr->dev_ = impl_;
    mr->mr_ = *m;
    return mr;
}

Result<std::unique_ptr<Cq>> Device::create_cq(std::uint32_t cqe) {
    auto c = impl_->ctx->create_cq(cqe);
    if (!c) {
        return Failure{c.error()};
    }
    auto cq = std::unique_ptr<Cq>(new Cq());
    cq->dev_ = impl_;
    cq->cq_ = *c;
    return cq;
}

Result<std::unique_ptr<Qp>> Device::create_qp(Cq& send_cq, Cq& recv_cq, const QpOptions& options) {
    if (send_cq.dev_ != impl_ || recv_cq.dev_ != impl_) {
        return fail(std::errc::invalid_argument);
    }
    verbs::QpInit qi;
    qi.type = verbs::QpType::rc;
    qi.pd = impl_->pd;
    qi.send_cq = send_cq.cq_;
    qi.recv_cq = recv_cq.cq_;
    qi.cap = {options.max_send_wr, options.max_recv_wr, options.max_send_sge, options.max_recv_sge,
              options.max_inline_data};
    qi.sq_sig_all = options.sq_sig_all;
    auto q = impl_->ctx->create_qp(qi);
    if (!q) {
        return Failure{q.error()};
    }
    auto qp = std::unique_ptr<Qp>(new Qp());
    qp->dev_ = impl_;
    qp->qp_ = *q;
    std::random_device rd;
    qp->self_.lid = impl_->ctx->lid();
    qp->self_.qpn = (*q)->qpn();
    qp->self_.psn = rd() & 0xFFFFFFu;
    qp->self_.gid = detail::gid_of(impl_->ctx->uuid());
    return qp;
}

// ---- Mr ----------------------------------------------------------------------------------------

Mr::~Mr() {
    // EBUSY while the device still uses the memory (a work request on it not yet completed, a
    // response owed to the peer). That ends with progress, so run it for a while; after that the
    // registration stays until the context closes (documented on Mr).
    const auto end = Clock::now() + kDeregPatience;
    while (dev_->ctx->dereg_mr(mr_).error() == std::errc::device_or_resource_busy &&
           Clock::now() < end) {
        dev_->ctx->progress();
        std::this_thread::yield();
    }
}

void* Mr::addr() const noexcept {
    return reinterpret_cast<void*>(static_cast<std::uintptr_t>(mr_->addr()));
}
std::size_t Mr::length() const noexcept {
    return static_cast<std::size_t>(mr_->length());
}
std::uint32_t Mr::lkey() const noexcept {
    return mr_->lkey();
}
std::uint32_t Mr::rkey() const noexcept {
    return mr_->rkey();
}
RemoteBuffer Mr::remote() const noexcept {
    return {mr_->addr(), mr_->rkey(), mr_->length()};
}

// ---- Cq ----------------------------------------------------------------------------------------

Cq::~Cq() {
    // EBUSY while a QP still uses it: the context then releases it when it closes.
    (void)dev_->ctx->destroy_cq(cq_);
}

std::uint32_t Cq::poll(std::span<Wc> out) noexcept {
    return poll_cq(*dev_, *cq_, out);
}

Result<Wc> Cq::wait(std::chrono::milliseconds timeout) noexcept {
    const auto end = Clock::now() + timeout;
    Wc wc;
    while (poll_cq(*dev_, *cq_, {&wc, 1}) == 0) {
        if (Clock::now() >= end) {
            return fail(Errc::timeout);
        }
        std::this_thread::yield();
    }
    return wc;
}

std::uint32_t Cq::capacity() const noexcept {
    return cq_->capacity();
}

// ---- Qp ----------------------------------------------------------------------------------------

Qp::~Qp() {
    (void)dev_->ctx->destroy_qp(qp_);
}

std::uint32_t Qp::qpn() const noexcept {
    return self_.qpn;
}

Address Qp::local_address() const noexcept {
    return self_;
}

Result<void> Qp::connect(const Address& peer, const ConnectOptions& o) {
    using namespace verbs;
    if (connected_) {
        return fail(std::errc::invalid_argument);
    }
    if (peer.lid == 0 || !detail::gid_matches_lid(peer.gid, peer.lid)) {
        return fail(Errc::malformed);
    }
    Context& ctx = *dev_->ctx;
    QpAttr a{};
    a.qp_state = QpState::init;
    a.pkey_index = 0;
    a.port_num = 1;
    a.qp_access_flags = o.access;
    auto r = ctx.modify_qp(*qp_, a, kQpState | kQpPkeyIndex | kQpPort | kQpAccessFlags);
    if (r) {
        a = QpAttr{};
        a.qp_state = QpState::rtr;
        a.path_mtu = o.mtu;
        a.dest_qp_num = peer.qpn;
        a.rq_psn = peer.psn;
        a.max_dest_rd_atomic = o.max_rd_atomic;
        a.min_rnr_timer = o.min_rnr_timer;
        a.ah_attr.dlid = peer.lid;
        a.ah_attr.port_num = 1;
        r = ctx.modify_qp(*qp_, a,
                          kQpState | kQpAv | kQpPathMtu | kQpDestQpn | kQpRqPsn |
                              kQpMaxDestRdAtomic | kQpMinRnrTimer);
    }
    if (r) {
        a = QpAttr{};
        a.qp_state = QpState::rts;
        a.sq_psn = self_.psn;
        a.timeout = o.timeout;
        a.retry_cnt = o.retry_cnt;
        a.rnr_retry = o.rnr_retry;
        a.max_rd_atomic = o.max_rd_atomic;
        r = ctx.modify_qp(
            *qp_, a,
            kQpState | kQpSqPsn | kQpTimeout | kQpRetryCnt | kQpRnrRetry | kQpMaxQpRdAtomic);
    }
    if (!r) {
        // Back to RESET so that connect() can be called again with other settings.
        QpAttr reset{};
        reset.qp_state = QpState::reset;
        (void)ctx.modify_qp(*qp_, reset, kQpState);
        return r;
    }
    connected_ = true;
    return ok();
}

namespace {

Result<void> post_one(detail::DeviceImpl& d, verbs::Qp& qp, verbs::WrOpcode op, const Mr& mr,
                      const void* addr, std::uint32_t len, RemoteBuffer remote, std::uint64_t wr_id,
                      std::uint32_t flags) noexcept {
    const verbs::Sge sge{reinterpret_cast<std::uintptr_t>(addr), len, mr.lkey()};
    verbs::SendWr wr;
    wr.wr_id = wr_id;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    wr.opcode = op;
    wr.send_flags = flags;
    wr.remote_addr = remote.addr;
    wr.rkey = remote.rkey;
    return d.ctx->post_send(qp, wr);
}

}  // namespace

Result<void> Qp::post_write(const Mr& mr, const void* addr, std::uint32_t len, RemoteBuffer dst,
                            std::uint64_t wr_id, std::uint32_t flags) noexcept {
    return post_one(*dev_, *qp_, verbs::WrOpcode::rdma_write, mr, addr, len, dst, wr_id, flags);
}

Result<void> Qp::post_read(const Mr& mr, void* addr, std::uint32_t len, RemoteBuffer src,
                           std::uint64_t wr_id, std::uint32_t flags) noexcept {
    return post_one(*dev_, *qp_, verbs::WrOpcode::rdma_read, mr, addr, len, src, wr_id, flags);
}

Result<void> Qp::post_send(const Mr& mr, const void* addr, std::uint32_t len, std::uint64_t wr_id,
                           std::uint32_t flags) noexcept {
    return post_one(*dev_, *qp_, verbs::WrOpcode::send, mr, addr, len, {}, wr_id, flags);
}

Result<void> Qp::post_recv(const Mr& mr, void* addr, std::uint32_t len,
                           std::uint64_t wr_id) noexcept {
    const verbs::Sge sge{reinterpret_cast<std::uintptr_t>(addr), len, mr.lkey()};
    verbs::RecvWr wr;
    wr.wr_id = wr_id;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    return dev_->ctx->post_recv(*qp_, wr);
}

Result<void> Qp::post(const verbs::SendWr& wr, const verbs::SendWr** bad) noexcept {
    return dev_->ctx->post_send(*qp_, wr, bad);
}

Result<void> Qp::post(const verbs::RecvWr& wr, const verbs::RecvWr** bad) noexcept {
    return dev_->ctx->post_recv(*qp_, wr, bad);
}

}  // namespace tbv
