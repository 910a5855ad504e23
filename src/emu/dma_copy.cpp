// SPDX-License-Identifier: Apache-2.0
#include "emu/dma_copy.hpp"

#include <cstring>

namespace tbv::emu {

// noipa (GCC) / noinline (clang): no caller's length range may reach the memcpy, even with LTO.
#if defined(__clang__)
[[gnu::noinline]]
#else
[[gnu::noipa]]
#endif
void dma_copy(void* dst, const void* src, std::size_t n) noexcept {
    std::memcpy(dst, src, n);
}

}  // namespace tbv::emu
