// SPDX-License-Identifier: Apache-2.0
// BatchBuffer: up to N values on the stack, gathered one by one and handed on as a span, for the
// batched data path (a TX batch of FrameViews, WirePackets crossing a cable). Unlike std::array
// it does not initialise the slots it never uses: 32 WirePackets are 2 KiB of stores, which at one
// frame per doorbell cost more than the batching saved.
#pragma once

#include <cstddef>
#include <new>
#include <span>
#include <type_traits>

namespace tbv::emu {

template <typename T, std::size_t N>
class BatchBuffer {
    static_assert(std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T>,
                  "slots are overwritten and dropped without constructor or destructor calls");

public:
    BatchBuffer() noexcept {}  // NOLINT: the storage is left uninitialised on purpose
    BatchBuffer(const BatchBuffer&) = delete;
    BatchBuffer& operator=(const BatchBuffer&) = delete;

    static constexpr std::size_t capacity() noexcept { return N; }
    std::size_t size() const noexcept { return n_; }
    bool empty() const noexcept { return n_ == 0; }
    bool full() const noexcept { return n_ == N; }
    void clear() noexcept { n_ = 0; }

    /// Appends a value-initialised T and returns it. Not to be called when full().
    T& push() noexcept { return *::new (static_cast<void*>(store_ + n_++ * sizeof(T))) T{}; }
    /// Appends a copy of `v`. Not to be called when full().
    void push(const T& v) noexcept { ::new (static_cast<void*>(store_ + n_++ * sizeof(T))) T(v); }

    T& operator[](std::size_t i) noexcept { return data()[i]; }
    const T& operator[](std::size_t i) const noexcept { return data()[i]; }
    std::span<const T> span() const noexcept {
        return n_ == 0 ? std::span<const T>{} : std::span<const T>{data(), n_};
    }

private:
    T* data() noexcept { return std::launder(reinterpret_cast<T*>(store_)); }
    const T* data() const noexcept { return std::launder(reinterpret_cast<const T*>(store_)); }

    alignas(T) std::byte store_[N * sizeof(T)];
    std::size_t n_ = 0;
};

}  // namespace tbv::emu
