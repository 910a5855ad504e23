// SPDX-License-Identifier: Apache-2.0
// verbs QP state machine: every transition of RC, UC and UD against the IB table of required and
// optional attributes (each missing required bit and each extra bit refused), attribute ranges,
// all-or-nothing modify, CUR_STATE, and the asynchronous SQE/ERR moves.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "catch.hpp"
#include "verbs/qp_state.hpp"

using namespace tbv;
using namespace tbv::verbs;

namespace {

using S = QpState;
using T = QpType;

// The expectation, written from ibv_modify_qp(3) and the IB spec's "QP state transition
// properties" table, independently of src/verbs/qp_state.cpp. Any → RESET and any → ERR (no
// attributes) are added by expected() below.
struct Row {
    T type;
    S cur;
    S next;
    std::uint32_t req;
    std::uint32_t opt;
};

constexpr std::uint32_t kRcRtrReq =
    kQpAv | kQpPathMtu | kQpDestQpn | kQpRqPsn | kQpMaxDestRdAtomic | kQpMinRnrTimer;
constexpr std::uint32_t kRcRtsReq =
    kQpSqPsn | kQpTimeout | kQpRetryCnt | kQpRnrRetry | kQpMaxQpRdAtomic;

const std::vector<Row> kRows = {
    // RESET → INIT
    {T::rc, S::reset, S::init, kQpPkeyIndex | kQpPort | kQpAccessFlags, 0},
    {T::uc, S::reset, S::init, kQpPkeyIndex | kQpPort | kQpAccessFlags, 0},
    {T::ud, S::reset, S::init, kQpPkeyIndex | kQpPort | kQpQkey, 0},
    // INIT → INIT
    {T::rc, S::init, S::init, 0, kQpPkeyIndex | kQpPort | kQpAccessFlags},
    {T::uc, S::init, S::init, 0, kQpPkeyIndex | kQpPort | kQpAccessFlags},
    {T::ud, S::init, S::init, 0, kQpPkeyIndex | kQpPort | kQpQkey},
    // INIT → RTR
    {T::rc, S::init, S::rtr, kRcRtrReq, kQpAltPath | kQpAccessFlags | kQpPkeyIndex},
    {T::uc, S::init, S::rtr, kQpAv | kQpPathMtu | kQpDestQpn | kQpRqPsn,
     kQpAltPath | kQpAccessFlags | kQpPkeyIndex},
    {T::ud, S::init, S::rtr, 0, kQpPkeyIndex | kQpQkey},
    // RTR → RTS
    {T::rc, S::rtr, S::rts, kRcRtsReq,
     kQpCurState | kQpAltPath | kQpAccessFlags | kQpMinRnrTimer | kQpPathMigState},
    {T::uc, S::rtr, S::rts, kQpSqPsn, kQpCurState | kQpAltPath | kQpAccessFlags | kQpPathMigState},
    {T::ud, S::rtr, S::rts, kQpSqPsn, kQpCurState | kQpQkey},
    // RTS → RTS
    {T::rc, S::rts, S::rts, 0,
     kQpCurState | kQpAccessFlags | kQpAltPath | kQpPathMigState | kQpMinRnrTimer},
    {T::uc, S::rts, S::rts, 0, kQpCurState | kQpAccessFlags | kQpAltPath | kQpPathMigState},
    {T::ud, S::rts, S::rts, 0, kQpCurState | kQpQkey},
    // RTS → SQD
    {T::rc, S::rts, S::sqd, 0, kQpEnSqdAsyncNotify},
    {T::uc, S::rts, S::sqd, 0, kQpEnSqdAsyncNotify},
    {T::ud, S::rts, S::sqd, 0, kQpEnSqdAsyncNotify},
    // SQD → RTS
    {T::rc, S::sqd, S::rts, 0,
     kQpCurState | kQpAltPath | kQpAccessFlags | kQpMinRnrTimer | kQpPathMigState},
    {T::uc, S::sqd, S::rts, 0, kQpCurState | kQpAltPath | kQpAccessFlags | kQpPathMigState},
    {T::ud, S::sqd, S::rts, 0, kQpCurState | kQpQkey},
    // SQD → SQD
    {T::rc, S::sqd, S::sqd, 0,
     kQpPort | kQpAv | kQpTimeout | kQpRetryCnt | kQpRnrRetry | kQpMaxQpRdAtomic |
         kQpMaxDestRdAtomic | kQpAltPath | kQpAccessFlags | kQpPkeyIndex | kQpMinRnrTimer |
         kQpPathMigState},
    {T::uc, S::sqd, S::sqd, 0,
     kQpAv | kQpAltPath | kQpAccessFlags | kQpPkeyIndex | kQpPathMigState},
    {T::ud, S::sqd, S::sqd, 0, kQpPkeyIndex | kQpQkey},
    // SQE → RTS (UC and UD only)
    {T::uc, S::sqe, S::rts, 0, kQpCurState | kQpAccessFlags},
    {T::ud, S::sqe, S::rts, 0, kQpCurState | kQpQkey},
};

const std::vector<std::uint32_t> kAllBits = [] {
    std::vector<std::uint32_t> v;
    for (unsigned b = 0; b < 32; ++b) {
        v.push_back(1u << b);
    }
    return v;
}();

constexpr T kTypes[] = {T::rc, T::uc, T::ud};
constexpr S kStates[] = {S::reset, S::init, S::rtr, S::rts, S::sqd, S::sqe, S::err};

TransitionMasks expected(T t, S cur, S next) {
    if (next == S::reset || next == S::err) {
        return {true, 0, 0};
    }
    for (const auto& r : kRows) {
        if (r.type == t && r.cur == cur && r.next == next) {
            return {true, r.req, r.opt};
        }
    }
    return {};
}

const char* name(S s) {
    static const char* const n[] = {"RESET", "INIT", "RTR", "RTS", "SQD", "SQE", "ERR"};
    return n[static_cast<unsigned>(s)];
}
const char* name(T t) {
    return t == T::rc ? "RC" : (t == T::uc ? "UC" : "UD");
}

/// Attribute values that are valid for every transition.
QpAttr good_attr(S cur, S next) {
    QpAttr a;
    a.qp_state = next;
    a.cur_qp_state = cur;
    a.port_num = 1;
    a.pkey_index = 0;
    a.qkey = 0x11111111;
    a.qp_access_flags = kAccessRemoteWrite;
    a.ah_attr.dlid = 7;
    a.ah_attr.port_num = 1;
    a.path_mtu = Mtu::mtu2048;
    a.dest_qp_num = 0x123;
    a.rq_psn = 0x10;
    a.sq_psn = 0xffffff;
    a.max_dest_rd_atomic = 4;
    a.min_rnr_timer = 12;
    a.timeout = 14;
    a.retry_cnt = 7;
    a.rnr_retry = 7;
    a.max_rd_atomic = 16;
    a.path_mig_state = MigState::migrated;
    a.en_sqd_async_notify = 1;
    return a;
}

/// Drives a state machine to `target` through valid transitions.
bool bring_to(QpStateMachine& qp, S target) {
    const T t = qp.type();
    auto step = [&](S next) {
        const auto m = expected(t, qp.state(), next);
        return static_cast<bool>(qp.modify(good_attr(qp.state(), next), kQpState | m.required));
    };
    if (target == S::reset) {
        return true;
    }
    if (target == S::err) {
        return step(S::err);
    }
    if (!step(S::init) || target == S::init) {
        return target == S::init && qp.state() == S::init;
    }
    if (!step(S::rtr) || target == S::rtr) {
        return qp.state() == target;
    }
    if (!step(S::rts) || target == S::rts) {
        return qp.state() == target;
    }
    if (target == S::sqd) {
        return step(S::sqd);
    }
    if (target == S::sqe) {
        return qp.set_sq_error() == S::sqe;
    }
    return false;
}

}  // namespace

