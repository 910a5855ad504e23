// SPDX-License-Identifier: Apache-2.0
// Typed bit fields of hardware words (the Fuchsia hwreg idea, without C++ bitfields whose layout
// depends on the compiler). Field<Hi, Lo> names bits [Hi:Lo] of a 32- or 64-bit word.
#pragma once

#include <cstdint>
#include <type_traits>

namespace tbv::util {

template <unsigned Hi, unsigned Lo, typename T = std::uint32_t>
struct Field {
    static_assert(std::is_unsigned_v<T>, "hardware words are unsigned");
    static_assert(Hi >= Lo, "field [Hi:Lo] needs Hi >= Lo");
    static_assert(Hi < sizeof(T) * 8, "field does not fit in the word");

    static constexpr unsigned kShift = Lo;
    static constexpr unsigned kWidth = Hi - Lo + 1;
    /// Right-aligned mask of the field's width.
    static constexpr T kMax =
        kWidth == sizeof(T) * 8 ? static_cast<T>(~T{0}) : static_cast<T>((T{1} << kWidth) - 1);
    /// Mask of the field in place.
    static constexpr T kMask = static_cast<T>(kMax << Lo);

    static constexpr T get(T word) noexcept { return static_cast<T>((word >> Lo) & kMax); }

    /// Returns `word` with the field replaced by `value`; other bits are preserved. A value that
    /// does not fit is truncated (callers validate input before it reaches a register).
    static constexpr T set(T word, T value) noexcept {
        return static_cast<T>((word & ~kMask) | ((value & kMax) << Lo));
    }

    /// The field alone, positioned.
    static constexpr T make(T value) noexcept { return static_cast<T>((value & kMax) << Lo); }

    static constexpr bool fits(std::uint64_t value) noexcept { return value <= kMax; }
};

/// One bit.
template <unsigned N, typename T = std::uint32_t>
using Bit = Field<N, N, T>;

static_assert(Field<11, 0>::kMask == 0xfffu);
static_assert(Field<31, 20>::get(0xabc00000u) == 0xabcu);
static_assert(Field<15, 12>::set(0xffffffffu, 0x3) == 0xffff3fffu);
static_assert(Field<31, 0>::kMax == 0xffffffffu);

}  // namespace tbv::util
