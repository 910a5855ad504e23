// SPDX-License-Identifier: Apache-2.0
// VFIO_DEVICE_GET_IRQ_INFO / VFIO_DEVICE_SET_IRQS with eventfd triggers (irqs.hpp).
#include "vfio/irqs.hpp"

#include <sys/eventfd.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

#include "vfio/error.hpp"
#include "vfio/uapi.hpp"

namespace tbv::vfio {

const char* irq_kind_name(IrqKind k) noexcept {
    switch (k) {
        case IrqKind::msix: return "MSI-X";
        case IrqKind::msi: return "MSI";
        case IrqKind::intx: return "INTx";
        case IrqKind::none: break;
    }
    return "none";
}

std::uint32_t irq_index(IrqKind k) noexcept {
    switch (k) {
        case IrqKind::msix: return VFIO_PCI_MSIX_IRQ_INDEX;
        case IrqKind::msi: return VFIO_PCI_MSI_IRQ_INDEX;
        case IrqKind::intx:
        case IrqKind::none: break;
    }
    return VFIO_PCI_INTX_IRQ_INDEX;
}

unsigned irq_count(int device_fd, IrqKind k) noexcept {
    if (k == IrqKind::none) {
        return 0;
    }
    vfio_irq_info info{};
    info.argsz = sizeof(info);
    info.index = irq_index(k);
    if (::ioctl(device_fd, VFIO_DEVICE_GET_IRQ_INFO, &info) != 0) {
        return 0;
    }
    if ((info.flags & VFIO_IRQ_INFO_EVENTFD) == 0) {
        return 0;
    }
    return info.count;
}

IrqKind best_irq_kind(int device_fd) noexcept {
    for (IrqKind k : {IrqKind::msix, IrqKind::msi, IrqKind::intx}) {
        if (irq_count(device_fd, k) > 0) {
            return k;
        }
    }
    return IrqKind::none;
}

Result<std::vector<UniqueFd>> irq_enable(int device_fd, IrqKind k, unsigned count) {
    std::vector<UniqueFd> fds;
    for (unsigned i = 0; i < count; ++i) {
        UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        if (!fd) {
            return fail_detail(errno, "eventfd");
        }
        fds.push_back(std::move(fd));
    }
    const std::size_t sz = sizeof(vfio_irq_set) + sizeof(std::int32_t) * count;
    std::vector<std::uint64_t> buf(sz / 8 + 1, 0);
    auto* set = reinterpret_cast<vfio_irq_set*>(buf.data());
    set->argsz = static_cast<std::uint32_t>(sz);
    set->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    set->index = irq_index(k);
    set->start = 0;
    set->count = count;
    auto* data = reinterpret_cast<std::int32_t*>(set->data);
    for (unsigned i = 0; i < count; ++i) {
        data[i] = fds[i].get();
    }
    if (::ioctl(device_fd, VFIO_DEVICE_SET_IRQS, set) != 0) {
        return fail_detail(errno, std::string("VFIO_DEVICE_SET_IRQS ") + irq_kind_name(k) + " x" +
                                      std::to_string(count));
    }
    return fds;
}

void irq_disable(int device_fd, IrqKind k) noexcept {
    vfio_irq_set set{};
    set.argsz = sizeof(set);
    set.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
    set.index = irq_index(k);
    set.start = 0;
    set.count = 0;
    ::ioctl(device_fd, VFIO_DEVICE_SET_IRQS, &set);
}

Result<void> intx_unmask(int device_fd) {
    vfio_irq_set set{};
    set.argsz = sizeof(set);
    set.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK;
    set.index = VFIO_PCI_INTX_IRQ_INDEX;
    set.start = 0;
    set.count = 1;
    if (::ioctl(device_fd, VFIO_DEVICE_SET_IRQS, &set) != 0) {
        return fail_detail(errno, "VFIO_DEVICE_SET_IRQS INTx unmask");
    }
    return ok();
}

}  // namespace tbv::vfio
