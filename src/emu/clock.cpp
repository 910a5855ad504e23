// SPDX-License-Identifier: Apache-2.0
#include "emu/clock.hpp"

namespace tbv::emu {

namespace {

class SteadyClock final : public Clock {
public:
    Duration now() const noexcept override {
        return std::chrono::duration_cast<Duration>(
            std::chrono::steady_clock::now().time_since_epoch());
    }
};

}  // namespace

const Clock& Clock::steady() noexcept {
    static const SteadyClock clock;
    return clock;
}

}  // namespace tbv::emu
