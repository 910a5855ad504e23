// SPDX-License-Identifier: Apache-2.0
// dma_copy(): how the emulated device moves bytes to and from host memory.
//
// It is an out-of-line call to memcpy on purpose. GCC expands a memcpy whose length it can bound
// (a frame is at most 4096 bytes) inline as `rep movs`, and ThreadSanitizer does not see those
// accesses; the TSan build exists to check exactly the hand-off of these bytes between the model
// and a driver on another thread (data before DONE). Through a real call, TSan's memcpy
// interceptor sees every byte. The cost, one call per frame, is nothing next to the copy.
#pragma once

#include <cstddef>

namespace tbv::emu {

void dma_copy(void* dst, const void* src, std::size_t n) noexcept;

}  // namespace tbv::emu
