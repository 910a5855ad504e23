// SPDX-License-Identifier: Apache-2.0
// The control-path context ops: queries, PD, MR, CQ, SRQ, QP, AH, free_context. Each op converts
// the ibv_* arguments by value into the core's types (include/tbv/verbs_types.hpp carries
// libibverbs' numbers), calls the core Context, and answers in the verbs convention: an object or
// nullptr with errno, or 0 / a positive errno. Nothing here throws into libibverbs: allocation
// failures become ENOMEM (guarded()).
#include <endian.h>
#include <pthread.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#include "gid.hpp"
#include "private_abi.hpp"
#include "provider.hpp"

#ifndef TBV_VERSION
#define TBV_VERSION "0"
#endif

namespace tbv::provider {

namespace {

/// Runs a control-path body that returns an errno (0 = success); exceptions become ENOMEM.
template <typename F>
int guarded(F&& f) noexcept {
    try {
        return f();
    } catch (...) {
        return ENOMEM;
    }
}

/// For creators: nullptr + errno on failure.
template <typename T, typename F>
T* create_guarded(F&& f) noexcept {
    T* out = nullptr;
    const int e = guarded([&] { return f(out); });
    if (e != 0) {
        errno = e;
        return nullptr;
    }
    return out;
}

verbs::AddressVector to_av(const ibv_ah_attr& a) {
    verbs::AddressVector av;
    std::memcpy(av.dgid.data(), a.grh.dgid.raw, av.dgid.size());
    av.flow_label = a.grh.flow_label;
    av.sgid_index = a.grh.sgid_index;
    av.hop_limit = a.grh.hop_limit;
    av.traffic_class = a.grh.traffic_class;
    av.dlid = a.dlid;
    av.sl = a.sl;
    av.src_path_bits = a.src_path_bits;
    av.static_rate = a.static_rate;
    av.port_num = a.port_num;
    av.is_global = a.is_global != 0;
    return av;
}

/// Converts an address and names its peer: the DLID, or for a GRH with DLID 0 (RoCE style,
/// gid.hpp) the host whose GID is the DGID. 0 or an errno: EINVAL for a source GID index other
/// than 0 or, in GID mode, for an address without a GRH (a RoCE port has no LIDs: every address
/// is global, as the kernel's rdma_check_ah_attr insists); EHOSTUNREACH for a DGID no connected
/// host has.
int to_resolved_av(Context& ctx, const ibv_ah_attr& a, verbs::AddressVector& av) {
    av = to_av(a);
    if (a.is_global == 0) {
        return ctx.device().gid_ipv4 != 0 ? EINVAL : 0;
    }
    if (a.grh.sgid_index != 0) {
        return EINVAL;  // one GID per port
    }
    if (a.dlid == 0) {
        const Device& d = ctx.device();
        av.dlid = resolve_gid(ctx.core(), d.gid_ipv4, d.guid, a.grh.dgid);
        if (av.dlid == 0) {
            return EHOSTUNREACH;
        }
    }
    return 0;
}

ibv_ah_attr from_av(const verbs::AddressVector& av) {
    ibv_ah_attr a{};
    std::memcpy(a.grh.dgid.raw, av.dgid.data(), av.dgid.size());
    a.grh.flow_label = av.flow_label;
    a.grh.sgid_index = av.sgid_index;
    a.grh.hop_limit = av.hop_limit;
    a.grh.traffic_class = av.traffic_class;
    a.dlid = av.dlid;
    a.sl = av.sl;
    a.src_path_bits = av.src_path_bits;
    a.static_rate = av.static_rate;
    a.port_num = av.port_num;
    a.is_global = av.is_global ? 1 : 0;
    return a;
}

verbs::QpCaps to_caps(const ibv_qp_cap& c) {
    return {c.max_send_wr, c.max_recv_wr, c.max_send_sge, c.max_recv_sge, c.max_inline_data};
}

ibv_qp_cap from_caps(const verbs::QpCaps& c) {
    return {c.max_send_wr, c.max_recv_wr, c.max_send_sge, c.max_recv_sge, c.max_inline_data};
}

// ---- queries ------------------------------------------------------------------------------------

int query_device_ex(ibv_context* context, const ibv_query_device_ex_input* /*input*/,
                    ibv_device_attr_ex* attr, std::size_t attr_size) noexcept {
    if (attr == nullptr || attr_size < sizeof(ibv_device_attr)) {
        return EINVAL;
    }
    Context& ctx = to_ctx(context);
    const verbs::DeviceLimits& l = ctx.core().limits();
    ibv_device_attr_ex x{};
    ibv_device_attr& a = x.orig_attr;
    std::snprintf(a.fw_ver, sizeof a.fw_ver, "tbverbs %s", TBV_VERSION);
    a.node_guid = htobe64(ctx.device().guid);
    a.sys_image_guid = a.node_guid;
    a.max_mr_size = l.max_mr_size;
    a.page_size_cap = 4096;
    // Intel's vendor id: USB4 host interfaces are Intel's or AMD's, and perftest enables inline
    // data only for vendors it knows (0x8086 is one, AMD's is not).
    a.vendor_id = 0x8086;
    a.vendor_part_id = 0;
    a.hw_ver = 0;
    a.max_qp = static_cast<int>(l.max_qp);
    a.max_qp_wr = static_cast<int>(l.max_qp_wr);
    a.device_cap_flags = IBV_DEVICE_PORT_ACTIVE_EVENT | IBV_DEVICE_RC_RNR_NAK_GEN;
    a.max_sge = static_cast<int>(l.max_sge);
    a.max_sge_rd = static_cast<int>(l.max_sge_rd);
    a.max_cq = static_cast<int>(l.max_cq);
    a.max_cqe = static_cast<int>(l.max_cqe);
    a.max_mr = static_cast<int>(l.max_mr);
    a.max_pd = static_cast<int>(l.max_pd);
    a.max_qp_rd_atom = static_cast<int>(l.max_qp_rd_atom);
    a.max_res_rd_atom = static_cast<int>(l.max_qp_rd_atom * l.max_qp);
    a.max_qp_init_rd_atom = static_cast<int>(l.max_qp_init_rd_atom);
    // Atomics run in the responder's progress, serialised per device: atomic among RDMA atomics
    // of this device, not against the CPU.
    a.atomic_cap = IBV_ATOMIC_HCA;
    a.max_ah = static_cast<int>(l.max_ah);
    a.max_srq = static_cast<int>(l.max_srq);
    a.max_srq_wr = static_cast<int>(l.max_srq_wr);
    a.max_srq_sge = static_cast<int>(l.max_srq_sge);
    a.max_pkeys = l.max_pkeys;
    a.local_ca_ack_delay = 15;
    a.phys_port_cnt = l.phys_port_cnt;
    x.device_cap_flags_ex = a.device_cap_flags;
    x.phys_port_cnt_ex = l.phys_port_cnt;
    std::memcpy(attr, &x, std::min(attr_size, sizeof x));
    return 0;
}

int query_port(ibv_context* context, std::uint8_t port_num, ibv_port_attr* p) noexcept {
    Context& ctx = to_ctx(context);
    if (port_num != 1 || p == nullptr) {
        return EINVAL;
    }
    const bool active = guarded([&] { return ctx.port_active_waiting() ? 1 : 0; }) == 1;
    // Only the members of the v44 struct: newer libibverbs (v49+) append fields we must not
    // write beyond (__lib_query_port zeroed the whole buffer before calling us).
    p->state = active ? IBV_PORT_ACTIVE : IBV_PORT_DOWN;
    p->max_mtu = IBV_MTU_4096;
    // UD datagrams carry at most 2048 bytes here, and the active MTU is what applications size
    // datagrams with; RC/UC accept a 4096-byte path MTU in modify_qp.
    p->active_mtu = IBV_MTU_2048;
    p->gid_tbl_len = 1;
    p->port_cap_flags = 0;
    p->max_msg_sz = 1u << 31;
    p->bad_pkey_cntr = 0;
    p->qkey_viol_cntr = 0;
    p->pkey_tbl_len = 1;
    const bool roce = ctx.device().gid_ipv4 != 0;
    p->lid = roce ? 0 : ctx.core().lid();  // RoCE-style ports address peers by GID only
    p->sm_lid = 0;
    p->lmc = 0;
    p->max_vl_num = 1;  // VL0 only
    p->sm_sl = 0;
    p->subnet_timeout = 0;
    p->init_type_reply = 0;
    p->active_width = 2;             // 4X
    p->active_speed = 4;             // QDR: 4 × 10 = 40 Gb/s, a USB4 Gen3 link (2 lanes × 20)
    p->phys_state = active ? 5 : 2;  // LinkUp : Polling
    p->link_layer = roce ? IBV_LINK_LAYER_ETHERNET : IBV_LINK_LAYER_INFINIBAND;
    p->flags = 0;
    p->port_cap_flags2 = 0;
    return 0;
}

// ---- PD, MR -------------------------------------------------------------------------------------

ibv_pd* alloc_pd(ibv_context* context) noexcept {
    return create_guarded<ibv_pd>([&](ibv_pd*& out) {
        Context& ctx = to_ctx(context);
        auto pd = ctx.core().alloc_pd();
        if (!pd) {
            return to_errno(pd.error());
        }
        auto* p = new Pd();
        p->core = *pd;
        p->ibv.context = context;
        p->ibv.handle = (*pd)->handle();
        out = &p->ibv;
        return 0;
    });
}

int dealloc_pd(ibv_pd* pd) noexcept {
    Pd* p = to_pd(pd);
    Context& ctx = to_ctx(pd->context);
    if (auto r = ctx.core().dealloc_pd(p->core); !r) {
        return to_errno(r.error());
    }
    delete p;
    return 0;
}

ibv_mr* reg_mr(ibv_pd* pd, void* addr, std::size_t length, std::uint64_t hca_va,
               int access) noexcept {
    return create_guarded<ibv_mr>([&](ibv_mr*& out) {
        if (hca_va != reinterpret_cast<std::uintptr_t>(addr)) {
            return EOPNOTSUPP;  // the MR's address space is the process's (iova == addr)
        }
        // Optional bits (relaxed ordering and the rest of the range) are hints a device may
        // ignore: libibverbs passes them because core_support says so.
        const auto acc = static_cast<std::uint32_t>(access) &
                         ~static_cast<std::uint32_t>(IBV_ACCESS_OPTIONAL_RANGE);
        Pd* p = to_pd(pd);
        Context& ctx = to_ctx(pd->context);
        auto mr = ctx.core().reg_mr(*p->core, addr, length, acc);
        if (!mr) {
            return to_errno(mr.error());
        }
        auto* m = new Mr();
        m->core = *mr;
        ibv_mr& im = m->vmr.ibv_mr;
        im.context = pd->context;
        im.pd = pd;
        im.addr = addr;
        im.length = length;
        im.lkey = (*mr)->lkey();
        im.rkey = (*mr)->rkey();
        im.handle = (*mr)->lkey();
        m->vmr.mr_type = pabi34::ibv_mr_type::mr;
        m->vmr.access = access;
        out = &im;
        return 0;
    });
}

int dereg_mr(pabi34::verbs_mr* vmr) noexcept {
    Mr* m = to_mr(vmr);
    Context& ctx = to_ctx(vmr->ibv_mr.context);
    if (auto r = ctx.core().dereg_mr(m->core); !r) {
        return to_errno(r.error());
    }
    delete m;
    return 0;
}

// ---- CQ -----------------------------------------------------------------------------------------

ibv_cq* create_cq(ibv_context* context, int cqe, ibv_comp_channel* channel,
                  int /*comp_vector*/) noexcept {
    return create_guarded<ibv_cq>([&](ibv_cq*& out) {
        if (cqe < 1) {
            return EINVAL;
        }
        Context& ctx = to_ctx(context);
        verbs::CompChannel* ch = channel != nullptr ? to_channel(channel)->core : nullptr;
        auto cq = ctx.core().create_cq(static_cast<std::uint32_t>(cqe), ch);
        if (!cq) {
            return to_errno(cq.error());
        }
        auto* c = new Cq();
        c->core = *cq;
        ibv_cq& ic = c->vcq.cq;
        ic.context = context;
        ic.channel = channel;
        ic.cqe = static_cast<int>((*cq)->capacity());
        ic.handle = (*cq)->handle();
        ctx.add(c);
        out = &ic;
        return 0;
    });
}

int destroy_cq(ibv_cq* cq) noexcept {
    Cq* c = to_cq(cq);
    Context& ctx = to_ctx(cq->context);
    return guarded([&] {
        if (auto r = ctx.core().destroy_cq(c->core); !r) {
            return to_errno(r.error());
        }
        ctx.remove(c);
        delete c;
        return 0;
    });
}

int req_notify_cq(ibv_cq* cq, int solicited_only) noexcept {
    Context& ctx = to_ctx(cq->context);
    if (auto r = ctx.core().req_notify_cq(*to_cq(cq)->core, solicited_only != 0); !r) {
        return to_errno(r.error());
    }
    return 0;
}

void cq_event(ibv_cq* /*cq*/) noexcept {
    // Nothing to re-arm: an armed CQ fires once; ibv_req_notify_cq arms it again.
}

void async_event(ibv_context* /*context*/, ibv_async_event* /*event*/) noexcept {}

// ---- SRQ ----------------------------------------------------------------------------------------

ibv_srq* create_srq(ibv_pd* pd, ibv_srq_init_attr* attr) noexcept {
    return create_guarded<ibv_srq>([&](ibv_srq*& out) {
        if (attr == nullptr) {
            return EINVAL;
        }
        Context& ctx = to_ctx(pd->context);
        auto srq = ctx.core().create_srq(*to_pd(pd)->core, attr->attr.max_wr, attr->attr.max_sge,
                                         attr->attr.srq_limit);
        if (!srq) {
            return to_errno(srq.error());
        }
        auto* s = new Srq();
        s->core = *srq;
        ibv_srq& is = s->vsrq.srq;
        is.context = pd->context;
        is.srq_context = attr->srq_context;
        is.pd = pd;
        is.handle = (*srq)->handle();
        s->vsrq.srq_type = IBV_SRQT_BASIC;
        attr->attr.max_wr = (*srq)->max_wr();
        attr->attr.max_sge = (*srq)->max_sge();
        ctx.add(s);
        out = &is;
        return 0;
    });
}

int modify_srq(ibv_srq* srq, ibv_srq_attr* attr, int mask) noexcept {
    Context& ctx = to_ctx(srq->context);
    if (attr == nullptr || (mask & ~(IBV_SRQ_MAX_WR | IBV_SRQ_LIMIT)) != 0) {
        return EINVAL;
    }
    if ((mask & IBV_SRQ_MAX_WR) != 0) {
        return EINVAL;  // resizing is not offered (no IBV_DEVICE_SRQ_RESIZE)
    }
    if ((mask & IBV_SRQ_LIMIT) != 0) {
        if (auto r = ctx.core().modify_srq(*to_srq(srq)->core, attr->srq_limit); !r) {
            return to_errno(r.error());
        }
    }
    return 0;
}

int query_srq(ibv_srq* srq, ibv_srq_attr* attr) noexcept {
    const verbs::Srq& s = *to_srq(srq)->core;
    attr->max_wr = s.max_wr();
    attr->max_sge = s.max_sge();
    attr->srq_limit = s.limit();
    return 0;
}

int destroy_srq(ibv_srq* srq) noexcept {
    Srq* s = to_srq(srq);
    Context& ctx = to_ctx(srq->context);
    return guarded([&] {
        if (auto r = ctx.core().destroy_srq(s->core); !r) {
            return to_errno(r.error());
        }
        ctx.remove(s);
        delete s;
        return 0;
    });
}

// ---- QP -----------------------------------------------------------------------------------------

int make_qp(ibv_context* context, ibv_pd* pd, ibv_qp_init_attr& attr, ibv_qp*& out) {
    verbs::QpInit in;
    switch (attr.qp_type) {
        case IBV_QPT_RC: in.type = verbs::QpType::rc; break;
        case IBV_QPT_UC: in.type = verbs::QpType::uc; break;
        case IBV_QPT_UD: in.type = verbs::QpType::ud; break;
        default: return EOPNOTSUPP;  // XRC, raw packet, driver QPs
    }
    if (pd == nullptr || attr.send_cq == nullptr || attr.recv_cq == nullptr) {
        return EINVAL;
    }
    Context& ctx = to_ctx(context);
    in.pd = to_pd(pd)->core;
    in.send_cq = to_cq(attr.send_cq)->core;
    in.recv_cq = to_cq(attr.recv_cq)->core;
    in.srq = attr.srq != nullptr ? to_srq(attr.srq)->core : nullptr;
    in.cap = to_caps(attr.cap);
    in.sq_sig_all = attr.sq_sig_all != 0;
    auto qp = ctx.core().create_qp(in);
    if (!qp) {
        return to_errno(qp.error());
    }
    auto* q = new Qp();
    q->core = *qp;
    q->ctx = &ctx;
    ibv_qp& iq = q->vqp.qp;
    iq.context = context;
    iq.qp_context = attr.qp_context;
    iq.pd = pd;
    iq.send_cq = attr.send_cq;
    iq.recv_cq = attr.recv_cq;
    iq.srq = attr.srq;
    iq.handle = (*qp)->qpn();
    iq.qp_num = (*qp)->qpn();
    iq.state = IBV_QPS_RESET;
    iq.qp_type = attr.qp_type;
    pthread_mutex_init(&iq.mutex, nullptr);
    pthread_cond_init(&iq.cond, nullptr);
    iq.events_completed = 0;
    attr.cap = from_caps((*qp)->caps());
    q->init = attr;
    ctx.add(q);
    out = &iq;
    return 0;
}

ibv_qp* create_qp(ibv_pd* pd, ibv_qp_init_attr* attr) noexcept {
    return create_guarded<ibv_qp>([&](ibv_qp*& out) {
        return attr == nullptr ? EINVAL : make_qp(pd->context, pd, *attr, out);
    });
}

ibv_qp* create_qp_ex(ibv_context* context, ibv_qp_init_attr_ex* ax) noexcept {
    return create_guarded<ibv_qp>([&](ibv_qp*& out) {
        if (ax == nullptr || (ax->comp_mask & IBV_QP_INIT_ATTR_PD) == 0) {
            return EINVAL;
        }
        // The ibv_wr_* API (SEND_OPS_FLAGS), XRC, RSS, TSO and creation flags are not offered.
        const std::uint32_t known = IBV_QP_INIT_ATTR_PD | IBV_QP_INIT_ATTR_CREATE_FLAGS;
        if ((ax->comp_mask & ~known) != 0 ||
            ((ax->comp_mask & IBV_QP_INIT_ATTR_CREATE_FLAGS) != 0 && ax->create_flags != 0)) {
            return EOPNOTSUPP;
        }
        ibv_qp_init_attr a{};
        a.qp_context = ax->qp_context;
        a.send_cq = ax->send_cq;
        a.recv_cq = ax->recv_cq;
        a.srq = ax->srq;
        a.cap = ax->cap;
        a.qp_type = ax->qp_type;
        a.sq_sig_all = ax->sq_sig_all;
        const int e = make_qp(context, ax->pd, a, out);
        if (e == 0) {
            ax->cap = a.cap;
        }
        return e;
    });
}

int modify_qp(ibv_qp* qp, ibv_qp_attr* attr, int mask) noexcept {
    if (attr == nullptr) {
        return EINVAL;
    }
    Qp* q = to_qp(qp);
    verbs::QpAttr a;
    a.qp_state = static_cast<verbs::QpState>(attr->qp_state);
    a.cur_qp_state = static_cast<verbs::QpState>(attr->cur_qp_state);
    a.path_mtu = static_cast<verbs::Mtu>(attr->path_mtu);
    a.path_mig_state = static_cast<verbs::MigState>(attr->path_mig_state);
    a.qkey = attr->qkey;
    a.rq_psn = attr->rq_psn;
    a.sq_psn = attr->sq_psn;
    a.dest_qp_num = attr->dest_qp_num;
    a.qp_access_flags = attr->qp_access_flags;
    a.cap = to_caps(attr->cap);
    if ((mask & IBV_QP_AV) != 0) {
        if (const int e =
                guarded([&] { return to_resolved_av(*q->ctx, attr->ah_attr, a.ah_attr); });
            e != 0) {
            return e;
        }
    }
    a.pkey_index = attr->pkey_index;
    a.en_sqd_async_notify = attr->en_sqd_async_notify;
    a.max_rd_atomic = attr->max_rd_atomic;
    a.max_dest_rd_atomic = attr->max_dest_rd_atomic;
    a.min_rnr_timer = attr->min_rnr_timer;
    a.port_num = attr->port_num;
    a.timeout = attr->timeout;
    a.retry_cnt = attr->retry_cnt;
    a.rnr_retry = attr->rnr_retry;
    return guarded([&] {
        if (auto r = q->ctx->core().modify_qp(*q->core, a, static_cast<std::uint32_t>(mask)); !r) {
            return to_errno(r.error());
        }
        if ((mask & IBV_QP_STATE) != 0) {
            qp->state = attr->qp_state;
        }
        return 0;
    });
}

int query_qp(ibv_qp* qp, ibv_qp_attr* attr, int /*mask*/, ibv_qp_init_attr* init) noexcept {
    if (attr == nullptr || init == nullptr) {
        return EINVAL;
    }
    Qp* q = to_qp(qp);
    // Answer every attribute (the mask only says which the caller needs). Read under the core's
    // lock: progress (the service thread's too) may move the QP to an error state meanwhile.
    verbs::QpAttr a;
    verbs::QpState state = verbs::QpState::reset;
    verbs::QpCaps caps;
    bool draining = false;
    guarded([&] {
        q->ctx->core().for_each_qp([&](const verbs::Qp& x) {
            if (&x == q->core) {
                a = x.attr();
                state = x.state();
                caps = x.caps();
                draining = x.sq_draining();
            }
        });
        return 0;
    });
    *attr = ibv_qp_attr{};
    attr->qp_state = static_cast<ibv_qp_state>(state);
    attr->cur_qp_state = attr->qp_state;
    attr->path_mtu = static_cast<ibv_mtu>(a.path_mtu);
    attr->path_mig_state = static_cast<ibv_mig_state>(a.path_mig_state);
    attr->qkey = a.qkey;
    attr->rq_psn = a.rq_psn;
    attr->sq_psn = a.sq_psn;
    attr->dest_qp_num = a.dest_qp_num;
    attr->qp_access_flags = static_cast<int>(a.qp_access_flags);
    attr->cap = from_caps(caps);
    attr->ah_attr = from_av(a.ah_attr);
    attr->pkey_index = a.pkey_index;
    attr->en_sqd_async_notify = a.en_sqd_async_notify;
    attr->sq_draining = draining ? 1 : 0;  // SQD: WQEs begun before the drain still run
    attr->max_rd_atomic = a.max_rd_atomic;
    attr->max_dest_rd_atomic = a.max_dest_rd_atomic;
    attr->min_rnr_timer = a.min_rnr_timer;
    attr->port_num = a.port_num;
    attr->timeout = a.timeout;
    attr->retry_cnt = a.retry_cnt;
    attr->rnr_retry = a.rnr_retry;
    *init = q->init;
    qp->state = attr->qp_state;
    return 0;
}

int destroy_qp(ibv_qp* qp) noexcept {
    Qp* q = to_qp(qp);
    Context& ctx = *q->ctx;
    ctx.linger(q->core);
    return guarded([&] {
        if (auto r = ctx.core().destroy_qp(q->core); !r) {
            return to_errno(r.error());
        }
        ctx.remove(q);
        pthread_cond_destroy(&qp->cond);
        pthread_mutex_destroy(&qp->mutex);
        delete q;
        return 0;
    });
}

// ---- AH -----------------------------------------------------------------------------------------

ibv_ah* create_ah(ibv_pd* pd, ibv_ah_attr* attr) noexcept {
    return create_guarded<ibv_ah>([&](ibv_ah*& out) {
        if (attr == nullptr) {
            return EINVAL;
        }
        Context& ctx = to_ctx(pd->context);
        verbs::AddressVector av;
        if (const int e = to_resolved_av(ctx, *attr, av); e != 0) {
            return e;
        }
        auto ah = ctx.core().create_ah(*to_pd(pd)->core, av);
        if (!ah) {
            return to_errno(ah.error());
        }
        auto* a = new Ah();
        a->core = *ah;
        a->ibv.context = pd->context;
        a->ibv.pd = pd;
        a->ibv.handle = attr->dlid;
        out = &a->ibv;
        return 0;
    });
}

int destroy_ah(ibv_ah* ah) noexcept {
    Ah* a = to_ah(ah);
    Context& ctx = to_ctx(ah->context);
    return guarded([&] {
        if (auto r = ctx.core().destroy_ah(a->core); !r) {
            return to_errno(r.error());
        }
        delete a;
        return 0;
    });
}

// ---- context ------------------------------------------------------------------------------------

void free_context(ibv_context* context) noexcept {
    auto* vctx = reinterpret_cast<verbs_context*>(reinterpret_cast<char*>(context) -
                                                  offsetof(verbs_context, context));
    auto* shell = reinterpret_cast<ContextShell*>(vctx);
    shell->impl->linger(nullptr);
    delete shell->impl;  // service thread stopped, instance released (last one closes it)
    shell->impl = nullptr;
    if (const PrivateAbi* abi = private_abi()) {
        abi->uninit_context(&shell->vctx);
    }
    std::free(shell);  // calloc'ed by _verbs_init_and_alloc_context
}

}  // namespace

namespace {

pabi34::verbs_context_ops make_ops() {
    pabi34::verbs_context_ops o{};
    o.alloc_pd = alloc_pd;
    o.async_event = async_event;
    o.cq_event = cq_event;
    o.create_ah = create_ah;
    o.create_cq = create_cq;
    o.create_qp = create_qp;
    o.create_qp_ex = create_qp_ex;
    o.create_srq = create_srq;
    o.dealloc_pd = dealloc_pd;
    o.dereg_mr = dereg_mr;
    o.destroy_ah = destroy_ah;
    o.destroy_cq = destroy_cq;
    o.destroy_qp = destroy_qp;
    o.destroy_srq = destroy_srq;
    o.free_context = free_context;
    o.modify_qp = modify_qp;
    o.modify_srq = modify_srq;
    o.poll_cq = poll_cq;
    o.post_recv = post_recv;
    o.post_send = post_send;
    o.post_srq_recv = post_srq_recv;
    o.query_device_ex = query_device_ex;
    o.query_port = query_port;
    o.query_qp = query_qp;
    o.query_srq = query_srq;
    o.reg_mr = reg_mr;
    o.req_notify_cq = req_notify_cq;
    return o;
}

}  // namespace

const pabi34::verbs_context_ops kContextOps = make_ops();

// ---- what tbvdv.cpp and the interposer need -----------------------------------------------------

int query_gid(Context& ctx, unsigned port, unsigned index, ibv_gid& gid) noexcept {
    if (port != 1 || index != 0) {
        return EINVAL;
    }
    gid = port_gid(ctx.device().gid_ipv4, ctx.device().guid);
    return 0;
}

}  // namespace tbv::provider