TEST_CASE("QP transitions: the table matches the IB rules for RC, UC and UD", "[unit][verbs][qp]") {
    for (T t : kTypes) {
        for (S cur : kStates) {
            for (S next : kStates) {
                INFO(name(t) << " " << name(cur) << " -> " << name(next));
                const auto want = expected(t, cur, next);
                const auto got = transition_masks(t, cur, next);
                CHECK(got.valid == want.valid);
                if (want.valid) {
                    CHECK(got.required == want.required);
                    CHECK(got.optional == want.optional);
                }
            }
        }
    }
}

TEST_CASE("QP modify masks: required, optional, each missing and each extra bit",
          "[unit][verbs][qp]") {
    std::size_t checked = 0;
    for (T t : kTypes) {
        for (S cur : kStates) {
            for (S next : kStates) {
                INFO(name(t) << " " << name(cur) << " -> " << name(next));
                const QpAttr a = good_attr(cur, next);
                const auto want = expected(t, cur, next);
                auto mask_ok = [&](std::uint32_t mask) {
                    return static_cast<bool>(check_attr_mask(t, cur, a, mask));
                };
                if (!want.valid) {
                    CHECK_FALSE(mask_ok(kQpState));
                    CHECK_FALSE(mask_ok(0xffffffffu));
                    continue;
                }
                const std::uint32_t base = kQpState | want.required;
                const std::uint32_t supported_opt = want.optional & ~kQpUnsupportedMask;
                CHECK(mask_ok(base));
                CHECK(mask_ok(base | supported_opt));
                for (std::uint32_t bit : kAllBits) {
                    INFO("bit 0x" << std::hex << bit);
                    if ((want.required & bit) != 0) {
                        CHECK_FALSE(mask_ok(base & ~bit));  // each missing required bit
                    } else if ((supported_opt & bit) != 0) {
                        CHECK(mask_ok(base | bit));
                    } else if (bit != kQpState) {
                        CHECK_FALSE(mask_ok(base | bit));  // extra or unsupported bit
                    }
                    ++checked;
                }
                // The full machine agrees, with valid values, from a real state.
                QpStateMachine qp(t, kDefaultLimits);
                if (bring_to(qp, cur)) {
                    CHECK(qp.modify(a, base | supported_opt));
                    CHECK(qp.state() == next);
                }
            }
        }
    }
    CHECK(checked > 1000);
}

