// SPDX-License-Identifier: Apache-2.0
// Interrupts of a VFIO PCI function delivered to eventfds: MSI-X (one eventfd per vector), MSI
// and INTx as fallbacks for functions without MSI-X.
#pragma once

#include <cstdint>
#include <vector>

#include "tbv/result.hpp"
#include "vfio/unique_fd.hpp"

namespace tbv::vfio {

enum class IrqKind { none, intx, msi, msix };

const char* irq_kind_name(IrqKind k) noexcept;

/// VFIO irq index of a kind (VFIO_PCI_MSIX_IRQ_INDEX ...).
std::uint32_t irq_index(IrqKind k) noexcept;

/// Vectors the function offers for `k` (0 if none or on error).
unsigned irq_count(int device_fd, IrqKind k) noexcept;

/// The best kind the function offers: MSI-X, else MSI, else INTx, else none.
IrqKind best_irq_kind(int device_fd) noexcept;

/// Creates `count` eventfds and wires them to vectors 0..count-1 of `k`.
Result<std::vector<UniqueFd>> irq_enable(int device_fd, IrqKind k, unsigned count);
/// Tears the trigger down (the eventfds can be closed afterwards).
void irq_disable(int device_fd, IrqKind k) noexcept;
/// INTx is masked by the kernel when it fires; unmask after handling it.
Result<void> intx_unmask(int device_fd);

}  // namespace tbv::vfio
