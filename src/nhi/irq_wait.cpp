// SPDX-License-Identifier: Apache-2.0
#include "nhi/irq_wait.hpp"

#include <memory>

namespace tbv::nhi {

Result<std::unique_ptr<IrqWaiter>> IrqWaiter::create() {
    std::unique_ptr<IrqWaiter> w(new IrqWaiter());
    if (int rc = io_uring_queue_init(2 * kMaxFds, &w->ring_, 0); rc < 0) {
        return fail_errno(-rc);
    }
    w->ring_ok_ = true;
    w->fds_.fill(-1);
    return w;
}

IrqWaiter::~IrqWaiter() {
    if (ring_ok_) {
        // Tearing the ring down cancels the armed reads before bufs_ goes away.
        io_uring_queue_exit(&ring_);
    }
}

Result<unsigned> IrqWaiter::watch(int eventfd) {
    if (eventfd < 0) {
        return fail(std::errc::bad_file_descriptor);
    }
    if (n_ == kMaxFds) {
        return fail(std::errc::too_many_files_open);
    }
    fds_[n_] = eventfd;
    return n_++;
}

Result<void> IrqWaiter::arm(unsigned slot) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {
        return fail(std::errc::resource_unavailable_try_again);
    }
    io_uring_prep_read(sqe, fds_[slot], &bufs_[slot], sizeof bufs_[slot], 0);
    io_uring_sqe_set_data64(sqe, slot);
    armed_[slot] = true;
    return ok();
}

std::uint32_t IrqWaiter::harvest(io_uring_cqe* first) {
    std::uint32_t fired = 0;
    io_uring_cqe* cqe = first;
    while (cqe != nullptr) {
        const auto slot = static_cast<unsigned>(io_uring_cqe_get_data64(cqe));
        if (slot < kMaxFds) {
            armed_[slot] = false;
            if (cqe->res == static_cast<int>(sizeof(std::uint64_t))) {
                fired |= 1u << slot;
                totals_[slot] += bufs_[slot];
            }
        }
        io_uring_cqe_seen(&ring_, cqe);
        cqe = nullptr;
        (void)io_uring_peek_cqe(&ring_, &cqe);
    }
    return fired;
}

Result<std::uint32_t> IrqWaiter::wait(std::chrono::nanoseconds timeout) {
    for (unsigned s = 0; s < n_; ++s) {
        if (!armed_[s]) {
            if (auto r = arm(s); !r) {
                return Failure{r.error()};
            }
        }
    }
    if (int rc = io_uring_submit(&ring_); rc < 0) {
        return fail_errno(-rc);
    }
    const auto secs = std::chrono::duration_cast<std::chrono::seconds>(timeout);
    __kernel_timespec ts{};
    ts.tv_sec = secs.count();
    ts.tv_nsec = (timeout - secs).count();
    io_uring_cqe* cqe = nullptr;
    int rc = io_uring_wait_cqe_timeout(&ring_, &cqe, &ts);
    if (rc == -ETIME) {
        return std::uint32_t{0};
    }
    if (rc < 0) {
        return fail_errno(-rc);
    }
    return harvest(cqe);
}

}  // namespace tbv::nhi
