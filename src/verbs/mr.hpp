// SPDX-License-Identifier: Apache-2.0
// Memory regions: registration (pin + one IOMMU mapping), deregistration (unmap before return) and
// the access checks every work request and every incoming frame goes through.
//
// Pinning. Registration maps the page-aligned span covering [addr, addr+len) with
// hw::Device::dma_map exactly once; no I/O ever maps anything. On VFIO that mapping is what pins
// the pages (VFIO_IOMMU_MAP_DMA takes page references for the lifetime of the mapping), so the
// kernel can neither move nor reclaim them while the NHI may reach them. The emulator's IOMMU is a
// model: it records host pointers and faults on IOVAs it was not given, but pins nothing; there
// the memory stays valid because the application owns it until ibv_dereg_mr returns, which is the
// verbs contract anyway. Deregistration unmaps before it returns and reports an unmap failure (the
// MR then stays registered: the device may still reach the memory, so the caller must not free it).
//
// Decisions, with the reasons:
//  * Length 0 is accepted (IB allows it, and applications register empty buffers): such an MR gets
//    valid keys but no mapping; only a zero-length access at exactly its address is in bounds.
//  * Remote write or remote atomic without local write is EINVAL (IB spec, ibv_reg_mr(3)).
//  * Deregistering an MR that a pending work request or a bound object still references returns
//    EBUSY and changes nothing (as ibv_dereg_mr does for bound memory windows): freeing it under an
//    in-flight DMA or copy would hand the device or the progress engine freed memory. References
//    are taken when a WR is posted and dropped when it completes or is flushed, so the application
//    can retry after polling its CQ (a QP moved to ERR flushes everything).
//  * A zero-length remote access is allowed without looking at the R_Key (the IB spec does not
//    require a valid R_Key for a zero-length RDMA operation, and nothing is touched). Local
//    zero-length SGEs still need a valid L_Key of the same PD (stricter; a local mistake).
//  * The MR's address space is the application's virtual addresses (ibv_reg_mr: iova == addr).
//
// Threading: not synchronised. The device context serialises registration with the progress
// engine's lookups (a lock held by the control path and per progress batch); refcounts are
// atomic so that completion paths on another thread can drop them.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "hw/device.hpp"
#include "tbv/result.hpp"
#include "tbv/verbs_types.hpp"
#include "verbs/keys.hpp"
#include "verbs/limits.hpp"
#include "verbs/pd.hpp"

namespace tbv::verbs {

class Mr {
public:
    Mr(const Mr&) = delete;
    Mr& operator=(const Mr&) = delete;

    std::uint64_t addr() const noexcept { return addr_; }
    std::uint64_t length() const noexcept { return length_; }
    std::uint32_t access() const noexcept { return access_; }
    std::uint32_t lkey() const noexcept { return keys_.lkey; }
    std::uint32_t rkey() const noexcept { return keys_.rkey; }
    const Pd& pd() const noexcept { return *pd_; }

    /// IOVA the device uses for the byte at virtual address va (va inside the MR).
    hw::Iova iova_at(std::uint64_t va) const noexcept { return map_iova_ + (va - map_base_); }

    /// A pending WR or a bound object starts / stops referencing the MR (hot path safe).
    void acquire() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
    void release() noexcept { refs_.fetch_sub(1, std::memory_order_acq_rel); }
    std::uint32_t refs() const noexcept { return refs_.load(std::memory_order_acquire); }

private:
    friend class MrTable;
    Mr() = default;

    Pd* pd_ = nullptr;
    std::uint64_t addr_ = 0;
    std::uint64_t length_ = 0;
    std::uint32_t access_ = 0;
    KeyPair keys_{};
    std::uint64_t map_base_ = 0;  ///< page-aligned start of the mapping
    std::size_t map_len_ = 0;     ///< 0: nothing mapped (length-0 MR)
    hw::Iova map_iova_ = 0;
    std::atomic<std::uint32_t> refs_{0};
};

/// Why an access was refused. The transport maps every fault of an incoming request to a remote
/// access error (NAK) and counts it by reason; a local fault becomes IBV_WC_LOC_PROT_ERR.
enum class AccessFault : std::uint8_t {
    none = 0,
    bad_key,        ///< no MR with that key (never existed, deregistered, or another table's)
    wrong_pd,       ///< the MR belongs to another protection domain
    no_permission,  ///< the MR lacks the access flag the operation needs
    out_of_bounds,  ///< [va, va+len) is not inside the MR (overflow-checked)
};

/// Where an access lands once checked.
struct AccessTarget {
    Mr* mr = nullptr;           ///< nullptr only for a zero-length remote access
    std::byte* host = nullptr;  ///< host address of va (for CPU copies in the emulator path)
    hw::Iova iova = 0;          ///< device address of va (for descriptors)
};

/// The result of an access check (hot path: no error_code, no allocation; style.md B5).
struct AccessCheck {
    AccessFault fault = AccessFault::none;
    AccessTarget target{};
    explicit operator bool() const noexcept { return fault == AccessFault::none; }
};

/// All MRs of one device context: the key table plus the MR objects behind its slots.
class MrTable {
public:
    /// Capacity is limits.max_mr; keys are seeded from getrandom(2).
    static Result<std::unique_ptr<MrTable>> create(hw::Device& dev, const DeviceLimits& limits);
    /// Same with a given key secret (tests).
    static Result<std::unique_ptr<MrTable>> create(hw::Device& dev, const DeviceLimits& limits,
                                                   const KeySecret& secret);

    MrTable(const MrTable&) = delete;
    MrTable& operator=(const MrTable&) = delete;
    /// Unmaps whatever is still registered (errors ignored: the context is going away).
    ~MrTable();

    /// ibv_reg_mr: EINVAL for unknown access bits, remote write/atomic without local write, a null
    /// address with a length, a range that wraps the address space or exceeds max_mr_size; ENOMEM
    /// when max_mr MRs exist; a dma_map error as it comes.
    Result<Mr*> reg_mr(Pd& pd, void* addr, std::size_t length, std::uint32_t access);
    /// ibv_dereg_mr: EBUSY while referenced; the unmap error if the device mapping could not be
    /// removed (the MR then stays registered). On success `mr` is gone.
    Result<void> dereg_mr(Mr& mr);

    /// Checks an incoming request: R_Key current, MR in the QP's PD, the MR grants `needed`
    /// (exactly one of kAccessRemoteWrite / Read / Atomic), [va, va+len) inside the MR.
    AccessCheck check_remote(std::uint32_t rkey, const Pd& pd, std::uint64_t va, std::uint64_t len,
                             std::uint32_t needed) const noexcept;
    /// Checks a local SGE: L_Key current, same PD, kAccessLocalWrite when the device writes
    /// (receive, READ/atomic destination; pass 0 for a send source), [addr, addr+len) inside.
    AccessCheck check_local(std::uint32_t lkey, const Pd& pd, std::uint64_t addr, std::uint64_t len,
                            std::uint32_t needed) const noexcept;

    std::uint32_t count() const noexcept { return keys_.in_use(); }

private:
    MrTable(hw::Device& dev, const DeviceLimits& limits, KeyTable keys);
    AccessCheck check(std::uint32_t slot, const Pd& pd, std::uint64_t va, std::uint64_t len,
                      std::uint32_t needed) const noexcept;

    hw::Device& dev_;
    DeviceLimits limits_;
    KeyTable keys_;
    std::vector<std::unique_ptr<Mr>> mrs_;  ///< by key slot
};

}  // namespace tbv::verbs
