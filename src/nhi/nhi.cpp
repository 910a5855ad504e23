// SPDX-License-Identifier: Apache-2.0
#include "nhi/nhi.hpp"

#include "hw/nhi_regs.hpp"

namespace tbv::nhi {

using namespace hw::nhi;

Result<std::unique_ptr<Nhi>> Nhi::open(hw::Device& dev, const NhiOptions& opts) {
    const std::uint32_t caps = dev.read32(REG_CAPS);
    if (caps == 0xffffffffu) {
        return fail(Errc::device_gone);
    }
    const unsigned hop_count = CAPS_HOP_COUNT::get(caps);
    if (hop_count < 2) {
        // Ring 0 is the control channel; without one data ring there is nothing to drive.
        return fail(Errc::not_supported);
    }
    if (hop_count > kMaxHopCount) {
        return fail(Errc::not_supported);
    }
    if (opts.irq_vectors > dev.irq_vector_count() || opts.irq_vectors > kMaxMsixVectors) {
        return fail(std::errc::invalid_argument);
    }
    const auto version = static_cast<std::uint8_t>(CAPS_VERSION::get(caps));
    const IrqMode mode = opts.irq_mode.value_or(default_irq_mode(dev.identity().vendor));

    if (auto r = dev.set_bus_master(true); !r) {
        return Failure{r.error()};
    }
    if (opts.irq_vectors > 0) {
        if (auto r = dev.enable_irqs(opts.irq_vectors); !r) {
            return Failure{r.error()};
        }
    }
    std::unique_ptr<Nhi> nhi(new Nhi(dev, hop_count, version, mode, opts.irq_vectors));
    nhi->irq_.init(opts.throttle_ns);
    return nhi;
}

Nhi::~Nhi() {
    // Rings are owned elsewhere and must already be stopped; leave the function quiet.
    if (irq_vectors_ > 0) {
        dev_.disable_irqs();
    }
    (void)dev_.set_bus_master(false);
}

Result<unsigned> Nhi::claim_ring(Direction dir, std::optional<unsigned> ring) {
    std::uint64_t& used = dir == Direction::tx ? tx_used_ : rx_used_;
    if (ring) {
        if (*ring >= hop_count_ || (used & (std::uint64_t{1} << *ring)) != 0) {
            return fail(Errc::ring_unavailable);
        }
        used |= std::uint64_t{1} << *ring;
        return *ring;
    }
    for (unsigned r = 1; r < hop_count_; ++r) {
        if ((used & (std::uint64_t{1} << r)) == 0) {
            used |= std::uint64_t{1} << r;
            return r;
        }
    }
    return fail(Errc::ring_unavailable);
}

void Nhi::release_ring(Direction dir, unsigned ring) noexcept {
    std::uint64_t& used = dir == Direction::tx ? tx_used_ : rx_used_;
    if (ring < hop_count_) {
        used &= ~(std::uint64_t{1} << ring);
    }
}

bool Nhi::gone() noexcept {
    return dev_.read32(REG_CAPS) == 0xffffffffu;
}

}  // namespace tbv::nhi
