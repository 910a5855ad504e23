// SPDX-License-Identifier: Apache-2.0
#include "usb4/properties.hpp"

#include <algorithm>
#include <utility>

namespace tbv::usb4 {

using namespace hw::usb4;

namespace {

constexpr unsigned kRootHeader = 2;  ///< magic, entry dwords
constexpr unsigned kDirHeader = 4;   ///< UUID
constexpr unsigned kEntry = kPropertyEntryDwords;

Failure malformed() noexcept {
    return fail(Errc::malformed);
}

bool key_valid(std::string_view key) noexcept {
    return !key.empty() && key.size() <= kMaxPropertyKey &&
           std::all_of(key.begin(), key.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

/// Packs bytes big-endian into dwords (so they read in order on the wire); zero padded.
void pack_be(std::span<const std::uint8_t> bytes, std::span<std::uint32_t> out) noexcept {
    for (std::size_t i = 0; i < bytes.size(); ++i) {
        out[i / 4] |= std::uint32_t{bytes[i]} << (8 * (3 - i % 4));
    }
}
std::uint8_t byte_at(std::span<const std::uint32_t> dw, std::size_t i) noexcept {
    return static_cast<std::uint8_t>(dw[i / 4] >> (8 * (3 - i % 4)));
}

unsigned dwords_for(std::size_t bytes) noexcept {
    return static_cast<unsigned>((bytes + 3) / 4);
}
unsigned text_dwords(const std::string& t) noexcept {
    return dwords_for(t.size() + 1);  // with its NUL
}

// ---- encoding ----------------------------------------------------------------------------------

struct Sizer {
    std::size_t entries = 0;
    bool too_deep = false;
    bool bad_input = false;
};

/// Dwords of a directory's header + entries.
std::size_t head_len(const PropertyDir& d, bool root) noexcept {
    return (root ? kRootHeader : kDirHeader) + kEntry * d.entries.size();
}

/// Dwords of a directory's leaves plus the padding dword per sub-directory.
std::size_t leaf_len(const PropertyDir& d) noexcept {
    std::size_t n = 0;
    for (const auto& e : d.entries) {
        switch (e.type) {
            case PropertyType::text: n += text_dwords(e.text); break;
            case PropertyType::data: n += dwords_for(e.data.size()); break;
            case PropertyType::directory: n += 1; break;
            case PropertyType::value: break;
        }
    }
    return n;
}

/// Whole subtree size; validates keys, text and limits on the way.
std::size_t tree_len(const PropertyDir& d, bool root, unsigned depth, Sizer& s) {
    if (depth > kMaxPropertyDepth) {
        s.too_deep = true;
        return 0;
    }
    std::size_t n = head_len(d, root) + leaf_len(d);
    s.entries += d.entries.size();
    for (const auto& e : d.entries) {
        if (!key_valid(e.key)) {
            s.bad_input = true;
        }
        switch (e.type) {
            case PropertyType::text: s.bad_input |= e.text.find('\0') != std::string::npos; break;
            case PropertyType::data: s.bad_input |= e.data.empty(); break;
            case PropertyType::directory: n += tree_len(e.dir, false, depth + 1, s); break;
            case PropertyType::value: break;
            default: s.bad_input = true; break;
        }
    }
    return n;
}

void put_entry(std::vector<std::uint32_t>& out, std::size_t at, const Property& e,
               std::size_t length, std::uint32_t value) {
    std::array<std::uint8_t, kMaxPropertyKey> key{};
    std::copy(e.key.begin(), e.key.end(), key.begin());
    pack_be(key, std::span(out).subspan(at, 2));
    out[at + 2] = PROP_LENGTH::make(static_cast<std::uint32_t>(length)) |
                  PROP_TYPE::make(static_cast<std::uint32_t>(e.type));
    out[at + 3] = value;
}

/// Writes `d` at `start`; returns the offset just past its subtree.
std::size_t format_dir(const PropertyDir& d, bool root, std::size_t start,
                       std::vector<std::uint32_t>& out) {
    const std::size_t head = head_len(d, root);
    if (root) {
        out[start] = kPropertyRootMagic;
        out[start + 1] = static_cast<std::uint32_t>(kEntry * d.entries.size());
    } else {
        std::copy(d.uuid.begin(), d.uuid.end(), out.begin() + static_cast<std::ptrdiff_t>(start));
    }
    std::size_t entry_at = start + (root ? kRootHeader : kDirHeader);
    std::size_t data_at = start + head;
    std::size_t dir_at = start + head + leaf_len(d);
    for (const auto& e : d.entries) {
        switch (e.type) {
            case PropertyType::value: put_entry(out, entry_at, e, 1, e.value); break;
            case PropertyType::text: {
                const unsigned n = text_dwords(e.text);
                put_entry(out, entry_at, e, n, static_cast<std::uint32_t>(data_at));
                const auto* p = reinterpret_cast<const std::uint8_t*>(e.text.data());
                pack_be({p, e.text.size()}, std::span(out).subspan(data_at, n));
                data_at += n;
                break;
            }
            case PropertyType::data: {
                const unsigned n = dwords_for(e.data.size());
                put_entry(out, entry_at, e, n, static_cast<std::uint32_t>(data_at));
                pack_be(e.data, std::span(out).subspan(data_at, n));
                data_at += n;
                break;
            }
            case PropertyType::directory:
                put_entry(out, entry_at, e, head_len(e.dir, false),
                          static_cast<std::uint32_t>(dir_at));
                dir_at = format_dir(e.dir, false, dir_at, out);
                break;
        }
        entry_at += kEntry;
    }
    return dir_at;
}

// ---- parsing ------------------------------------------------------------------------------------

struct Range {
    std::size_t begin, end;  ///< [begin, end)
};

struct Parser {
    std::span<const std::uint32_t> block;
    std::vector<Range> ancestors;  ///< header + entries of every directory being parsed
    unsigned entries = 0;

    bool hits_ancestor(Range r) const noexcept {
        return std::any_of(ancestors.begin(), ancestors.end(),
                           [&](const Range& a) { return r.begin < a.end && a.begin < r.end; });
    }

    /// A leaf or sub-directory at [off, off + len): inside the block, past the root header, not
    /// over any directory being parsed.
    bool place_ok(std::uint64_t off, std::uint64_t len) const noexcept {
        return off >= kRootHeader && off + len <= block.size() &&
               !hits_ancestor({static_cast<std::size_t>(off), static_cast<std::size_t>(off + len)});
    }

    static bool parse_key(std::uint32_t k0, std::uint32_t k1, std::string& key) {
        const std::array<std::uint32_t, 2> k{k0, k1};
        key.clear();
        bool ended = false;
        for (std::size_t i = 0; i < kMaxPropertyKey; ++i) {
            const auto c = static_cast<char>(byte_at(k, i));
            if (c == '\0') {
                ended = true;
            } else if (ended || c <= 0x20 || c >= 0x7f) {
                return false;
            } else {
                key.push_back(c);
            }
        }
        return !key.empty();
    }

    bool dir(std::size_t header_at, std::size_t content_at, std::size_t content_len, unsigned depth,
             PropertyDir& out) {
        if (depth > kMaxPropertyDepth || content_len % kEntry != 0) {
            return false;
        }
        const Range self{header_at, content_at + content_len};
        if (self.end > block.size() || hits_ancestor(self)) {
            return false;
        }
        ancestors.push_back(self);
        const std::size_t n = content_len / kEntry;
        out.entries.reserve(n);
        for (std::size_t i = 0; i < n; ++i) {
            if (++entries > kMaxPropertyEntries) {
                return false;
            }
            const auto e = block.subspan(content_at + kEntry * i, kEntry);
            Property p;
            if (!parse_key(e[0], e[1], p.key) || PROP_RSVD::get(e[2]) != 0) {
                return false;
            }
            const std::uint32_t len = PROP_LENGTH::get(e[2]);
            const std::uint32_t val = e[3];
            p.type = static_cast<PropertyType>(PROP_TYPE::get(e[2]));
            switch (p.type) {
                case PropertyType::value:
                    if (len != 1) {
                        return false;
                    }
                    p.value = val;
                    break;
                case PropertyType::text:
                case PropertyType::data: {
                    if (len == 0 || !place_ok(val, len)) {
                        return false;
                    }
                    const auto leaf = block.subspan(val, len);
                    if (p.type == PropertyType::text) {
                        for (std::size_t b = 0; b < 4u * len; ++b) {
                            const auto c = static_cast<char>(byte_at(leaf, b));
                            if (c == '\0') {
                                break;
                            }
                            p.text.push_back(c);
                        }
                    } else {
                        p.data.resize(4u * len);
                        for (std::size_t b = 0; b < p.data.size(); ++b) {
                            p.data[b] = byte_at(leaf, b);
                        }
                    }
                    break;
                }
                case PropertyType::directory: {
                    if (len < kDirHeader || !place_ok(val, len)) {
                        return false;
                    }
                    p.dir.uuid = {block[val], block[val + 1], block[val + 2], block[val + 3]};
                    if (!dir(val, val + kDirHeader, len - kDirHeader, depth + 1, p.dir)) {
                        return false;
                    }
                    break;
                }
                default: return false;
            }
            out.entries.push_back(std::move(p));
        }
        ancestors.pop_back();
        return true;
    }
};

std::uint32_t value_or(const PropertyDir& d, std::string_view key, std::uint32_t dflt) noexcept {
    const Property* p = d.find(key, PropertyType::value);
    return p != nullptr ? p->value : dflt;
}

}  // namespace

// ---- PropertyDir --------------------------------------------------------------------------------

const Property* PropertyDir::find(std::string_view key, PropertyType type) const noexcept {
    for (const auto& e : entries) {
        if (e.type == type && e.key == key) {
            return &e;
        }
    }
    return nullptr;
}

PropertyDir& PropertyDir::add_value(std::string key, std::uint32_t value) {
    Property p;
    p.key = std::move(key);
    p.type = PropertyType::value;
    p.value = value;
    entries.push_back(std::move(p));
    return *this;
}
PropertyDir& PropertyDir::add_text(std::string key, std::string text) {
    Property p;
    p.key = std::move(key);
    p.type = PropertyType::text;
    p.text = std::move(text);
    entries.push_back(std::move(p));
    return *this;
}
PropertyDir& PropertyDir::add_data(std::string key, std::vector<std::uint8_t> bytes) {
    Property p;
    p.key = std::move(key);
    p.type = PropertyType::data;
    p.data = std::move(bytes);
    entries.push_back(std::move(p));
    return *this;
}
PropertyDir& PropertyDir::add_dir(std::string key, PropertyDir dir) {
    Property p;
    p.key = std::move(key);
    p.type = PropertyType::directory;
    p.dir = std::move(dir);
    entries.push_back(std::move(p));
    return *this;
}

// ---- block codec --------------------------------------------------------------------------------

Result<std::vector<std::uint32_t>> encode_properties(const PropertyDir& root) {
    Sizer s;
    const std::size_t total = tree_len(root, true, 1, s);
    if (s.bad_input) {
        return fail(std::errc::invalid_argument);
    }
    if (s.too_deep || s.entries > kMaxPropertyEntries || total > kXdMaxPropertyBlock) {
        return fail(std::errc::message_size);
    }
    std::vector<std::uint32_t> out(total, 0);
    format_dir(root, true, 0, out);
    return out;
}

Result<PropertyDir> parse_properties(std::span<const std::uint32_t> block) {
    if (block.size() < kRootHeader || block.size() > kXdMaxPropertyBlock ||
        block[0] != kPropertyRootMagic || block[1] > block.size() - kRootHeader) {
        return malformed();
    }
    Parser p{block, {}, 0};
    PropertyDir root;
    if (!p.dir(0, kRootHeader, block[1], 1, root)) {
        return malformed();
    }
    return root;
}

// ---- host description ---------------------------------------------------------------------------

ServiceInfo tbverbs_service(std::uint32_t settings) {
    ServiceInfo s;
    s.key = std::string(kTbverbsServiceKey);
    s.uuid = kTbverbsServiceUuid;
    s.prtcid = kTbverbsProtocolId;
    s.prtcvers = kTbverbsProtocolVersion;
    s.prtcrevs = kTbverbsProtocolRevision;
    s.prtcstns = settings;
    return s;
}

PropertyDir build_host_directory(const HostInfo& host) {
    PropertyDir root;
    root.add_value("vendorid", host.vendor_id);
    if (!host.vendor_name.empty()) {
        root.add_text("vendorid", host.vendor_name);
    }
    root.add_value("deviceid", host.device_id);
    if (host.device_rev) {
        root.add_value("devicerv", *host.device_rev);
    }
    for (const auto& s : host.services) {
        PropertyDir d;
        d.uuid = s.uuid;
        d.add_value("prtcid", s.prtcid)
            .add_value("prtcvers", s.prtcvers)
            .add_value("prtcrevs", s.prtcrevs)
            .add_value("prtcstns", s.prtcstns);
        root.add_dir(s.key, std::move(d));
    }
    if (!host.device_name.empty()) {
        root.add_text("deviceid", host.device_name);
    }
    root.add_value("maxhopid", host.max_hop_id);
    return root;
}

Result<HostInfo> read_host_directory(const PropertyDir& root) {
    const Property* vendor = root.find("vendorid", PropertyType::value);
    const Property* device = root.find("deviceid", PropertyType::value);
    if (vendor == nullptr || device == nullptr) {
        return malformed();
    }
    HostInfo h;
    h.vendor_id = vendor->value;
    h.device_id = device->value;
    if (const Property* t = root.find("vendorid", PropertyType::text)) {
        h.vendor_name = t->text;
    }
    if (const Property* t = root.find("deviceid", PropertyType::text)) {
        h.device_name = t->text;
    }
    if (const Property* r = root.find("devicerv", PropertyType::value)) {
        h.device_rev = r->value;
    }
    h.max_hop_id = value_or(root, "maxhopid", 15);
    for (const auto& e : root.entries) {
        if (e.type != PropertyType::directory) {
            continue;
        }
        ServiceInfo s;
        s.key = e.key;
        s.uuid = e.dir.uuid;
        s.prtcid = value_or(e.dir, "prtcid", 0);
        s.prtcvers = value_or(e.dir, "prtcvers", 0);
        s.prtcrevs = value_or(e.dir, "prtcrevs", 0);
        s.prtcstns = value_or(e.dir, "prtcstns", 0);
        h.services.push_back(std::move(s));
    }
    return h;
}

// ---- chunks -------------------------------------------------------------------------------------

std::optional<std::span<const std::uint32_t>> property_chunk(std::span<const std::uint32_t> block,
                                                             unsigned offset) noexcept {
    if (offset > block.size()) {
        return std::nullopt;
    }
    const std::size_t n = std::min<std::size_t>(block.size() - offset, kXdMaxPropertyChunk);
    return block.subspan(offset, n);
}

void PropertyAssembler::reset() noexcept {
    started_ = false;
    total_ = 0;
    generation_ = 0;
    block_.clear();
}

Result<bool> PropertyAssembler::add(const XdPropertiesResponse& r) {
    const bool first = !started_;
    const bool fits = r.total != 0 && r.total <= kXdMaxPropertyBlock &&
                      r.offset + r.data.size() <= r.total && r.data.size() <= kXdMaxPropertyChunk;
    const bool agrees =
        first ? r.offset == 0
              : r.total == total_ && r.generation == generation_ && r.offset == block_.size();
    if (!fits || !agrees || r.data.empty()) {
        reset();
        return malformed();
    }
    if (first) {
        started_ = true;
        total_ = r.total;
        generation_ = r.generation;
        block_.reserve(total_);
    }
    block_.insert(block_.end(), r.data.begin(), r.data.end());
    return complete();
}

}  // namespace tbv::usb4
