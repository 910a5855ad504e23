// SPDX-License-Identifier: Apache-2.0
// UUIDs inside control packets (nhi-reference §8.5). Linux copies the 16 RFC-4122 bytes into a
// struct of host dwords and sends each dword big-endian, so on the wire every 4-byte group is
// reversed. We keep a UUID as those four host dwords (hw::usb4::UuidDwords):
//   dword[i] = bytes[4i] | bytes[4i+1] << 8 | bytes[4i+2] << 16 | bytes[4i+3] << 24.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "hw/usb4_regs.hpp"

namespace tbv::usb4 {

using UuidBytes = std::array<std::uint8_t, 16>;  ///< RFC-4122 order (as printed)

constexpr hw::usb4::UuidDwords uuid_from_bytes(const UuidBytes& b) noexcept {
    hw::usb4::UuidDwords d{};
    for (unsigned i = 0; i < 4; ++i) {
        d[i] = std::uint32_t{b[4 * i]} | std::uint32_t{b[4 * i + 1]} << 8 |
               std::uint32_t{b[4 * i + 2]} << 16 | std::uint32_t{b[4 * i + 3]} << 24;
    }
    return d;
}

constexpr UuidBytes uuid_to_bytes(const hw::usb4::UuidDwords& d) noexcept {
    UuidBytes b{};
    for (unsigned i = 0; i < 16; ++i) {
        b[i] = static_cast<std::uint8_t>(d[i / 4] >> (8 * (i % 4)));
    }
    return b;
}

/// Parses "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (either case); nullopt if it is not that shape.
constexpr std::optional<hw::usb4::UuidDwords> uuid_from_string(std::string_view s) noexcept {
    if (s.size() != 36) {
        return std::nullopt;
    }
    UuidBytes b{};
    unsigned n = 0;  // nibbles read
    for (std::size_t i = 0; i < s.size(); ++i) {
        const char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') {
                return std::nullopt;
            }
            continue;
        }
        unsigned v = 0;
        if (c >= '0' && c <= '9') {
            v = static_cast<unsigned>(c - '0');
        } else if (c >= 'a' && c <= 'f') {
            v = static_cast<unsigned>(c - 'a' + 10);
        } else if (c >= 'A' && c <= 'F') {
            v = static_cast<unsigned>(c - 'A' + 10);
        } else {
            return std::nullopt;
        }
        b[n / 2] = static_cast<std::uint8_t>(b[n / 2] | (n % 2 == 0 ? v << 4 : v));
        ++n;
    }
    return uuid_from_bytes(b);
}

inline std::string uuid_to_string(const hw::usb4::UuidDwords& d) {
    constexpr char kHex[] = "0123456789abcdef";
    const UuidBytes b = uuid_to_bytes(d);
    std::string s;
    s.reserve(36);
    for (unsigned i = 0; i < 16; ++i) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            s.push_back('-');
        }
        s.push_back(kHex[b[i] >> 4]);
        s.push_back(kHex[b[i] & 0xf]);
    }
    return s;
}

static_assert(uuid_from_string("b638d70e-42ff-40bb-97c2-90e2c0b2ff07") ==
              hw::usb4::kXdomainDiscoveryUuid);

}  // namespace tbv::usb4
