// SPDX-License-Identifier: Apache-2.0
// QP state machine: the transition table and attribute checks (rules in qp_state.hpp).
#include "verbs/qp_state.hpp"

namespace tbv::verbs {

namespace {

using S = QpState;
using T = QpType;

constexpr std::uint32_t kPsnMax = (1u << 24) - 1;
constexpr std::uint32_t kQpnMax = (1u << 24) - 1;

constexpr bool is_state(QpState s) noexcept {
    return static_cast<unsigned>(s) < kQpStateCount;
}

/// Per type: {required, optional}. Written out per transition so it reads like the spec's table.
struct PerType {
    std::uint32_t req;
    std::uint32_t opt;
};

constexpr TransitionMasks pick(QpType t, PerType rc, PerType uc, PerType ud) noexcept {
    const PerType& p = t == T::rc ? rc : (t == T::uc ? uc : ud);
    return {true, p.req, p.opt};
}

}  // namespace

TransitionMasks transition_masks(QpType t, QpState cur, QpState next) noexcept {
    if ((t != T::rc && t != T::uc && t != T::ud) || !is_state(cur) || !is_state(next)) {
        return {};
    }
    // From any state to RESET or ERR, with no other attribute.
    if (next == S::reset || next == S::err) {
        return {true, 0, 0};
    }
    switch (cur) {
        case S::reset:
            if (next == S::init) {
                return pick(t, {kQpPkeyIndex | kQpPort | kQpAccessFlags, 0},
                            {kQpPkeyIndex | kQpPort | kQpAccessFlags, 0},
                            {kQpPkeyIndex | kQpPort | kQpQkey, 0});
            }
            break;
        case S::init:
            if (next == S::init) {
                return pick(t, {0, kQpPkeyIndex | kQpPort | kQpAccessFlags},
                            {0, kQpPkeyIndex | kQpPort | kQpAccessFlags},
                            {0, kQpPkeyIndex | kQpPort | kQpQkey});
            }
            if (next == S::rtr) {
                return pick(t,
                            {kQpAv | kQpPathMtu | kQpDestQpn | kQpRqPsn | kQpMaxDestRdAtomic |
                                 kQpMinRnrTimer,
                             kQpAltPath | kQpAccessFlags | kQpPkeyIndex},
                            {kQpAv | kQpPathMtu | kQpDestQpn | kQpRqPsn,
                             kQpAltPath | kQpAccessFlags | kQpPkeyIndex},
                            {0, kQpPkeyIndex | kQpQkey});
            }
            break;
        case S::rtr:
            if (next == S::rts) {
                return pick(
                    t,
                    {kQpSqPsn | kQpTimeout | kQpRetryCnt | kQpRnrRetry | kQpMaxQpRdAtomic,
                     kQpCurState | kQpAltPath | kQpAccessFlags | kQpMinRnrTimer | kQpPathMigState},
                    {kQpSqPsn, kQpCurState | kQpAltPath | kQpAccessFlags | kQpPathMigState},
                    {kQpSqPsn, kQpCurState | kQpQkey});
            }
            break;
        case S::rts:
            if (next == S::rts) {
                return pick(t,
                            {0, kQpCurState | kQpAccessFlags | kQpAltPath | kQpPathMigState |
                                    kQpMinRnrTimer},
                            {0, kQpCurState | kQpAccessFlags | kQpAltPath | kQpPathMigState},
                            {0, kQpCurState | kQpQkey});
            }
            if (next == S::sqd) {
                return pick(t, {0, kQpEnSqdAsyncNotify}, {0, kQpEnSqdAsyncNotify},
                            {0, kQpEnSqdAsyncNotify});
            }
            break;
        case S::sqd:
            if (next == S::rts) {
                return pick(t,
                            {0, kQpCurState | kQpAltPath | kQpAccessFlags | kQpMinRnrTimer |
                                    kQpPathMigState},
                            {0, kQpCurState | kQpAltPath | kQpAccessFlags | kQpPathMigState},
                            {0, kQpCurState | kQpQkey});
            }
            if (next == S::sqd) {
                return pick(
                    t,
                    {0, kQpPort | kQpAv | kQpTimeout | kQpRetryCnt | kQpRnrRetry |
                            kQpMaxQpRdAtomic | kQpMaxDestRdAtomic | kQpAltPath | kQpAccessFlags |
                            kQpPkeyIndex | kQpMinRnrTimer | kQpPathMigState},
                    {0, kQpAv | kQpAltPath | kQpAccessFlags | kQpPkeyIndex | kQpPathMigState},
                    {0, kQpPkeyIndex | kQpQkey});
            }
            break;
        case S::sqe:
            // SQE exists for UC and UD only (an RC send error is fatal: ERR).
            if (next == S::rts && t != T::rc) {
                return pick(t, {0, 0}, {0, kQpCurState | kQpAccessFlags},
                            {0, kQpCurState | kQpQkey});
            }
            break;
        case S::err: break;
    }
    return {};
}

Result<void> check_attr_mask(QpType type, QpState cur, const QpAttr& attr, std::uint32_t mask) {
    const QpState next = (mask & kQpState) != 0 ? attr.qp_state : cur;
    if (!is_state(next)) {
        return fail(std::errc::invalid_argument);
    }
    if ((mask & kQpCurState) != 0) {
        const bool same = attr.cur_qp_state == cur;
        const bool async_sqe = attr.cur_qp_state == S::rts && cur == S::sqe;
        if (!same && !async_sqe) {
            return fail(std::errc::invalid_argument);
        }
    }
    const TransitionMasks m = transition_masks(type, cur, next);
    if (!m.valid) {
        return fail(std::errc::invalid_argument);
    }
    if ((mask & m.required) != m.required) {
        return fail(std::errc::invalid_argument);
    }
    if ((mask & ~(m.required | m.optional | kQpState)) != 0) {
        return fail(std::errc::invalid_argument);
    }
    if ((mask & kQpUnsupportedMask) != 0) {
        return fail(std::errc::invalid_argument);
    }
    return ok();
}

Result<void> check_attr_values(QpType /*type*/, const QpAttr& a, std::uint32_t mask,
                               const DeviceLimits& lim) {
    const auto has = [mask](std::uint32_t bit) { return (mask & bit) != 0; };
    const auto bad = [] { return Result<void>(fail(std::errc::invalid_argument)); };
    if (has(kQpAccessFlags) && (a.qp_access_flags & ~kAccessAll) != 0) {
        return bad();
    }
    if (has(kQpPkeyIndex) && a.pkey_index >= lim.max_pkeys) {
        return bad();
    }
    if (has(kQpPort) && (a.port_num == 0 || a.port_num > lim.phys_port_cnt)) {
        return bad();
    }
    if (has(kQpAv)) {
        // Port 0 in the AV means "the QP's port"; an SL is 4 bits.
        if (a.ah_attr.port_num > lim.phys_port_cnt || a.ah_attr.sl > 15) {
            return bad();
        }
    }
    if (has(kQpPathMtu)) {
        const auto m = static_cast<unsigned>(a.path_mtu);
        if (m < static_cast<unsigned>(Mtu::mtu256) || m > static_cast<unsigned>(lim.max_path_mtu)) {
            return bad();
        }
    }
    if (has(kQpTimeout) && a.timeout > 31) {
        return bad();
    }
    if (has(kQpRetryCnt) && a.retry_cnt > 7) {
        return bad();
    }
    if (has(kQpRnrRetry) && a.rnr_retry > 7) {
        return bad();
    }
    if (has(kQpMinRnrTimer) && a.min_rnr_timer > 31) {
        return bad();
    }
    if (has(kQpRqPsn) && a.rq_psn > kPsnMax) {
        return bad();
    }
    if (has(kQpSqPsn) && a.sq_psn > kPsnMax) {
        return bad();
    }
    if (has(kQpDestQpn) && a.dest_qp_num > kQpnMax) {
        return bad();
    }
    if (has(kQpMaxQpRdAtomic) && a.max_rd_atomic > lim.max_qp_init_rd_atom) {
        return bad();
    }
    if (has(kQpMaxDestRdAtomic) && a.max_dest_rd_atomic > lim.max_qp_rd_atom) {
        return bad();
    }
    if (has(kQpPathMigState) && a.path_mig_state != MigState::migrated) {
        return bad();
    }
    if (has(kQpEnSqdAsyncNotify) && a.en_sqd_async_notify > 1) {
        return bad();
    }
    return ok();
}

Result<void> check_caps(const QpCaps& c, const DeviceLimits& lim) {
    if (c.max_send_wr > lim.max_qp_wr || c.max_recv_wr > lim.max_qp_wr ||
        c.max_send_sge > lim.max_sge || c.max_recv_sge > lim.max_sge ||
        c.max_inline_data > lim.max_inline) {
        return fail(std::errc::invalid_argument);
    }
    return ok();
}

Result<void> QpStateMachine::modify(const QpAttr& a, std::uint32_t mask) {
    if (auto r = check_attr_mask(type_, state_, a, mask); !r) {
        return r;
    }
    if (auto r = check_attr_values(type_, a, mask, limits_); !r) {
        return r;
    }
    const QpState next = (mask & kQpState) != 0 ? a.qp_state : state_;
    if (next == S::reset) {
        attr_ = QpAttr{};
        state_ = S::reset;
        return ok();
    }
    const auto has = [mask](std::uint32_t bit) { return (mask & bit) != 0; };
    if (has(kQpAccessFlags)) {
        attr_.qp_access_flags = a.qp_access_flags;
    }
    if (has(kQpPkeyIndex)) {
        attr_.pkey_index = a.pkey_index;
    }
    if (has(kQpPort)) {
        attr_.port_num = a.port_num;
    }
    if (has(kQpQkey)) {
        attr_.qkey = a.qkey;
    }
    if (has(kQpAv)) {
        attr_.ah_attr = a.ah_attr;
    }
    if (has(kQpPathMtu)) {
        attr_.path_mtu = a.path_mtu;
    }
    if (has(kQpTimeout)) {
        attr_.timeout = a.timeout;
    }
    if (has(kQpRetryCnt)) {
        attr_.retry_cnt = a.retry_cnt;
    }
    if (has(kQpRnrRetry)) {
        attr_.rnr_retry = a.rnr_retry;
    }
    if (has(kQpRqPsn)) {
        attr_.rq_psn = a.rq_psn;
    }
    if (has(kQpSqPsn)) {
        attr_.sq_psn = a.sq_psn;
    }
    if (has(kQpMaxQpRdAtomic)) {
        attr_.max_rd_atomic = a.max_rd_atomic;
    }
    if (has(kQpMaxDestRdAtomic)) {
        attr_.max_dest_rd_atomic = a.max_dest_rd_atomic;
    }
    if (has(kQpMinRnrTimer)) {
        attr_.min_rnr_timer = a.min_rnr_timer;
    }
    if (has(kQpDestQpn)) {
        attr_.dest_qp_num = a.dest_qp_num;
    }
    if (has(kQpPathMigState)) {
        attr_.path_mig_state = a.path_mig_state;
    }
    if (has(kQpEnSqdAsyncNotify)) {
        attr_.en_sqd_async_notify = a.en_sqd_async_notify;
    }
    state_ = next;
    attr_.qp_state = next;
    attr_.cur_qp_state = next;
    return ok();
}

QpState QpStateMachine::set_sq_error() noexcept {
    state_ = (type_ != T::rc && state_ == S::rts) ? S::sqe : S::err;
    attr_.qp_state = state_;
    attr_.cur_qp_state = state_;
    return state_;
}

}  // namespace tbv::verbs
