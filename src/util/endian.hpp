// SPDX-License-Identifier: Apache-2.0
// Byte order as part of the type. NHI MMIO and descriptors are little-endian; USB4 control packets
// are big-endian dwords (nhi-reference §3, §5.1). std::byteswap is C++23, so we use the builtins.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

namespace tbv::util {

constexpr std::uint32_t bswap32(std::uint32_t v) noexcept {
    return __builtin_bswap32(v);
}
constexpr std::uint64_t bswap64(std::uint64_t v) noexcept {
    return __builtin_bswap64(v);
}

constexpr std::uint32_t cpu_to_be32(std::uint32_t v) noexcept {
    if constexpr (std::endian::native == std::endian::little) {
        return bswap32(v);
    } else {
        return v;
    }
}
constexpr std::uint32_t be32_to_cpu(std::uint32_t v) noexcept {
    return cpu_to_be32(v);
}
constexpr std::uint32_t cpu_to_le32(std::uint32_t v) noexcept {
    if constexpr (std::endian::native == std::endian::little) {
        return v;
    } else {
        return bswap32(v);
    }
}
constexpr std::uint32_t le32_to_cpu(std::uint32_t v) noexcept {
    return cpu_to_le32(v);
}
constexpr std::uint64_t cpu_to_le64(std::uint64_t v) noexcept {
    if constexpr (std::endian::native == std::endian::little) {
        return v;
    } else {
        return bswap64(v);
    }
}
constexpr std::uint64_t le64_to_cpu(std::uint64_t v) noexcept {
    return cpu_to_le64(v);
}

/// Reads a big-endian dword from unaligned wire bytes.
inline std::uint32_t load_be32(const void* p) noexcept {
    std::uint32_t v;
    std::memcpy(&v, p, sizeof v);
    return be32_to_cpu(v);
}
/// Writes a big-endian dword to unaligned wire bytes.
inline void store_be32(void* p, std::uint32_t v) noexcept {
    v = cpu_to_be32(v);
    std::memcpy(p, &v, sizeof v);
}

}  // namespace tbv::util
