// SPDX-License-Identifier: Apache-2.0
// Iommu: the emulated NHI's view of host memory. The device model reads and writes host memory
// only through this translation, so a driver that hands the device a virtual address, an unmapped
// IOVA, or a buffer mapped without the needed permission gets a fault, as VFIO type1 would give
// (DESIGN.md "The emulator is the second device"; ref §11 "IOMMU").
//
// IOVAs come from the model's own space, starting at 4 GiB, never from the host virtual address,
// so VA == IOVA can never hold by accident. Each mapping is followed by an unmapped guard gap and
// addresses are never reused, so a device access that runs past a mapping's end, or through a
// stale IOVA after dma_unmap(), faults instead of reaching a neighbour.
//
// Thread safety: map/unmap take the lock exclusively; device accesses take it shared for the whole
// copy, so once unmap() returns no device access into that memory is still in progress (the
// Device contract: "after return the device can no longer reach the memory"). A DMA engine that
// handles a batch of descriptors holds one Access for the batch instead of locking per access:
// the shared lock is an atomic read-modify-write on a line every engine of the NHI shares, and per
// access it was the largest cost of a frame.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <shared_mutex>

#include "hw/device.hpp"
#include "tbv/result.hpp"

namespace tbv::emu {

/// One access the IOMMU refused: what the device tried, on which ring.
struct IommuFault {
    hw::Iova iova = 0;
    std::size_t len = 0;
    hw::DmaAccess access = hw::DmaAccess::read;
    bool tx = false;    ///< the TX engine (else RX)
    unsigned ring = 0;  ///< ring whose engine faulted
};

class Iommu {
public:
    /// First IOVA handed out: above the 32-bit hole so a truncated address is also a fault.
    static constexpr hw::Iova kIovaBase = 0x1'0000'0000;
    /// Unmapped gap after every mapping (16 pages): overruns fault instead of hitting a neighbour.
    static constexpr std::size_t kGuardGap = 16 * hw::kDmaPageSize;
    /// End of the IOVA space (48-bit, what x86 IOMMUs and VFIO type1 commonly report).
    static constexpr hw::Iova kIovaLimit = hw::Iova{1} << 48;

    Iommu() = default;
    Iommu(const Iommu&) = delete;
    Iommu& operator=(const Iommu&) = delete;

    /// Maps [addr, addr+len) with `access`. EINVAL for an unaligned address or length or len 0;
    /// ENOMEM when the IOVA space is exhausted.
    Result<hw::Iova> map(void* addr, std::size_t len, hw::DmaAccess access);
    /// Removes the mapping that starts at `iova` with exactly `len` bytes (ENOENT otherwise).
    Result<void> unmap(hw::Iova iova, std::size_t len);

    /// Host address of [iova, iova+len) if the whole range lies inside one mapping that grants
    /// `access`; nullptr otherwise. The pointer is valid only until the mapping is removed: the
    /// device model uses with_range(), which holds the mapping for the duration of the access.
    std::byte* translate(hw::Iova iova, std::size_t len, hw::DmaAccess access) const noexcept;

    /// Runs fn(std::byte* host) with [iova, iova+len) translated and pinned against a concurrent
    /// unmap. Returns false, without calling fn, if translate() would fail.
    template <typename Fn>
    bool with_range(hw::Iova iova, std::size_t len, hw::DmaAccess access, Fn&& fn) const {
        std::shared_lock lk(mu_);
        std::byte* host = translate_locked(iova, len, access);
        if (host == nullptr) {
            return false;
        }
        fn(host);
        return true;
    }

    /// The mappings held (shared) for a batch of device accesses: no unmap() returns while an
    /// Access lives, so the pointers its translate() returns stay valid until it is destroyed.
    /// Keep it short: no call into another NHI, router or cable while it is held.
    class Access {
    public:
        explicit Access(const Iommu& mmu) : mmu_(mmu), lk_(mmu.mu_) {}
        Access(const Access&) = delete;
        Access& operator=(const Access&) = delete;
        /// As Iommu::translate(), under this access's lock.
        std::byte* translate(hw::Iova iova, std::size_t len, hw::DmaAccess access) const noexcept {
            return mmu_.translate_locked(iova, len, access);
        }

    private:
        const Iommu& mmu_;
        std::shared_lock<std::shared_mutex> lk_;
    };

    std::size_t mapping_count() const;

private:
    struct Mapping {
        std::byte* host;
        std::size_t len;
        hw::DmaAccess access;
    };

    std::byte* translate_locked(hw::Iova iova, std::size_t len,
                                hw::DmaAccess access) const noexcept;

    mutable std::shared_mutex mu_;
    std::map<hw::Iova, Mapping> maps_;  ///< keyed by first IOVA
    hw::Iova next_ = kIovaBase;         ///< bump allocator: IOVAs are never reused
};

}  // namespace tbv::emu
