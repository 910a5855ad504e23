// SPDX-License-Identifier: Apache-2.0
// Completion channel (ibv_create_comp_channel): an eventfd a CQ signals when it was armed
// (ibv_req_notify_cq) and a completion arrives — any completion, or with solicited_only only a
// solicited one or an error (IB). Signalling is the slow path the application asked for; the
// data path never touches the eventfd otherwise.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <deque>
#include <memory>

#include "tbv/result.hpp"

namespace tbv::verbs {

class CompChannel {
public:
    static Result<std::unique_ptr<CompChannel>> create() {
        const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (fd < 0) {
            return Failure{std::error_code(errno, std::generic_category())};
        }
        return std::unique_ptr<CompChannel>(new CompChannel(fd));
    }
    ~CompChannel() { ::close(fd_); }
    CompChannel(const CompChannel&) = delete;
    CompChannel& operator=(const CompChannel&) = delete;

    /// Readable when at least one CQ event is pending (poll/epoll on it, or wait()).
    int fd() const noexcept { return fd_; }
    /// A CQ (identified by its handle) fired: queue it for get_cq_event and wake the fd.
    /// Called by the progress engine under the context lock; one event per arming, so the queue
    /// is bounded by the number of CQs on the channel (reserved when a CQ is attached).
    void notify(std::uint32_t cq_handle) noexcept {
        if (pending_.size() < reserved_) {
            pending_.push_back(cq_handle);
        }
        const std::uint64_t one = 1;
        (void)!::write(fd_, &one, sizeof one);
    }
    /// The oldest CQ event, if any (context lock held).
    bool pop(std::uint32_t& cq_handle) noexcept {
        if (pending_.empty()) {
            return false;
        }
        cq_handle = pending_.front();
        pending_.pop_front();
        if (pending_.empty()) {
            (void)drain();
        }
        return true;
    }
    void attach() { ++reserved_; }
    void detach() noexcept { --reserved_; }
    std::uint32_t users() const noexcept { return reserved_; }
    /// Consumes pending notifications; returns how many there were (0 if none).
    std::uint64_t drain() noexcept {
        std::uint64_t n = 0;
        return ::read(fd_, &n, sizeof n) == static_cast<ssize_t>(sizeof n) ? n : 0;
    }

private:
    explicit CompChannel(int fd) noexcept : fd_(fd) {}
    int fd_;
    std::deque<std::uint32_t> pending_;
    std::uint32_t reserved_ = 0;
};

}  // namespace tbv::verbs