TEST_CASE("QP modify without the state bit stays in the state", "[unit][verbs][qp]") {
    QpStateMachine qp(T::rc, kDefaultLimits);
    REQUIRE(bring_to(qp, S::rts));
    QpAttr a = good_attr(S::rts, S::rts);
    a.min_rnr_timer = 3;
    CHECK(qp.modify(a, kQpMinRnrTimer));
    CHECK(qp.state() == S::rts);
    CHECK(qp.attr().min_rnr_timer == 3);
    CHECK(qp.modify(a, kQpSqPsn).error() == std::errc::invalid_argument);  // not an RTS→RTS attr

    QpStateMachine rtr(T::rc, kDefaultLimits);
    REQUIRE(bring_to(rtr, S::rtr));
    CHECK_FALSE(rtr.modify(a, 0));  // RTR → RTR does not exist
}

TEST_CASE("QP walk: RC through every state, attributes kept, RESET clears them",
          "[unit][verbs][qp]") {
    QpStateMachine qp(T::rc, kDefaultLimits);
    CHECK(qp.state() == S::reset);
    CHECK_FALSE(qp.accepts_recv());
    CHECK_FALSE(qp.accepts_send());
    REQUIRE(bring_to(qp, S::init));
    CHECK(qp.accepts_recv());
    CHECK_FALSE(qp.accepts_send());
    REQUIRE(bring_to(qp, S::reset));
    REQUIRE(bring_to(qp, S::rts));
    CHECK(qp.accepts_send());
    CHECK(qp.attr().dest_qp_num == 0x123);
    CHECK(qp.attr().path_mtu == Mtu::mtu2048);
    CHECK(qp.attr().sq_psn == 0xffffff);
    CHECK(qp.attr().max_rd_atomic == 16);
    CHECK(qp.modify(good_attr(S::rts, S::sqd), kQpState | kQpEnSqdAsyncNotify));
    CHECK(qp.state() == S::sqd);
    CHECK(qp.modify(good_attr(S::sqd, S::rts), kQpState));
    CHECK(qp.modify(good_attr(S::rts, S::err), kQpState));
    CHECK(qp.state() == S::err);
    CHECK(qp.accepts_send());  // accepted and flushed
    CHECK_FALSE(qp.modify(good_attr(S::err, S::rts), kQpState));
    CHECK(qp.modify(good_attr(S::err, S::reset), kQpState));
    CHECK(qp.state() == S::reset);
    CHECK(qp.attr().dest_qp_num == 0);
    CHECK(qp.attr().qp_access_flags == 0);
}

