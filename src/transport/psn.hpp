// SPDX-License-Identifier: Apache-2.0
// 24-bit packet sequence numbers: arithmetic modulo 2^24 and order comparisons across the wrap.
//
// A PSN space is a circle of 2^24 values. Two PSNs are comparable only when they are less than
// half the circle (2^23) apart; every window in the transport is far smaller than that (the
// sender's window is bounded at creation), so "a before b" is well defined where it is used.
#pragma once

#include <cstdint>

namespace tbv::transport::psn {

inline constexpr std::uint32_t kBits = 24;
inline constexpr std::uint32_t kModulus = 1u << kBits;  ///< 2^24 distinct PSNs
inline constexpr std::uint32_t kMask = kModulus - 1;
inline constexpr std::uint32_t kHalf = kModulus / 2;  ///< largest comparable distance + 1

/// True if `p` fits in 24 bits.
constexpr bool valid(std::uint32_t p) noexcept {
    return p <= kMask;
}

/// p + n (mod 2^24).
constexpr std::uint32_t add(std::uint32_t p, std::uint32_t n) noexcept {
    return (p + n) & kMask;
}

/// p - n (mod 2^24).
constexpr std::uint32_t sub(std::uint32_t p, std::uint32_t n) noexcept {
    return (p - n) & kMask;
}

/// Forward distance from `from` to `to`: how many increments take `from` to `to`, in [0, 2^24).
constexpr std::uint32_t distance(std::uint32_t from, std::uint32_t to) noexcept {
    return (to - from) & kMask;
}

/// Signed difference a - b in [-2^23, 2^23): negative when a is before b.
constexpr std::int32_t diff(std::uint32_t a, std::uint32_t b) noexcept {
    const std::uint32_t d = distance(b, a);
    return d >= kHalf ? static_cast<std::int32_t>(d) - static_cast<std::int32_t>(kModulus)
                      : static_cast<std::int32_t>(d);
}

/// a comes strictly before b (serial-number order).
constexpr bool before(std::uint32_t a, std::uint32_t b) noexcept {
    return diff(a, b) < 0;
}
/// a comes strictly after b.
constexpr bool after(std::uint32_t a, std::uint32_t b) noexcept {
    return diff(a, b) > 0;
}
/// a is before or equal to b.
constexpr bool before_eq(std::uint32_t a, std::uint32_t b) noexcept {
    return diff(a, b) <= 0;
}

/// p lies in the window [base, base + size) (size ≤ 2^23).
constexpr bool in_window(std::uint32_t p, std::uint32_t base, std::uint32_t size) noexcept {
    return distance(base, p) < size;
}

static_assert(add(kMask, 1) == 0);
static_assert(sub(0, 1) == kMask);
static_assert(diff(0, kMask) == 1);
static_assert(diff(kMask, 0) == -1);
static_assert(before(kMask, 0) && after(0, kMask));
static_assert(in_window(1, kMask - 1, 4) && !in_window(3, kMask - 1, 4));

}  // namespace tbv::transport::psn
