// SPDX-License-Identifier: Apache-2.0
// IrqWaiter: the slow-path wait for ring interrupts. Sleeps in io_uring until one of the watched
// MSI-X eventfds fires or a timeout passes (liburing: one armed 8-byte read per eventfd, plus the
// wait's own timeout). Used where an application chooses to sleep (completion channels, the
// control plane waiting for a reply); the data path polls descriptors instead.
#pragma once

#include <liburing.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>

#include "tbv/result.hpp"

namespace tbv::nhi {

class IrqWaiter {
public:
    static constexpr unsigned kMaxFds = 32;

    static Result<std::unique_ptr<IrqWaiter>> create();
    IrqWaiter(const IrqWaiter&) = delete;
    IrqWaiter& operator=(const IrqWaiter&) = delete;
    ~IrqWaiter();

    /// Adds an eventfd; returns its slot (bit position in wait()'s result).
    Result<unsigned> watch(int eventfd);

    /// Waits until at least one watched eventfd has fired or `timeout` elapsed. Returns a bitmask
    /// of the slots that fired (their counters are consumed); 0 on timeout.
    Result<std::uint32_t> wait(std::chrono::nanoseconds timeout);

    /// Total interrupts consumed per slot since creation (eventfd counters add up).
    std::uint64_t count(unsigned slot) const noexcept { return slot < kMaxFds ? totals_[slot] : 0; }

private:
    IrqWaiter() = default;
    Result<void> arm(unsigned slot);
    std::uint32_t harvest(io_uring_cqe* first);

    io_uring ring_{};
    bool ring_ok_ = false;
    unsigned n_ = 0;
    std::array<int, kMaxFds> fds_{};
    std::array<bool, kMaxFds> armed_{};
    std::array<std::uint64_t, kMaxFds> bufs_{};  ///< read targets; live while a read is armed
    std::array<std::uint64_t, kMaxFds> totals_{};
};

}  // namespace tbv::nhi
