// SPDX-License-Identifier: Apache-2.0
// Layer 0: one interface for "a PCI function". vfio/ implements it on the real kernel interfaces,
// src/emu/ implements it with a software NHI. Everything above (src/nhi and up) sees only this.
//
// Contract, shared by every implementation and pinned by test/support/device_conformance.hpp:
//  * BAR0 is accessed in aligned 32-bit units. Reads outside BAR0 or unaligned return all-ones
//    and writes there are ignored, as a master-abort would on PCI. All-ones from a register that
//    cannot hold that value is how callers detect a device that left the bus.
//  * dma_map() takes page-aligned host memory and returns an IOVA, the only address the device may
//    use. DmaAccess is from the device's point of view: Read = the device may read the memory
//    (TX buffers, descriptors), Write = it may write it (RX buffers). Mappings persist across
//    reset(); dma_unmap() must name exactly a range returned by dma_map(). IOVAs are page aligned.
//  * No DMA happens while bus mastering is off. reset() returns the function to its power-on
//    register state and leaves bus mastering off; callers enable it again.
//  * Interrupts are MSI-X vectors delivered to eventfds owned by the device object. They survive
//    reset(); re-arming with another count or disabling closes the old eventfds, so a waiter must
//    stop watching them first (the number may be reused by the next open()).
//  * A device that left the bus reads all-ones; reset() and set_bus_master(true) then fail with
//    Errc::device_gone, while dma_unmap() still succeeds so memory can be released.
//  * poll() gives a software device a chance to run work that arrived from outside (a frame from a
//    cable in another process); on hardware it does nothing. It never completes work the driver
//    has not handed over with a doorbell.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "tbv/result.hpp"

namespace tbv::hw {

using Iova = std::uint64_t;

/// DMA direction from the device's point of view.
enum class DmaAccess : std::uint8_t {
    read = 1,        ///< device reads host memory (TX buffers, descriptor arrays)
    write = 2,       ///< device writes host memory
    read_write = 3,  ///< descriptor arrays (device reads descriptors and writes DONE back)
};

constexpr bool allows(DmaAccess granted, DmaAccess wanted) noexcept {
    return (static_cast<unsigned>(granted) & static_cast<unsigned>(wanted)) ==
           static_cast<unsigned>(wanted);
}

/// PCI identity of the function (config space 0x00, 0x08, 0x2c).
struct PciIdentity {
    std::uint16_t vendor = 0;
    std::uint16_t device = 0;
    std::uint32_t class_code = 0;  ///< 24-bit base class, subclass, prog-if (USB4 NHI: 0x0c0340)
    std::uint8_t revision = 0;
    std::uint16_t subsystem_vendor = 0;
    std::uint16_t subsystem_device = 0;
};

/// The PCI class of a USB4 host interface (nhi-reference §1.1).
inline constexpr std::uint32_t kClassUsb4Nhi = 0x0c0340;

/// Page size the DMA interface requires for alignment of addresses and lengths.
inline constexpr std::size_t kDmaPageSize = 4096;

class Device {
public:
    Device() = default;
    Device(const Device&) = delete;
    Device& operator=(const Device&) = delete;
    virtual ~Device() = default;

    /// Stable human-readable name: a PCI address ("0000:c4:00.5") or an emulator name.
    virtual const std::string& name() const noexcept = 0;
    virtual PciIdentity identity() const noexcept = 0;
    virtual std::size_t bar0_size() const noexcept = 0;

    /// 32-bit BAR0 register access (hot path: doorbells). See the contract above.
    virtual std::uint32_t read32(std::uint32_t offset) noexcept = 0;
    virtual void write32(std::uint32_t offset, std::uint32_t value) noexcept = 0;

    /// Maps [addr, addr+len) for device access and returns its IOVA. addr and len must be multiples
    /// of kDmaPageSize and len > 0 (EINVAL otherwise).
    virtual Result<Iova> dma_map(void* addr, std::size_t len, DmaAccess access) = 0;
    /// Unmaps a range returned by dma_map (ENOENT if it is not one). After return the device can no
    /// longer reach the memory.
    virtual Result<void> dma_unmap(Iova iova, std::size_t len) = 0;

    virtual Result<void> set_bus_master(bool enable) = 0;
    virtual bool bus_master() const noexcept = 0;

    /// Number of MSI-X vectors the function offers.
    virtual unsigned irq_vector_count() const noexcept = 0;
    /// Enables `count` vectors (1 ≤ count ≤ irq_vector_count(), EINVAL otherwise), each signalling
    /// its own eventfd. Calling again with another count re-arms with fresh eventfds.
    virtual Result<void> enable_irqs(unsigned count) = 0;
    virtual void disable_irqs() noexcept = 0;
    /// Eventfd of an enabled vector, or -1.
    virtual int irq_eventfd(unsigned vector) const noexcept = 0;

    /// Function-level reset (see contract).
    virtual Result<void> reset() = 0;

    /// Lets a software device run work that arrived from outside; no-op on hardware.
    virtual void poll() noexcept {}
};

}  // namespace tbv::hw