TEST_CASE("QP attribute ranges are enforced and a failed modify changes nothing",
          "[unit][verbs][qp]") {
    DeviceLimits lim;
    lim.max_path_mtu = Mtu::mtu2048;
    struct Bad {
        const char* what;
        S from;
        std::function<void(QpAttr&)> mutate;
    };
    const std::vector<Bad> bad = {
        {"path_mtu above the device max", S::init, [](QpAttr& a) { a.path_mtu = Mtu::mtu4096; }},
        {"path_mtu 0", S::init, [](QpAttr& a) { a.path_mtu = static_cast<Mtu>(0); }},
        {"path_mtu 6", S::init, [](QpAttr& a) { a.path_mtu = static_cast<Mtu>(6); }},
        {"min_rnr_timer 32", S::init, [](QpAttr& a) { a.min_rnr_timer = 32; }},
        {"max_dest_rd_atomic > limit", S::init, [](QpAttr& a) { a.max_dest_rd_atomic = 17; }},
        {"rq_psn 25 bits", S::init, [](QpAttr& a) { a.rq_psn = 1u << 24; }},
        {"dest_qpn 25 bits", S::init, [](QpAttr& a) { a.dest_qp_num = 1u << 24; }},
        {"AV port 2", S::init, [](QpAttr& a) { a.ah_attr.port_num = 2; }},
        {"AV sl 16", S::init, [](QpAttr& a) { a.ah_attr.sl = 16; }},
        {"timeout 32", S::rtr, [](QpAttr& a) { a.timeout = 32; }},
        {"retry_cnt 8", S::rtr, [](QpAttr& a) { a.retry_cnt = 8; }},
        {"rnr_retry 8", S::rtr, [](QpAttr& a) { a.rnr_retry = 8; }},
        {"max_rd_atomic > limit", S::rtr, [](QpAttr& a) { a.max_rd_atomic = 17; }},
        {"sq_psn 25 bits", S::rtr, [](QpAttr& a) { a.sq_psn = 0x1000000; }},
        {"qp state out of range", S::rtr, [](QpAttr& a) { a.qp_state = static_cast<S>(7); }},
        {"access flag unknown", S::reset, [](QpAttr& a) { a.qp_access_flags = 1u << 4; }},
        {"port 0", S::reset, [](QpAttr& a) { a.port_num = 0; }},
        {"port 2", S::reset, [](QpAttr& a) { a.port_num = 2; }},
        {"pkey_index 1", S::reset, [](QpAttr& a) { a.pkey_index = 1; }},
    };
    for (const auto& b : bad) {
        INFO(b.what);
        QpStateMachine qp(T::rc, lim);
        REQUIRE(bring_to(qp, b.from));
        const S next = b.from == S::reset ? S::init : (b.from == S::init ? S::rtr : S::rts);
        QpAttr a = good_attr(b.from, next);
        a.path_mtu = Mtu::mtu2048;
        const std::uint32_t mask = kQpState | expected(T::rc, b.from, next).required;
        const QpAttr kept = qp.attr();
        b.mutate(a);
        CHECK(qp.modify(a, mask).error() == std::errc::invalid_argument);
        CHECK(qp.state() == b.from);
        CHECK(qp.attr().sq_psn == kept.sq_psn);
        CHECK(qp.attr().rq_psn == kept.rq_psn);
        CHECK(qp.attr().qp_access_flags == kept.qp_access_flags);
    }
    // Edges that are valid.
    QpStateMachine qp(T::rc, lim);
    REQUIRE(bring_to(qp, S::init));
    QpAttr a = good_attr(S::init, S::rtr);
    a.path_mtu = Mtu::mtu2048;
    a.min_rnr_timer = 31;
    a.max_dest_rd_atomic = 16;
    a.rq_psn = 0xffffff;
    CHECK(qp.modify(a, kQpState | kRcRtrReq));
    a = good_attr(S::rtr, S::rts);
    a.timeout = 31;
    a.retry_cnt = 0;
    a.rnr_retry = 0;
    a.max_rd_atomic = 0;
    CHECK(qp.modify(a, kQpState | kRcRtsReq));
}

