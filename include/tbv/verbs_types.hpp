// SPDX-License-Identifier: Apache-2.0
// Verbs value types an application embeds: access flags, QP states/types/attribute masks, work
// completions and async event types. Layer 4 must not depend on rdma-core, so these are our own
// definitions; every numeric value equals the documented value of the matching libibverbs enum
// (<infiniband/verbs.h>, rdma-core 44), which test/unit/verbs_abi_test.cpp pins with static_asserts
// when libibverbs-dev is installed. The provider glue (layer 5) can therefore convert by value.
#pragma once

#include <array>
#include <cstdint>

namespace tbv::verbs {

// ---- memory access flags (enum ibv_access_flags) -----------------------------------------------

inline constexpr std::uint32_t kAccessLocalWrite = 1u << 0;    ///< IBV_ACCESS_LOCAL_WRITE
inline constexpr std::uint32_t kAccessRemoteWrite = 1u << 1;   ///< IBV_ACCESS_REMOTE_WRITE
inline constexpr std::uint32_t kAccessRemoteRead = 1u << 2;    ///< IBV_ACCESS_REMOTE_READ
inline constexpr std::uint32_t kAccessRemoteAtomic = 1u << 3;  ///< IBV_ACCESS_REMOTE_ATOMIC
/// Every flag an MR (or a QP's qp_access_flags) may carry here. Memory windows, zero-based,
/// on-demand paging, huge-page hints and the optional range (relaxed ordering) are not accepted by
/// layer 4; the provider glue strips IBV_ACCESS_OPTIONAL_RANGE before calling in, as libibverbs
/// allows for devices that do not support those bits.
inline constexpr std::uint32_t kAccessAll =
    kAccessLocalWrite | kAccessRemoteWrite | kAccessRemoteRead | kAccessRemoteAtomic;

// ---- QP states, types, MTU (enum ibv_qp_state, ibv_qp_type, ibv_mtu, ibv_mig_state) -----------

enum class QpState : std::uint8_t {
    reset = 0,
    init = 1,
    rtr = 2,
    rts = 3,
    sqd = 4,
    sqe = 5,
    err = 6
};
inline constexpr unsigned kQpStateCount = 7;

enum class QpType : std::uint8_t { rc = 2, uc = 3, ud = 4 };

enum class Mtu : std::uint8_t { mtu256 = 1, mtu512 = 2, mtu1024 = 3, mtu2048 = 4, mtu4096 = 5 };

constexpr std::uint32_t mtu_bytes(Mtu m) noexcept {
    return 128u << static_cast<unsigned>(m);
}

enum class MigState : std::uint8_t { migrated = 0, rearm = 1, armed = 2 };

// ---- modify-QP attribute mask (enum ibv_qp_attr_mask) -------------------------------------------

enum QpAttrMask : std::uint32_t {
    kQpState = 1u << 0,
    kQpCurState = 1u << 1,
    kQpEnSqdAsyncNotify = 1u << 2,
    kQpAccessFlags = 1u << 3,
    kQpPkeyIndex = 1u << 4,
    kQpPort = 1u << 5,
    kQpQkey = 1u << 6,
    kQpAv = 1u << 7,
    kQpPathMtu = 1u << 8,
    kQpTimeout = 1u << 9,
    kQpRetryCnt = 1u << 10,
    kQpRnrRetry = 1u << 11,
    kQpRqPsn = 1u << 12,
    kQpMaxQpRdAtomic = 1u << 13,
    kQpAltPath = 1u << 14,
    kQpMinRnrTimer = 1u << 15,
    kQpSqPsn = 1u << 16,
    kQpMaxDestRdAtomic = 1u << 17,
    kQpPathMigState = 1u << 18,
    kQpCap = 1u << 19,
    kQpDestQpn = 1u << 20,
    kQpRateLimit = 1u << 25,
};

/// A 128-bit GID (union ibv_gid, raw bytes in network order).
using Gid = std::array<std::uint8_t, 16>;

/// The address vector of a connected QP or an address handle (the fields of struct ibv_ah_attr
/// and ibv_global_route this transport uses).
struct AddressVector {
    Gid dgid{};
    std::uint32_t flow_label = 0;
    std::uint16_t dlid = 0;
    std::uint8_t sgid_index = 0;
    std::uint8_t hop_limit = 0;
    std::uint8_t traffic_class = 0;
    std::uint8_t sl = 0;
    std::uint8_t src_path_bits = 0;
    std::uint8_t static_rate = 0;
    std::uint8_t port_num = 0;
    bool is_global = false;
};

/// Queue sizes of a QP (struct ibv_qp_cap).
struct QpCaps {
    std::uint32_t max_send_wr = 0;
    std::uint32_t max_recv_wr = 0;
    std::uint32_t max_send_sge = 0;
    std::uint32_t max_recv_sge = 0;
    std::uint32_t max_inline_data = 0;
};

/// Attributes of ibv_modify_qp (struct ibv_qp_attr without the alternate path, which this device
/// does not offer: IBV_QP_ALT_PATH is refused).
struct QpAttr {
    QpState qp_state = QpState::reset;
    QpState cur_qp_state = QpState::reset;
    Mtu path_mtu = Mtu::mtu1024;
    MigState path_mig_state = MigState::migrated;
    std::uint32_t qkey = 0;
    std::uint32_t rq_psn = 0;
    std::uint32_t sq_psn = 0;
    std::uint32_t dest_qp_num = 0;
    std::uint32_t qp_access_flags = 0;
    QpCaps cap{};
    AddressVector ah_attr{};
    std::uint16_t pkey_index = 0;
    std::uint8_t en_sqd_async_notify = 0;
    std::uint8_t max_rd_atomic = 0;
    std::uint8_t max_dest_rd_atomic = 0;
    std::uint8_t min_rnr_timer = 0;
    std::uint8_t port_num = 0;
    std::uint8_t timeout = 0;
    std::uint8_t retry_cnt = 0;
    std::uint8_t rnr_retry = 0;
};

// ---- work requests (struct ibv_sge, ibv_send_wr, ibv_recv_wr; enum ibv_wr_opcode, ibv_send_flags)

enum class WrOpcode : std::uint8_t {
    rdma_write = 0,
    rdma_write_with_imm = 1,
    send = 2,
    send_with_imm = 3,
    rdma_read = 4,
    atomic_cmp_and_swp = 5,
    atomic_fetch_and_add = 6,
};
inline constexpr std::uint32_t kSendFence = 1u << 0;      ///< IBV_SEND_FENCE
inline constexpr std::uint32_t kSendSignaled = 1u << 1;   ///< IBV_SEND_SIGNALED
inline constexpr std::uint32_t kSendSolicited = 1u << 2;  ///< IBV_SEND_SOLICITED
inline constexpr std::uint32_t kSendInline = 1u << 3;     ///< IBV_SEND_INLINE
inline constexpr std::uint32_t kSendFlagsKnown =
    kSendFence | kSendSignaled | kSendSolicited | kSendInline;

struct Sge {
    std::uint64_t addr = 0;
    std::uint32_t length = 0;
    std::uint32_t lkey = 0;
};

class Ah;  // verbs/ah.hpp

/// One send work request (the fields of struct ibv_send_wr this transport uses). imm_data is in
/// network byte order, as in ibv_send_wr.
struct SendWr {
    std::uint64_t wr_id = 0;
    const SendWr* next = nullptr;
    const Sge* sg_list = nullptr;
    std::uint32_t num_sge = 0;
    WrOpcode opcode = WrOpcode::send;
    std::uint32_t send_flags = 0;
    std::uint32_t imm_data = 0;
    std::uint64_t remote_addr = 0;  ///< RDMA and atomics
    std::uint32_t rkey = 0;
    std::uint64_t compare_add = 0;  ///< atomics
    std::uint64_t swap = 0;
    Ah* ah = nullptr;  ///< UD
    std::uint32_t remote_qpn = 0;
    std::uint32_t remote_qkey = 0;
};

struct RecvWr {
    std::uint64_t wr_id = 0;
    const RecvWr* next = nullptr;
    const Sge* sg_list = nullptr;
    std::uint32_t num_sge = 0;
};

// ---- work completions (struct ibv_wc, enum ibv_wc_status, ibv_wc_opcode, ibv_wc_flags) ---------

enum class WcStatus : std::uint8_t {
    success = 0,
    loc_len_err = 1,
    loc_qp_op_err = 2,
    loc_eec_op_err = 3,
    loc_prot_err = 4,
    wr_flush_err = 5,
    mw_bind_err = 6,
    bad_resp_err = 7,
    loc_access_err = 8,
    rem_inv_req_err = 9,
    rem_access_err = 10,
    rem_op_err = 11,
    retry_exc_err = 12,
    rnr_retry_exc_err = 13,
    loc_rdd_viol_err = 14,
    rem_inv_rd_req_err = 15,
    rem_abort_err = 16,
    inv_eecn_err = 17,
    inv_eec_state_err = 18,
    fatal_err = 19,
    resp_timeout_err = 20,
    general_err = 21,
};

enum class WcOpcode : std::uint8_t {
    send = 0,
    rdma_write = 1,
    rdma_read = 2,
    comp_swap = 3,
    fetch_add = 4,
    recv = 128,
    recv_rdma_with_imm = 129,
};

inline constexpr std::uint32_t kWcGrh = 1u << 0;      ///< IBV_WC_GRH
inline constexpr std::uint32_t kWcWithImm = 1u << 1;  ///< IBV_WC_WITH_IMM
inline constexpr std::uint32_t kWcWithInv = 1u << 3;  ///< IBV_WC_WITH_INV

/// One work completion (the fields of struct ibv_wc). imm_data is kept in network byte order, as
/// ibv_wc carries it.
struct Wc {
    std::uint64_t wr_id = 0;
    WcStatus status = WcStatus::success;
    WcOpcode opcode = WcOpcode::send;
    std::uint32_t vendor_err = 0;
    std::uint32_t byte_len = 0;
    std::uint32_t imm_data = 0;
    std::uint32_t qp_num = 0;
    std::uint32_t src_qp = 0;
    std::uint32_t wc_flags = 0;
    std::uint16_t pkey_index = 0;
    std::uint16_t slid = 0;
    std::uint8_t sl = 0;
    std::uint8_t dlid_path_bits = 0;
};

// ---- asynchronous events (enum ibv_event_type) --------------------------------------------------

enum class AsyncEventType : std::uint8_t {
    cq_err = 0,
    qp_fatal = 1,
    qp_req_err = 2,
    qp_access_err = 3,
    comm_est = 4,
    sq_drained = 5,
    path_mig = 6,
    path_mig_err = 7,
    device_fatal = 8,
    port_active = 9,
    port_err = 10,
    lid_change = 11,
    pkey_change = 12,
    sm_change = 13,
    srq_err = 14,
    srq_limit_reached = 15,
    qp_last_wqe_reached = 16,
    client_reregister = 17,
    gid_change = 18,
};

}  // namespace tbv::verbs
