// SPDX-License-Identifier: Apache-2.0
// CRC-32C (Castagnoli): reflected polynomial 0x82F63B78, initial value ~0, final xor ~0.
// USB4 control packets carry it big-endian after the big-endian dwords (nhi-reference §5.1);
// check("123456789") == 0xE3069283.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace tbv::util {

/// CRC-32C of `data`, continuing from `crc` (pass the previous result to chain; 0 to start).
std::uint32_t crc32c(std::span<const std::byte> data, std::uint32_t crc = 0) noexcept;

}  // namespace tbv::util
