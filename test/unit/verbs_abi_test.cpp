// SPDX-License-Identifier: Apache-2.0
// verbs ABI values: our enums (include/tbv/verbs_types.hpp) carry the documented numbers of the
// libibverbs enums, so the provider glue converts by value. Checked at compile time when
// libibverbs-dev is installed; layer 4 itself never includes rdma-core.
#include "catch.hpp"
#include "tbv/verbs_types.hpp"

#if __has_include(<infiniband/verbs.h>)
#include <infiniband/verbs.h>
#define TBV_HAVE_IBVERBS_HEADER 1

namespace {

using namespace tbv::verbs;

template <typename A, typename B>
constexpr bool same(A a, B b) {
    return static_cast<long long>(a) == static_cast<long long>(b);
}

static_assert(same(kAccessLocalWrite, IBV_ACCESS_LOCAL_WRITE));
static_assert(same(kAccessRemoteWrite, IBV_ACCESS_REMOTE_WRITE));
static_assert(same(kAccessRemoteRead, IBV_ACCESS_REMOTE_READ));
static_assert(same(kAccessRemoteAtomic, IBV_ACCESS_REMOTE_ATOMIC));

static_assert(same(QpState::reset, IBV_QPS_RESET));
static_assert(same(QpState::init, IBV_QPS_INIT));
static_assert(same(QpState::rtr, IBV_QPS_RTR));
static_assert(same(QpState::rts, IBV_QPS_RTS));
static_assert(same(QpState::sqd, IBV_QPS_SQD));
static_assert(same(QpState::sqe, IBV_QPS_SQE));
static_assert(same(QpState::err, IBV_QPS_ERR));
static_assert(same(kQpStateCount, IBV_QPS_UNKNOWN));
static_assert(same(QpType::rc, IBV_QPT_RC));
static_assert(same(QpType::uc, IBV_QPT_UC));
static_assert(same(QpType::ud, IBV_QPT_UD));
static_assert(same(Mtu::mtu256, IBV_MTU_256));
static_assert(same(Mtu::mtu4096, IBV_MTU_4096));
static_assert(same(MigState::migrated, IBV_MIG_MIGRATED));
static_assert(same(MigState::armed, IBV_MIG_ARMED));

static_assert(same(kQpState, IBV_QP_STATE));
static_assert(same(kQpCurState, IBV_QP_CUR_STATE));
static_assert(same(kQpEnSqdAsyncNotify, IBV_QP_EN_SQD_ASYNC_NOTIFY));
static_assert(same(kQpAccessFlags, IBV_QP_ACCESS_FLAGS));
static_assert(same(kQpPkeyIndex, IBV_QP_PKEY_INDEX));
static_assert(same(kQpPort, IBV_QP_PORT));
static_assert(same(kQpQkey, IBV_QP_QKEY));
static_assert(same(kQpAv, IBV_QP_AV));
static_assert(same(kQpPathMtu, IBV_QP_PATH_MTU));
static_assert(same(kQpTimeout, IBV_QP_TIMEOUT));
static_assert(same(kQpRetryCnt, IBV_QP_RETRY_CNT));
static_assert(same(kQpRnrRetry, IBV_QP_RNR_RETRY));
static_assert(same(kQpRqPsn, IBV_QP_RQ_PSN));
static_assert(same(kQpMaxQpRdAtomic, IBV_QP_MAX_QP_RD_ATOMIC));
static_assert(same(kQpAltPath, IBV_QP_ALT_PATH));
static_assert(same(kQpMinRnrTimer, IBV_QP_MIN_RNR_TIMER));
static_assert(same(kQpSqPsn, IBV_QP_SQ_PSN));
static_assert(same(kQpMaxDestRdAtomic, IBV_QP_MAX_DEST_RD_ATOMIC));
static_assert(same(kQpPathMigState, IBV_QP_PATH_MIG_STATE));
static_assert(same(kQpCap, IBV_QP_CAP));
static_assert(same(kQpDestQpn, IBV_QP_DEST_QPN));
static_assert(same(kQpRateLimit, IBV_QP_RATE_LIMIT));

static_assert(same(WcStatus::success, IBV_WC_SUCCESS));
static_assert(same(WcStatus::loc_len_err, IBV_WC_LOC_LEN_ERR));
static_assert(same(WcStatus::loc_qp_op_err, IBV_WC_LOC_QP_OP_ERR));
static_assert(same(WcStatus::loc_eec_op_err, IBV_WC_LOC_EEC_OP_ERR));
static_assert(same(WcStatus::loc_prot_err, IBV_WC_LOC_PROT_ERR));
static_assert(same(WcStatus::wr_flush_err, IBV_WC_WR_FLUSH_ERR));
static_assert(same(WcStatus::mw_bind_err, IBV_WC_MW_BIND_ERR));
static_assert(same(WcStatus::bad_resp_err, IBV_WC_BAD_RESP_ERR));
static_assert(same(WcStatus::loc_access_err, IBV_WC_LOC_ACCESS_ERR));
static_assert(same(WcStatus::rem_inv_req_err, IBV_WC_REM_INV_REQ_ERR));
static_assert(same(WcStatus::rem_access_err, IBV_WC_REM_ACCESS_ERR));
static_assert(same(WcStatus::rem_op_err, IBV_WC_REM_OP_ERR));
static_assert(same(WcStatus::retry_exc_err, IBV_WC_RETRY_EXC_ERR));
static_assert(same(WcStatus::rnr_retry_exc_err, IBV_WC_RNR_RETRY_EXC_ERR));
static_assert(same(WcStatus::loc_rdd_viol_err, IBV_WC_LOC_RDD_VIOL_ERR));
static_assert(same(WcStatus::rem_inv_rd_req_err, IBV_WC_REM_INV_RD_REQ_ERR));
static_assert(same(WcStatus::rem_abort_err, IBV_WC_REM_ABORT_ERR));
static_assert(same(WcStatus::inv_eecn_err, IBV_WC_INV_EECN_ERR));
static_assert(same(WcStatus::inv_eec_state_err, IBV_WC_INV_EEC_STATE_ERR));
static_assert(same(WcStatus::fatal_err, IBV_WC_FATAL_ERR));
static_assert(same(WcStatus::resp_timeout_err, IBV_WC_RESP_TIMEOUT_ERR));
static_assert(same(WcStatus::general_err, IBV_WC_GENERAL_ERR));

static_assert(same(WcOpcode::send, IBV_WC_SEND));
static_assert(same(WcOpcode::rdma_write, IBV_WC_RDMA_WRITE));
static_assert(same(WcOpcode::rdma_read, IBV_WC_RDMA_READ));
static_assert(same(WcOpcode::comp_swap, IBV_WC_COMP_SWAP));
static_assert(same(WcOpcode::fetch_add, IBV_WC_FETCH_ADD));
static_assert(same(WcOpcode::recv, IBV_WC_RECV));
static_assert(same(WcOpcode::recv_rdma_with_imm, IBV_WC_RECV_RDMA_WITH_IMM));
static_assert(same(kWcGrh, IBV_WC_GRH));
static_assert(same(kWcWithImm, IBV_WC_WITH_IMM));
static_assert(same(kWcWithInv, IBV_WC_WITH_INV));

static_assert(same(AsyncEventType::cq_err, IBV_EVENT_CQ_ERR));
static_assert(same(AsyncEventType::qp_fatal, IBV_EVENT_QP_FATAL));
static_assert(same(AsyncEventType::qp_access_err, IBV_EVENT_QP_ACCESS_ERR));
static_assert(same(AsyncEventType::comm_est, IBV_EVENT_COMM_EST));
static_assert(same(AsyncEventType::sq_drained, IBV_EVENT_SQ_DRAINED));
static_assert(same(AsyncEventType::device_fatal, IBV_EVENT_DEVICE_FATAL));
static_assert(same(AsyncEventType::port_active, IBV_EVENT_PORT_ACTIVE));
static_assert(same(AsyncEventType::port_err, IBV_EVENT_PORT_ERR));
static_assert(same(AsyncEventType::srq_err, IBV_EVENT_SRQ_ERR));
static_assert(same(AsyncEventType::srq_limit_reached, IBV_EVENT_SRQ_LIMIT_REACHED));
static_assert(same(AsyncEventType::qp_last_wqe_reached, IBV_EVENT_QP_LAST_WQE_REACHED));
static_assert(same(AsyncEventType::gid_change, IBV_EVENT_GID_CHANGE));

}  // namespace
#endif

TEST_CASE("verbs value types match libibverbs", "[unit][verbs][abi]") {
#ifdef TBV_HAVE_IBVERBS_HEADER
    SUCCEED("checked at compile time against <infiniband/verbs.h>");
#else
    SUCCEED("libibverbs-dev not installed: nothing to compare against");
#endif
}
