// SPDX-License-Identifier: Apache-2.0
// tbv::Address: the 32-byte connection blob (include/tbv/tbv.hpp), byte by byte little-endian so
// that hosts of either byte order read each other's blobs.
#include <cstring>

#include "api/detail.hpp"
#include "tbv/tbv.hpp"
#include "transport/fabric.hpp"

namespace tbv {

namespace {

// Offsets in the blob (the layout documented on Address).
constexpr std::size_t kOffMagic = 0;
constexpr std::size_t kOffVersion = 4;
constexpr std::size_t kOffLid = 6;
constexpr std::size_t kOffQpn = 8;
constexpr std::size_t kOffPsn = 12;
constexpr std::size_t kOffGid = 16;
static_assert(kOffGid + sizeof(verbs::Gid) == Address::kSize);

constexpr std::uint32_t kMax24 = 0xFFFFFF;

void put_le(std::byte* p, std::uint64_t v, unsigned n) noexcept {
    for (unsigned i = 0; i < n; ++i) {
        p[i] = static_cast<std::byte>(v >> (8 * i));
    }
}

std::uint64_t get_le(const std::byte* p, unsigned n) noexcept {
    std::uint64_t v = 0;
    for (unsigned i = 0; i < n; ++i) {
        v |= static_cast<std::uint64_t>(std::to_integer<std::uint8_t>(p[i])) << (8 * i);
    }
    return v;
}

}  // namespace

Address::Bytes Address::to_bytes() const noexcept {
    Bytes b{};
    put_le(b.data() + kOffMagic, kMagic, 4);
    put_le(b.data() + kOffVersion, kVersion, 2);
    put_le(b.data() + kOffLid, lid, 2);
    put_le(b.data() + kOffQpn, qpn, 4);
    put_le(b.data() + kOffPsn, psn, 4);
    std::memcpy(b.data() + kOffGid, gid.data(), gid.size());
    return b;
}

Result<Address> Address::from_bytes(std::span<const std::byte> bytes) noexcept {
    if (bytes.size() != kSize || get_le(bytes.data() + kOffMagic, 4) != kMagic ||
        get_le(bytes.data() + kOffVersion, 2) != kVersion) {
        return fail(Errc::malformed);
    }
    Address a;
    a.lid = static_cast<std::uint16_t>(get_le(bytes.data() + kOffLid, 2));
    a.qpn = static_cast<std::uint32_t>(get_le(bytes.data() + kOffQpn, 4));
    a.psn = static_cast<std::uint32_t>(get_le(bytes.data() + kOffPsn, 4));
    std::memcpy(a.gid.data(), bytes.data() + kOffGid, a.gid.size());
    if (a.lid == 0 || a.qpn > kMax24 || a.psn > kMax24) {
        return fail(Errc::malformed);
    }
    return a;
}

namespace detail {

verbs::Gid gid_of(const hw::usb4::UuidDwords& uuid) noexcept {
    verbs::Gid g{};
    for (std::size_t i = 0; i < uuid.size(); ++i) {
        put_le(reinterpret_cast<std::byte*>(g.data()) + 4 * i, uuid[i], 4);
    }
    return g;
}

bool gid_matches_lid(const verbs::Gid& gid, std::uint16_t lid) noexcept {
    if (gid == verbs::Gid{}) {
        return true;  // no GID given (an address built by hand): nothing to check
    }
    hw::usb4::UuidDwords uuid{};
    for (std::size_t i = 0; i < uuid.size(); ++i) {
        uuid[i] = static_cast<std::uint32_t>(
            get_le(reinterpret_cast<const std::byte*>(gid.data()) + 4 * i, 4));
    }
    return transport::lid_of(uuid) == lid;
}

}  // namespace detail

}  // namespace tbv
