// SPDX-License-Identifier: Apache-2.0
// USB4 NHI (host interface) BAR0 register map and ring descriptor: hardware facts shared by the
// ring driver (src/nhi) and the software model (src/emu). One source of truth; every value cites
// ../shared/docs/hardware/nhi-reference.md ("ref §x") and Linux drivers/thunderbolt/nhi_regs.h.
// Names keep Linux's spelling so they can be grepped there.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "util/field.hpp"

namespace tbv::hw::nhi {

using util::Bit;
using util::Field;

// ---- ref §2.1: register blocks --------------------------------------------------------------

inline constexpr std::uint32_t REG_TX_RING_BASE = 0x00000;      ///< 16 B per ring
inline constexpr std::uint32_t REG_RX_RING_BASE = 0x08000;      ///< 16 B per ring
inline constexpr std::uint32_t REG_TX_OPTIONS_BASE = 0x19800;   ///< 32 B per ring
inline constexpr std::uint32_t REG_RX_OPTIONS_BASE = 0x29800;   ///< 32 B per ring
inline constexpr std::uint32_t REG_RING_NOTIFY_BASE = 0x37800;  ///< status: TX | RX | RX overflow
inline constexpr std::uint32_t REG_RING_INT_CLEAR = 0x37808;    ///< W1C status (non-auto-clear)
inline constexpr std::uint32_t REG_RING_INTERRUPT_BASE = 0x38200;             ///< enable bitmap
inline constexpr std::uint32_t REG_RING_INTERRUPT_MASK_CLEAR_BASE = 0x38208;  ///< write 1 = disable
inline constexpr std::uint32_t REG_INT_THROTTLING_RATE = 0x38c00;  ///< 1 dword per MSI-X vector
inline constexpr std::uint32_t REG_INT_VEC_ALLOC_BASE = 0x38c40;   ///< 4-bit vector per ring irq
inline constexpr std::uint32_t REG_CAPS = 0x39640;
inline constexpr std::uint32_t REG_DMA_MISC = 0x39864;
inline constexpr std::uint32_t REG_RESET = 0x39898;
inline constexpr std::uint32_t REG_INMAIL_DATA = 0x39900;
inline constexpr std::uint32_t REG_INMAIL_CMD = 0x39904;
inline constexpr std::uint32_t REG_OUTMAIL_CMD = 0x3990c;
inline constexpr std::uint32_t REG_FW_STS = 0x39944;

/// Minimum BAR0 size that holds every register above (ref §1.3: AMD exposes 512 KiB).
inline constexpr std::size_t kBar0Size = 512 * 1024;
/// MSI-X vectors a USB4 NHI offers (ref §1.3: Linux asks for up to 16).
inline constexpr unsigned kMaxMsixVectors = 16;
/// Throttle register unit (ref §2.1: 256 ns units).
inline constexpr std::uint32_t kThrottleUnitNs = 256;

// ---- ref §2.1 REG_CAPS ----------------------------------------------------------------------
/// Hop (ring) count H. Linux masks 10 bits though its header comment says 11 (ref §13.8).
using CAPS_HOP_COUNT = Field<9, 0>;
/// NHI version: 0x40 and above is a USB4 v2 NHI with host-router reset (ref §2.7).
using CAPS_VERSION = Field<23, 16>;
inline constexpr std::uint32_t kCapsVersionV2 = 0x40;

// ---- ref §2.1 REG_DMA_MISC, §1.4, §10 -------------------------------------------------------
/// Intel: status bits clear themselves when the MSI-X message is sent.
using DMA_MISC_INT_AUTO_CLEAR = Bit<2>;
/// Others (AMD): status bits stay until written to REG_RING_INT_CLEAR.
using DMA_MISC_DISABLE_AUTO_CLEAR = Bit<17>;

// ---- ref §2.7 REG_RESET ---------------------------------------------------------------------
using RESET_HRR = Bit<0>;

// ---- ref §2.6 mailbox / firmware status ------------------------------------------------------
using INMAIL_CMD_CMD = Field<7, 0>;
using INMAIL_CMD_ERROR = Bit<30>;
using INMAIL_CMD_OP_REQUEST = Bit<31>;
using OUTMAIL_CMD_OPMODE = Field<11, 8>;
using FW_STS_ICM_EN = Bit<0>;
using FW_STS_ICM_EN_INVERT = Bit<1>;
using FW_STS_ICM_EN_CPU = Bit<2>;

// ---- ref §2.2: per-ring descriptor registers -------------------------------------------------

constexpr std::uint32_t tx_ring_reg(unsigned ring) noexcept {
    return REG_TX_RING_BASE + ring * 16u;
}
constexpr std::uint32_t rx_ring_reg(unsigned ring) noexcept {
    return REG_RX_RING_BASE + ring * 16u;
}
inline constexpr std::uint32_t RING_BASE_LO = 0x0;  ///< descriptor array IOVA [31:0]
inline constexpr std::uint32_t RING_BASE_HI = 0x4;  ///< descriptor array IOVA [63:32]
inline constexpr std::uint32_t RING_INDEX = 0x8;    ///< producer/consumer halves, see below
inline constexpr std::uint32_t RING_SIZE = 0xc;     ///< descriptor count (+ RX buffer size)

/// TX RING_INDEX: [15:0] consumer, written by hardware (read-only to software); [31:16] producer,
/// written by software.
using TX_INDEX_HW_CONS = Field<15, 0>;
using TX_INDEX_SW_PROD = Field<31, 16>;
/// RX RING_INDEX: [15:0] first slot not yet given to hardware, written by software; [31:16]
/// written by hardware (next slot it will fill).
using RX_INDEX_SW_PROD = Field<15, 0>;
using RX_INDEX_HW_CONS = Field<31, 16>;
/// RING_SIZE: [15:0] descriptor count; RX [31:16] buffer size (0 = 4096 in frame mode; Linux
/// writes 256 in raw mode).
using RING_SIZE_COUNT = Field<15, 0>;
using RX_SIZE_BUFFER = Field<31, 16>;

// ---- ref §2.3: ring options ------------------------------------------------------------------

constexpr std::uint32_t tx_options_reg(unsigned ring) noexcept {
    return REG_TX_OPTIONS_BASE + ring * 32u;
}
constexpr std::uint32_t rx_options_reg(unsigned ring) noexcept {
    return REG_RX_OPTIONS_BASE + ring * 32u;
}
inline constexpr std::uint32_t OPTS_FLAGS = 0x0;
inline constexpr std::uint32_t OPTS_PDF = 0x4;  ///< RX: SOF/EOF PDF masks; TX: write 0

using RING_FLAG_ENABLE = Bit<31>;
using RING_FLAG_RAW = Bit<30>;
using RING_FLAG_NO_SNOOP = Bit<29>;
using RING_FLAG_E2E = Bit<28>;
using RING_FLAG_ISOCH = Bit<27>;
/// RX only: TX HopID that carries E2E credit grants back (used with RING_FLAG_E2E).
using RX_FLAG_E2E_HOP = Field<22, 12>;
/// RX OPTS_PDF: bit n set ⇒ PDF n starts (SOF) / ends (EOF) a frame. Ignored in raw mode.
using RX_PDF_SOF_MASK = Field<31, 16>;
using RX_PDF_EOF_MASK = Field<15, 0>;

// ---- ref §2.4: interrupt status / enable bit numbering -----------------------------------------

/// Bit index of ring `ring`'s event in NOTIFY (kinds 0..2) and ENABLE/MASK_CLEAR (kinds 0..1).
enum class IrqKind : unsigned { tx = 0, rx = 1, rx_overflow = 2 };

constexpr unsigned irq_bit(IrqKind kind, unsigned ring, unsigned hop_count) noexcept {
    return static_cast<unsigned>(kind) * hop_count + ring;
}
/// Register holding bit `bit` of a bitmap that starts at `base`.
constexpr std::uint32_t bitmap_reg(std::uint32_t base, unsigned bit) noexcept {
    return base + 4u * (bit / 32u);
}
constexpr std::uint32_t bitmap_mask(unsigned bit) noexcept {
    return 1u << (bit % 32u);
}
/// Number of NOTIFY dwords (three bitmaps of H bits).
constexpr unsigned notify_dwords(unsigned hop_count) noexcept {
    return (3u * hop_count + 31u) / 32u;
}
/// Number of ENABLE dwords (two bitmaps of H bits).
constexpr unsigned enable_dwords(unsigned hop_count) noexcept {
    return (2u * hop_count + 31u) / 32u;
}
/// NOTIFY (0x37800) and INT_CLEAR (0x37808) overlap unless 3H ≤ 64 (ref §2.4 note): above this
/// count the W1C clear register cannot be used and status is clear-on-read only.
inline constexpr unsigned kMaxHopCountW1C = 21;
/// ENABLE (0x38200) and MASK_CLEAR (0x38208) overlap unless 2H ≤ 64.
inline constexpr unsigned kMaxHopCountMaskClear = 32;

// ---- ref §2.5: MSI-X vector allocation ---------------------------------------------------------

/// Number of vector-allocation dwords (2H nibbles, 8 per dword).
constexpr unsigned vec_alloc_dwords(unsigned hop_count) noexcept {
    return (2u * hop_count + 7u) / 8u;
}
constexpr std::uint32_t vec_alloc_reg(unsigned irq_index) noexcept {
    return REG_INT_VEC_ALLOC_BASE + 4u * (irq_index / 8u);
}
constexpr unsigned vec_alloc_shift(unsigned irq_index) noexcept {
    return 4u * (irq_index % 8u);
}
inline constexpr std::uint32_t kVecAllocMask = 0xf;

constexpr std::uint32_t throttle_reg(unsigned vector) noexcept {
    return REG_INT_THROTTLING_RATE + 4u * vector;
}

// ---- ref §3: ring descriptor -------------------------------------------------------------------

/// 16-byte descriptor, little-endian in host memory. `ctl` is the word software and hardware hand
/// back and forth; it is accessed through std::atomic_ref with release/acquire order.
struct alignas(16) RingDesc {
    std::uint64_t phys;  ///< buffer IOVA (LE)
    std::uint32_t ctl;   ///< length / EOF / SOF / flags (LE)
    std::uint32_t time;  ///< TX: write 0
};
static_assert(sizeof(RingDesc) == 16);
static_assert(offsetof(RingDesc, phys) == 0);
static_assert(offsetof(RingDesc, ctl) == 8);
static_assert(offsetof(RingDesc, time) == 12);
static_assert(std::is_trivially_copyable_v<RingDesc> && std::is_standard_layout_v<RingDesc>);

using DESC_LENGTH = Field<11, 0>;  ///< bytes; 0 means 4096 (frame mode)
using DESC_EOF_PDF = Field<15, 12>;
using DESC_SOF_PDF = Field<19, 16>;
using DESC_FLAGS = Field<31, 20>;

/// Flag bits in their absolute positions of `ctl` (ref §3 flag table).
using DESC_ISOCH = Bit<20>;           ///< TX only, unused
using DESC_CRC_ERROR = Bit<20>;       ///< RX write-back, frame mode
using DESC_DONE = Bit<21>;            ///< written by hardware
using DESC_POSTED = Bit<22>;          ///< set by software when posting
using DESC_BUFFER_OVERRUN = Bit<22>;  ///< RX write-back: frame larger than the buffer
using DESC_INTERRUPT = Bit<23>;       ///< raise the ring's status bit on completion

/// Largest frame one descriptor moves (12-bit length, 0 = 4096).
inline constexpr std::size_t kMaxFrameSize = 4096;
/// Raw-mode (control) packet buffer size incl. the 4-byte CRC (TB_FRAME_SIZE, ref §3).
inline constexpr std::size_t kRawFrameSize = 256;
/// Largest ring the 16-bit index and count fields can describe.
inline constexpr unsigned kMaxRingSize = 0xffff;

constexpr std::size_t desc_length_bytes(std::uint32_t ctl) noexcept {
    const std::uint32_t len = DESC_LENGTH::get(ctl);
    return len == 0 ? kMaxFrameSize : len;
}

// A few values from the reference, pinned so a typo cannot slip in.
static_assert(tx_ring_reg(2) == 0x20);
static_assert(rx_options_reg(1) == 0x29820);
static_assert(irq_bit(IrqKind::rx, 0, 3) == 3);  // ref §2.4: AMD H=3 enabling ctl RX sets bit 3
static_assert(irq_bit(IrqKind::rx, 0, 12) == 12);
static_assert(vec_alloc_reg(9) == 0x38c44 && vec_alloc_shift(9) == 4);

}  // namespace tbv::hw::nhi
