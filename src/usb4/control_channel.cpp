// SPDX-License-Identifier: Apache-2.0
#include "usb4/control_channel.hpp"

#include <algorithm>
#include <thread>

namespace tbv::usb4 {

using namespace hw::usb4;
using std::chrono::nanoseconds;

// ---- wait strategies ---------------------------------------------------------------------------

void SleepWait::wait(nanoseconds max) noexcept {
    std::this_thread::sleep_for(std::min(step_, max));
}

Result<std::unique_ptr<IrqWait>> IrqWait::create(nhi::Nhi& nhi, unsigned vector,
                                                 nanoseconds max_sleep) {
    const int fd = nhi.device().irq_eventfd(vector);
    if (fd < 0 || vector >= nhi.irq_vectors()) {
        return fail(std::errc::invalid_argument);
    }
    auto w = nhi::IrqWaiter::create();
    if (!w) {
        return Failure{w.error()};
    }
    auto slot = (*w)->watch(fd);
    if (!slot) {
        return Failure{slot.error()};
    }
    return std::unique_ptr<IrqWait>(new IrqWait(nhi, std::move(*w), max_sleep));
}

void IrqWait::wait(nanoseconds max) noexcept {
    // A failed wait (io_uring error) degrades to an immediate return: the channel polls again and
    // its deadline still bounds the loop.
    (void)waiter_->wait(std::min(max, max_sleep_));
    // Re-arm: W1C parts keep the status set until it is cleared; auto-clear parts cleared it when
    // the message was sent.
    if (nhi_.interrupts().mode() == nhi::IrqMode::w1c) {
        (void)nhi_.interrupts().clear(hw::nhi::IrqKind::rx, 0);
    }
}

void ManualClockWait::wait(nanoseconds max) noexcept {
    ++waits;
    if (on_wait) {
        on_wait();
    }
    clock_.advance(std::min(step_, max));
}

// ---- errors
// --------------------------------------------------------------------------------------

std::error_code router_error_code(const ErrorPacket& e) noexcept {
    switch (static_cast<ErrorCode>(e.code)) {
        case ErrorCode::port_not_connected: return make_error_code(Errc::link_down);
        case ErrorCode::invalid_config_space:
            return std::make_error_code(std::errc::no_such_device);
        case ErrorCode::lock: return std::make_error_code(std::errc::permission_denied);
        default: return make_error_code(Errc::router_error);
    }
}

// ---- channel
// -------------------------------------------------------------------------------------

Result<std::unique_ptr<ControlChannel>> ControlChannel::create(nhi::ControlRing& ring,
                                                               const ChannelOptions& opts) {
    if (opts.attempts == 0 || opts.attempts > ADDR_SEQ::kMax + 1 || opts.timeout.count() <= 0 ||
        opts.inbox_capacity == 0) {
        return fail(std::errc::invalid_argument);
    }
    return std::unique_ptr<ControlChannel>(new ControlChannel(ring, opts));
}

ControlChannel::ControlChannel(nhi::ControlRing& ring, const ChannelOptions& opts)
    : ring_(ring),
      opts_(opts),
      clock_(opts.clock != nullptr ? opts.clock : &steady_),
      wait_(opts.wait != nullptr ? opts.wait : &sleep_),
      inbox_(opts.inbox_capacity) {}

Result<ControlPacket> ControlChannel::transact(const Builder& build, const Matcher& match,
                                               nanoseconds timeout, unsigned attempts) {
    last_error_.reset();
    for (unsigned attempt = 0; attempt < attempts; ++attempt) {
        if (attempt > 0) {
            ++ctr_.retries;
        }
        auto req = build(attempt);
        if (!req) {
            return Failure{req.error()};
        }
        if (auto s = send(*req); !s) {
            return Failure{s.error()};
        }
        const Clock::time_point deadline = clock_->now() + timeout;
        for (;;) {
            while (auto p = ring_.receive()) {
                ++ctr_.rx;
                if (match(*p, attempt)) {
                    return *p;
                }
                if (p->pdf == static_cast<std::uint8_t>(Pdf::error)) {
                    auto e = decode_error(p->payload());
                    if (e && !e->is_async()) {
                        // ref §5.4: an error packet answers the pending request.
                        ++ctr_.router_errors;
                        last_error_ = *e;
                        return Failure{router_error_code(*e)};
                    }
                }
                dispatch(*p);
            }
            const Clock::time_point now = clock_->now();
            if (now >= deadline) {
                break;
            }
            wait_->wait(deadline - now);
        }
        ++ctr_.timeouts;
    }
    return fail(Errc::timeout);
}

void ControlChannel::dispatch(const ControlPacket& p) {
    auto any = decode(p.pdf, p.payload());
    if (!any) {
        ++ctr_.malformed_dropped;
        return;
    }
    if (std::holds_alternative<HotPlugEvent>(*any)) {
        enqueue(NotificationKind::hot_plug, p);
    } else if (std::holds_alternative<XdomainPacket>(*any)) {
        enqueue(NotificationKind::xdomain, p);
    } else if (const auto* e = std::get_if<ErrorPacket>(&*any); e != nullptr && e->is_async()) {
        enqueue(NotificationKind::async_error, p);
    } else {
        // Config responses, non-async errors and notify acks with nothing waiting for them: late
        // answers to an attempt already given up on, or a confused peer.
        ++ctr_.unmatched_dropped;
    }
}

void ControlChannel::enqueue(NotificationKind kind, const ControlPacket& p) {
    if (inbox_count_ == inbox_.size()) {
        ++ctr_.inbox_overflow;
        return;
    }
    Notification& n = inbox_[(inbox_head_ + inbox_count_) % inbox_.size()];
    n.kind = kind;
    n.packet = p;
    ++inbox_count_;
    ++ctr_.notifications;
}

void ControlChannel::poll() {
    while (auto p = ring_.receive()) {
        ++ctr_.rx;
        dispatch(*p);
    }
}

std::optional<Notification> ControlChannel::next_notification() {
    poll();
    if (inbox_count_ == 0) {
        return std::nullopt;
    }
    Notification n = inbox_[inbox_head_];
    inbox_head_ = (inbox_head_ + 1) % inbox_.size();
    --inbox_count_;
    return n;
}

Result<void> ControlChannel::send(const ControlPacket& p) {
    auto r = ring_.send(p.pdf, p.payload());
    if (r) {
        ++ctr_.tx;
    }
    return r;
}

Result<void> ControlChannel::send_raw(unsigned pdf, std::span<const std::uint32_t> dwords) {
    auto r = ring_.send(pdf, dwords);
    if (r) {
        ++ctr_.tx;
    }
    return r;
}

Result<void> ControlChannel::ack_hot_plug(const HotPlugEvent& e) {
    auto p = encode(plug_ack(e.route, e.port, e.unplug));
    if (!p) {
        return Failure{p.error()};
    }
    return send(*p);
}

namespace {

bool addr_echoes(const ConfigAddr& got, const ConfigAddr& want) noexcept {
    return got.space == want.space && got.offset == want.offset && got.length == want.length;
}

bool config_args_ok(std::uint64_t route, Space space, unsigned port, unsigned offset,
                    std::size_t len) noexcept {
    return route_valid(route) && static_cast<unsigned>(space) <= ADDR_SPACE::kMax &&
           port <= ADDR_PORT::kMax && offset <= ADDR_OFFSET::kMax && len >= 1 &&
           len <= kMaxConfigDwords;
}

}  // namespace

Result<unsigned> ControlChannel::read(std::uint64_t route, Space space, unsigned port,
                                      unsigned offset, std::span<std::uint32_t> out) {
    if (!config_args_ok(route, space, port, offset, out.size())) {
        return fail(std::errc::invalid_argument);
    }
    ReadRequest req;
    req.route = route_key(route);
    req.addr.space = space;
    req.addr.port = static_cast<std::uint8_t>(port);
    req.addr.offset = static_cast<std::uint16_t>(offset);
    req.addr.length = static_cast<std::uint8_t>(out.size());
    const std::size_t want_size = 3 + out.size();
    auto got = transact(
        [&](unsigned attempt) {
            ReadRequest r = req;
            r.addr.seq = static_cast<std::uint8_t>(attempt);
            return encode(r);
        },
        [&](const ControlPacket& p, unsigned attempt) {
            if (p.pdf != static_cast<std::uint8_t>(Pdf::write) || p.dword_count != want_size) {
                return false;
            }
            auto r = decode_read_response(p.payload());
            if (!r || route_key(r->route) != req.route || r->addr.seq != attempt) {
                return false;
            }
            // A bad echo is not our answer; dispatch() drops it as unmatched (ref §5.4).
            return addr_echoes(r->addr, req.addr);
        },
        opts_.timeout, opts_.attempts);
    if (!got) {
        return Failure{got.error()};
    }
    std::copy_n(got->dwords.begin() + 3, out.size(), out.begin());
    return static_cast<unsigned>(ADDR_PORT::get(got->dwords[2]));
}

Result<std::vector<std::uint32_t>> ControlChannel::read(std::uint64_t route, Space space,
                                                        unsigned port, unsigned offset,
                                                        unsigned len) {
    if (len == 0 || len > kMaxConfigDwords) {
        return fail(std::errc::invalid_argument);
    }
    std::vector<std::uint32_t> out(len);
    auto r = read(route, space, port, offset, std::span<std::uint32_t>(out));
    if (!r) {
        return Failure{r.error()};
    }
    return out;
}

Result<std::uint32_t> ControlChannel::read1(std::uint64_t route, Space space, unsigned port,
                                            unsigned offset) {
    std::uint32_t v = 0;
    auto r = read(route, space, port, offset, std::span<std::uint32_t>(&v, 1));
    if (!r) {
        return Failure{r.error()};
    }
    return v;
}

Result<unsigned> ControlChannel::upstream_adapter(std::uint64_t route) {
    std::uint32_t v = 0;
    return read(route, Space::router, 0, 0, std::span<std::uint32_t>(&v, 1));
}

Result<void> ControlChannel::write(std::uint64_t route, Space space, unsigned port, unsigned offset,
                                   std::span<const std::uint32_t> data) {
    if (!config_args_ok(route, space, port, offset, data.size())) {
        return fail(std::errc::invalid_argument);
    }
    WriteRequest req;
    req.route = route_key(route);
    req.addr.space = space;
    req.addr.port = static_cast<std::uint8_t>(port);
    req.addr.offset = static_cast<std::uint16_t>(offset);
    req.addr.length = static_cast<std::uint8_t>(data.size());
    req.data = data;
    auto got = transact(
        [&](unsigned attempt) {
            WriteRequest r = req;
            r.addr.seq = static_cast<std::uint8_t>(attempt);
            return encode(r);
        },
        [&](const ControlPacket& p, unsigned attempt) {
            if (p.pdf != static_cast<std::uint8_t>(Pdf::read) || p.dword_count != 3) {
                return false;
            }
            auto r = decode_write_response(p.payload());
            if (!r || route_key(r->route) != req.route || r->addr.seq != attempt) {
                return false;
            }
            return addr_echoes(r->addr, req.addr);
        },
        opts_.timeout, opts_.attempts);
    if (!got) {
        return Failure{got.error()};
    }
    return ok();
}

Result<ControlPacket> ControlChannel::xdomain_request(const XdomainPacket& request,
                                                      const XdMatch& match, nanoseconds timeout,
                                                      unsigned attempts) {
    if (attempts == 0 || timeout.count() <= 0) {
        return fail(std::errc::invalid_argument);
    }
    return transact(
        [&](unsigned attempt) {
            XdomainPacket r = request;
            r.seq = static_cast<std::uint8_t>(attempt % (XD_SEQ::kMax + 1));
            return encode(r);
        },
        [&](const ControlPacket& p, unsigned) {
            if (p.pdf != static_cast<std::uint8_t>(Pdf::xdomain_resp)) {
                return false;
            }
            auto x = decode_xdomain(p.pdf, p.payload());
            return x && route_key(x->route) == route_key(request.route) &&
                   x->protocol == request.protocol && (!match || match(*x));
        },
        timeout, attempts);
}

}  // namespace tbv::usb4
