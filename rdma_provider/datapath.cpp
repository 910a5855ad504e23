// SPDX-License-Identifier: Apache-2.0
// The data-path ops libibverbs inlines into the application (ibv_post_send, ibv_post_recv,
// ibv_post_srq_recv, ibv_poll_cq): each ibv_* work request is converted by value, on the stack,
// into the core's SendWr/RecvWr and posted; completions come back the same way. No allocation, no
// exception, no system call of ours. Errors: a positive errno with *bad_wr at the first request
// not posted (the ones before it are posted), as ibv_post_send(3) says.
#include <algorithm>
#include <cerrno>

#include "provider.hpp"

namespace tbv::provider {

namespace {

/// SGEs one work request may carry here (the core refuses more than a QP's max_*_sge anyway).
constexpr int kMaxSge = static_cast<int>(verbs::kDefaultLimits.max_sge);
/// Completions converted per round of poll_cq.
constexpr int kPollBatch = 32;

/// struct ibv_sge → verbs::Sge (same three fields).
int copy_sges(const ibv_sge* in, int n, verbs::Sge* out) noexcept {
    if (n < 0 || n > kMaxSge || (n > 0 && in == nullptr)) {
        return EINVAL;
    }
    for (int i = 0; i < n; ++i) {
        out[i] = {in[i].addr, in[i].length, in[i].lkey};
    }
    return 0;
}

int to_send_wr(const ibv_send_wr& w, ibv_qp_type type, verbs::Sge* sges,
               verbs::SendWr& s) noexcept {
    if (const int e = copy_sges(w.sg_list, w.num_sge, sges); e != 0) {
        return e;
    }
    s = verbs::SendWr{};
    s.wr_id = w.wr_id;
    s.sg_list = sges;
    s.num_sge = static_cast<std::uint32_t>(w.num_sge);
    switch (w.opcode) {
        case IBV_WR_RDMA_WRITE:
        case IBV_WR_RDMA_WRITE_WITH_IMM:
        case IBV_WR_SEND:
        case IBV_WR_SEND_WITH_IMM:
        case IBV_WR_RDMA_READ:
        case IBV_WR_ATOMIC_CMP_AND_SWP:
        case IBV_WR_ATOMIC_FETCH_AND_ADD: s.opcode = static_cast<verbs::WrOpcode>(w.opcode); break;
        default: return EINVAL;  // memory windows, invalidation, TSO, driver opcodes
    }
    s.send_flags = w.send_flags;
    s.imm_data = w.imm_data;  // network order on both sides
    if (type == IBV_QPT_UD) {
        if (w.wr.ud.ah == nullptr) {
            return EINVAL;
        }
        s.ah = to_ah(w.wr.ud.ah)->core;
        s.remote_qpn = w.wr.ud.remote_qpn;
        s.remote_qkey = w.wr.ud.remote_qkey;
    } else if (w.opcode == IBV_WR_ATOMIC_CMP_AND_SWP || w.opcode == IBV_WR_ATOMIC_FETCH_AND_ADD) {
        s.remote_addr = w.wr.atomic.remote_addr;
        s.rkey = w.wr.atomic.rkey;
        s.compare_add = w.wr.atomic.compare_add;
        s.swap = w.wr.atomic.swap;
    } else {
        s.remote_addr = w.wr.rdma.remote_addr;
        s.rkey = w.wr.rdma.rkey;
    }
    return 0;
}

int to_recv_wr(const ibv_recv_wr& w, verbs::Sge* sges, verbs::RecvWr& r) noexcept {
    if (const int e = copy_sges(w.sg_list, w.num_sge, sges); e != 0) {
        return e;
    }
    r = verbs::RecvWr{};
    r.wr_id = w.wr_id;
    r.sg_list = sges;
    r.num_sge = static_cast<std::uint32_t>(w.num_sge);
    return 0;
}

void to_ibv_wc(const verbs::Wc& c, ibv_wc& w) noexcept {
    w.wr_id = c.wr_id;
    w.status = static_cast<ibv_wc_status>(c.status);
    w.opcode = static_cast<ibv_wc_opcode>(c.opcode);
    w.vendor_err = c.vendor_err;
    w.byte_len = c.byte_len;
    w.imm_data = c.imm_data;
    w.qp_num = c.qp_num;
    w.src_qp = c.src_qp;
    w.wc_flags = c.wc_flags;
    w.pkey_index = c.pkey_index;
    w.slid = c.slid;
    w.sl = c.sl;
    w.dlid_path_bits = c.dlid_path_bits;
}

}  // namespace

int post_send(ibv_qp* qp, ibv_send_wr* wr, ibv_send_wr** bad) noexcept {
    Qp* q = to_qp(qp);
    verbs::Context& core = q->ctx->core();
    q->ctx->note_app_progress();
    int rc = 0;
    bool posted = false;
    for (ibv_send_wr* w = wr; w != nullptr; w = w->next) {
        verbs::Sge sges[kMaxSge];
        verbs::SendWr s;
        rc = to_send_wr(*w, qp->qp_type, sges, s);
        if (rc == 0) {
            if (auto r = core.post_send(*q->core, s); !r) {
                rc = to_errno(r.error());
            }
        }
        if (rc != 0) {
            if (bad != nullptr) {
                *bad = w;
            }
            break;
        }
        posted = true;
    }
    if (posted) {
        core.progress();  // put it on the wire now rather than at the next poll
    }
    return rc;
}

int post_recv(ibv_qp* qp, ibv_recv_wr* wr, ibv_recv_wr** bad) noexcept {
    Qp* q = to_qp(qp);
    verbs::Context& core = q->ctx->core();
    int rc = 0;
    for (ibv_recv_wr* w = wr; w != nullptr; w = w->next) {
        verbs::Sge sges[kMaxSge];
        verbs::RecvWr r;
        rc = to_recv_wr(*w, sges, r);
        if (rc == 0) {
            if (auto res = core.post_recv(*q->core, r); !res) {
                rc = to_errno(res.error());
            }
        }
        if (rc != 0) {
            if (bad != nullptr) {
                *bad = w;
            }
            break;
        }
    }
    return rc;
}

int post_srq_recv(ibv_srq* srq, ibv_recv_wr* wr, ibv_recv_wr** bad) noexcept {
    verbs::Context& core = to_ctx(srq->context).core();
    int rc = 0;
    for (ibv_recv_wr* w = wr; w != nullptr; w = w->next) {
        verbs::Sge sges[kMaxSge];
        verbs::RecvWr r;
        rc = to_recv_wr(*w, sges, r);
        if (rc == 0) {
            if (auto res = core.post_srq_recv(*to_srq(srq)->core, r); !res) {
                rc = to_errno(res.error());
            }
        }
        if (rc != 0) {
            if (bad != nullptr) {
                *bad = w;
            }
            break;
        }
    }
    return rc;
}

int poll_cq(ibv_cq* cq, int num_entries, ibv_wc* wc) noexcept {
    if (num_entries < 0 || (num_entries > 0 && wc == nullptr)) {
        return -EINVAL;
    }
    Context& ctx = to_ctx(cq->context);
    ctx.note_app_progress();
    verbs::Cq& c = *to_cq(cq)->core;
    verbs::Wc buf[kPollBatch];
    int total = 0;
    while (total < num_entries) {
        const int want = std::min(kPollBatch, num_entries - total);
        const auto got = static_cast<int>(
            ctx.core().poll_cq(c, std::span<verbs::Wc>(buf, static_cast<std::size_t>(want))));
        for (int i = 0; i < got; ++i) {
            to_ibv_wc(buf[i], wc[total + i]);
        }
        total += got;
        if (got < want) {
            break;
        }
    }
    return total;
}

}  // namespace tbv::provider
