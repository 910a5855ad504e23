// SPDX-License-Identifier: Apache-2.0
// Device limits: the one set of numbers layer 4 both reports (ibv_query_device / ibv_query_port)
// and enforces. Every validation in src/verbs reads them from here, so what an application is told
// and what it gets can never drift apart.
#pragma once

#include <cstdint>

#include "tbv/verbs_types.hpp"

namespace tbv::verbs {

struct DeviceLimits {
    std::uint64_t max_mr_size = 1ull << 40;  ///< bytes in one MR (the IOMMU maps it in one go)
    std::uint32_t max_qp = 1024;
    std::uint32_t max_qp_wr = 8192;  ///< per send or receive queue
    std::uint32_t max_sge = 16;      ///< per send or receive WR (issue 5 asks for ≥ 8)
    std::uint32_t max_sge_rd = 16;   ///< per RDMA READ WR
    std::uint32_t max_cq = 1024;
    std::uint32_t max_cqe = 65536;  ///< entries in one CQ
    std::uint32_t max_mr = 65536;   ///< also the key-table capacity (keys.hpp)
    std::uint32_t max_pd = 1024;
    std::uint32_t max_qp_rd_atom = 16;       ///< responder resources per QP (max_dest_rd_atomic)
    std::uint32_t max_qp_init_rd_atom = 16;  ///< outstanding READ/atomic per QP (max_rd_atomic)
    std::uint32_t max_inline = 512;          ///< bytes of inline data per send WR
    std::uint32_t max_srq = 1024;
    std::uint32_t max_srq_wr = 8192;
    std::uint32_t max_srq_sge = 16;
    std::uint32_t max_ah = 4096;
    std::uint16_t max_pkeys = 1;  ///< pkey_index must be 0 (the default P_Key only)
    std::uint8_t phys_port_cnt = 1;
    /// Largest path MTU accepted in modify_qp (the transport segments a 4096-byte MTU over frames
    /// of at most 4096 bytes including its header).
    Mtu max_path_mtu = Mtu::mtu4096;
};

/// The limits of the device as built. Tests build smaller ones to reach the edges quickly.
inline constexpr DeviceLimits kDefaultLimits{};

}  // namespace tbv::verbs
