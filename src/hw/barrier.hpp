// SPDX-License-Identifier: Apache-2.0
// Named ordering points between the CPU and a DMA device (rdma-core's udma_barrier.h idea: each
// narrow use has its own name, so the call site documents why it orders). See
// docs/memory-ordering.md. Every doorbell and every completion read in src/nhi uses one of these.
//
// The arch barriers are paired with C++ release/acquire atomics on the shared words themselves
// (descriptor ctl words via std::atomic_ref), which is what ThreadSanitizer understands when the
// "device" is the emulator running on another thread; std::atomic_thread_fence is avoided because
// TSan ignores fences (and GCC 12 warns about it under -fsanitize=thread).
#pragma once

namespace tbv::hw {

/// After all descriptor and buffer writes, before the MMIO doorbell write that tells the device
/// to read them (= udma_to_device_barrier). x86-64: stores are not reordered with the later
/// uncached MMIO store, so only the compiler must be stopped.
inline void io_wmb() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    asm volatile("" ::: "memory");
#elif defined(__aarch64__)
    asm volatile("dmb oshst" ::: "memory");
#else
    __sync_synchronize();
#endif
}

/// After observing a completion (DONE) bit written by the device, before reading the other fields
/// it wrote (= udma_from_device_barrier). x86-64 keeps loads in order; aarch64 does not.
inline void dma_rmb() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    asm volatile("" ::: "memory");
#elif defined(__aarch64__)
    asm volatile("dmb oshld" ::: "memory");
#else
    __sync_synchronize();
#endif
}

/// Between a descriptor's body and its own ownership word where the device polls memory
/// (= udma_ordering_write_barrier). The NHI does not poll descriptors (it reads them after a
/// doorbell), so the ring driver does not need it today; the emulator uses it when it writes the
/// data before the DONE write-back.
inline void dma_wmb() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    asm volatile("" ::: "memory");
#elif defined(__aarch64__)
    asm volatile("dmb oshst" ::: "memory");
#else
    __sync_synchronize();
#endif
}

}  // namespace tbv::hw