TEST_CASE("QP features not offered: alternate path, APM arming, resize, rate limit",
          "[unit][verbs][qp]") {
    QpStateMachine qp(T::rc, kDefaultLimits);
    REQUIRE(bring_to(qp, S::init));
    QpAttr a = good_attr(S::init, S::rtr);
    CHECK_FALSE(qp.modify(a, kQpState | kRcRtrReq | kQpAltPath));
    CHECK(qp.state() == S::init);
    REQUIRE(qp.modify(a, kQpState | kRcRtrReq));
    a = good_attr(S::rtr, S::rts);
    a.path_mig_state = MigState::armed;
    CHECK_FALSE(qp.modify(a, kQpState | kRcRtsReq | kQpPathMigState));
    a.path_mig_state = MigState::migrated;
    CHECK_FALSE(qp.modify(a, kQpState | kRcRtsReq | kQpCap));
    CHECK_FALSE(qp.modify(a, kQpState | kRcRtsReq | kQpRateLimit));
    CHECK(qp.modify(a, kQpState | kRcRtsReq | kQpPathMigState));
}

TEST_CASE("QP CUR_STATE must be true, except RTS claimed after a silent move to SQE",
          "[unit][verbs][qp]") {
    QpStateMachine qp(T::ud, kDefaultLimits);
    REQUIRE(bring_to(qp, S::rts));
    QpAttr a = good_attr(S::rts, S::rts);
    a.cur_qp_state = S::init;
    CHECK_FALSE(qp.modify(a, kQpState | kQpCurState));
    a.cur_qp_state = S::rts;
    CHECK(qp.modify(a, kQpState | kQpCurState));
    CHECK(qp.set_sq_error() == S::sqe);
    CHECK(qp.accepts_send());
    CHECK(qp.modify(a, kQpState | kQpCurState));  // believed RTS, was SQE: SQE → RTS
    CHECK(qp.state() == S::rts);
    a.cur_qp_state = S::sqd;
    CHECK_FALSE(qp.modify(a, kQpState | kQpCurState));
}

TEST_CASE("QP asynchronous errors: UC/UD send error → SQE, RC → ERR", "[unit][verbs][qp]") {
    for (T t : kTypes) {
        QpStateMachine qp(t, kDefaultLimits);
        REQUIRE(bring_to(qp, S::rts));
        CHECK(qp.set_sq_error() == (t == T::rc ? S::err : S::sqe));
        CHECK(qp.attr().qp_state == qp.state());
        qp.set_error();
        CHECK(qp.state() == S::err);
        CHECK(qp.accepts_recv());
    }
    QpStateMachine init(T::uc, kDefaultLimits);
    REQUIRE(bring_to(init, S::init));
    CHECK(init.set_sq_error() == S::err);  // SQE only from RTS
}

TEST_CASE("QP capacities are checked against the device limits", "[unit][verbs][qp]") {
    const DeviceLimits& l = kDefaultLimits;
    QpCaps c{l.max_qp_wr, l.max_qp_wr, l.max_sge, l.max_sge, l.max_inline};
    CHECK(check_caps(c, l));
    CHECK(check_caps(QpCaps{}, l));
    auto bad = [&](auto mutate) {
        QpCaps x = c;
        mutate(x);
        return check_caps(x, l).error() == std::errc::invalid_argument;
    };
    CHECK(bad([&](QpCaps& x) { x.max_send_wr = l.max_qp_wr + 1; }));
    CHECK(bad([&](QpCaps& x) { x.max_recv_wr = l.max_qp_wr + 1; }));
    CHECK(bad([&](QpCaps& x) { x.max_send_sge = l.max_sge + 1; }));
    CHECK(bad([&](QpCaps& x) { x.max_recv_sge = l.max_sge + 1; }));
    CHECK(bad([&](QpCaps& x) { x.max_inline_data = l.max_inline + 1; }));
    CHECK(l.max_sge >= 8);
}
