// SPDX-License-Identifier: Apache-2.0
// XDomain property directories (nhi-reference §8.3, §8.5; "ref §x" below): the self-description a
// host serves to its peer in PROPERTIES_RESPONSE chunks (vendor, device, host name, max HopID and
// one sub-directory per service).
//
// Block layout (dword values; on the wire each dword is big-endian):
//   root:    DW0 magic 0x55584401, DW1 = number of entry dwords, then 4-dword entries
//   sub-dir: 4-dword UUID, then 4-dword entries (its entry in the parent has length 4 + 4·n)
//   entry:   key (8 ASCII bytes, NUL-padded, big-endian packed in 2 dwords) | [15:0] length,
//            [31:24] type | immediate value (type 'v') or dword offset from the block start
//   After a directory's entries come its text/data leaves, one zero dword per sub-directory
//   entry, then the sub-directories, each laid out the same way (this is Linux's layout).
//   Text: NUL-terminated, padded to dwords, packed big-endian so the ASCII reads naturally on the
//   wire; data likewise (we keep data as bytes in wire order).
//
// parse() trusts nothing: every offset and length must lie inside the block and may not point
// into the header/entries of the directory holding it or of any ancestor (which also rejects a
// directory entry pointing at itself or an ancestor: a loop), the block is at most 500 dwords,
// nesting at most kMaxPropertyDepth levels, at most kMaxPropertyEntries entries in the whole tree;
// anything else is Errc::malformed.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "hw/usb4_regs.hpp"
#include "tbv/result.hpp"
#include "usb4/packets.hpp"
#include "usb4/uuid.hpp"

namespace tbv::usb4 {

using hw::usb4::PropertyType;

/// Root = level 1; a service directory is level 2. Linux never nests deeper than 2.
inline constexpr unsigned kMaxPropertyDepth = 4;
/// Entries in the whole tree (a 500-dword block cannot hold more than 124 distinct ones; the cap
/// also bounds trees whose directory entries share a sub-directory).
inline constexpr unsigned kMaxPropertyEntries = 256;
inline constexpr unsigned kMaxPropertyKey = 8;

struct Property;

struct PropertyDir {
    UuidDwords uuid{};  ///< sub-directories only; the root has none
    std::vector<Property> entries;

    /// First entry with this key and type, or nullptr.
    const Property* find(std::string_view key, PropertyType type) const noexcept;

    PropertyDir& add_value(std::string key, std::uint32_t value);
    PropertyDir& add_text(std::string key, std::string text);
    PropertyDir& add_data(std::string key, std::vector<std::uint8_t> bytes);
    PropertyDir& add_dir(std::string key, PropertyDir dir);
};

struct Property {
    std::string key;  ///< 1..8 printable ASCII characters
    PropertyType type = PropertyType::value;
    std::uint32_t value = 0;         ///< type value
    std::string text;                ///< type text (without the NUL)
    std::vector<std::uint8_t> data;  ///< type data, wire byte order, a multiple of 4 when parsed
    PropertyDir dir;                 ///< type directory
};

/// Serialises a root directory. std::errc::invalid_argument for a bad key (empty, longer than 8,
/// not printable ASCII), text containing a NUL or empty data; std::errc::message_size beyond 500
/// dwords, kMaxPropertyDepth levels or kMaxPropertyEntries entries.
Result<std::vector<std::uint32_t>> encode_properties(const PropertyDir& root);

/// Parses a root block (see the file comment for what is refused).
Result<PropertyDir> parse_properties(std::span<const std::uint32_t> block);

// ---- host and service description ------------------------------------------------------------

struct ServiceInfo {
    std::string key;  ///< the directory's key, e.g. "network", "tbverbs"
    UuidDwords uuid{};
    std::uint32_t prtcid = 0;
    std::uint32_t prtcvers = 0;
    std::uint32_t prtcrevs = 0;
    std::uint32_t prtcstns = 0;
};

struct HostInfo {
    std::uint32_t vendor_id = 0;              ///< required on the wire ('v')
    std::string vendor_name;                  ///< optional ('t'); empty = absent
    std::uint32_t device_id = 0;              ///< required ('v')
    std::string device_name;                  ///< the host name ('t'); empty = absent
    std::optional<std::uint32_t> device_rev;  ///< 'devicerv'
    std::uint32_t max_hop_id = 15;            ///< 'maxhopid'; Linux's default when absent
    std::vector<ServiceInfo> services;
};

/// tbverbs' service directory UUID f2bbf54c-904d-4a21-9e43-cfc88c7d99d2 (random, generated once for
/// this project; keep it stable: peers find our service by it and by the key "tbverbs").
inline constexpr UuidDwords kTbverbsServiceUuid =
    *uuid_from_string("f2bbf54c-904d-4a21-9e43-cfc88c7d99d2");
inline constexpr std::string_view kTbverbsServiceKey = "tbverbs";
inline constexpr std::uint32_t kTbverbsProtocolId = 1;
inline constexpr std::uint32_t kTbverbsProtocolVersion = 1;
inline constexpr std::uint32_t kTbverbsProtocolRevision = 0;

/// The "tbverbs" service entry with our UUID, protocol id/version/revision and `settings`.
ServiceInfo tbverbs_service(std::uint32_t settings = 0);

/// Our root directory in Linux's order: vendorid 'v', vendorid 't', deviceid 'v', devicerv 'v',
/// the service directories, deviceid 't' (host name), maxhopid 'v'.
PropertyDir build_host_directory(const HostInfo& host);

/// A peer's description. Errc::malformed without vendorid 'v' and deviceid 'v' (Linux aborts
/// too); maxhopid defaults to 15; every 'D' entry is a service (missing prtc* read as 0).
Result<HostInfo> read_host_directory(const PropertyDir& root);

// ---- PROPERTIES_RESPONSE chunks (ref §8.2) -----------------------------------------------------

/// Data for a response to a request at `offset`: up to 45 dwords of `block` from there (empty at
/// the end); nullopt if `offset` is beyond the block.
std::optional<std::span<const std::uint32_t>> property_chunk(std::span<const std::uint32_t> block,
                                                             unsigned offset) noexcept;

/// Reassembles a peer's block from PROPERTIES_RESPONSE chunks requested in order (offset 0, then
/// the next missing dword). Every chunk must agree on total length and generation, start where the
/// previous one ended and carry data; anything else is Errc::malformed (start again with reset()).
class PropertyAssembler {
public:
    void reset() noexcept;
    /// Adds one response; true when the block is complete.
    Result<bool> add(const XdPropertiesResponse& r);
    /// Offset to request next.
    unsigned next_offset() const noexcept { return static_cast<unsigned>(block_.size()); }
    bool complete() const noexcept { return started_ && block_.size() == total_; }
    std::uint32_t generation() const noexcept { return generation_; }
    std::span<const std::uint32_t> block() const noexcept { return block_; }

private:
    bool started_ = false;
    std::uint16_t total_ = 0;
    std::uint32_t generation_ = 0;
    std::vector<std::uint32_t> block_;
};

}  // namespace tbv::usb4
