// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: XDomain property-block parser (src/usb4/properties.hpp) and the
// PROPERTIES_RESPONSE reassembler. Input: big-endian dwords. Invariants: a block that parses and
// re-encodes parses again to a tree that encodes to the same block (encode∘parse is stable), and
// reassembling the block from 45-dword chunks gives it back.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "usb4/properties.hpp"
#include "util/endian.hpp"

using namespace tbv;
using namespace tbv::usb4;

namespace {

void require(bool ok) {
    if (!ok) {
        __builtin_trap();
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::size_t n = std::min<std::size_t>(size / 4, 600);  // past the 500-dword limit too
    std::vector<std::uint32_t> block(n);
    for (std::size_t i = 0; i < n; ++i) {
        block[i] = util::load_be32(data + 4 * i);
    }
    auto tree = parse_properties(block);
    if (!tree) {
        return 0;
    }
    (void)read_host_directory(*tree);
    auto enc = encode_properties(*tree);
    if (enc) {
        auto again = parse_properties(*enc);
        require(again.has_value());
        auto enc2 = encode_properties(*again);
        require(enc2 && *enc2 == *enc);
    }

    PropertyAssembler a;
    unsigned offset = 0;
    for (;;) {
        auto chunk = property_chunk(block, offset);
        require(chunk.has_value());
        XdPropertiesResponse r;
        r.offset = static_cast<std::uint16_t>(offset);
        r.total = static_cast<std::uint16_t>(block.size());
        r.generation = 1;
        r.data = *chunk;
        auto done = a.add(r);
        require(done.has_value() || block.empty());
        if (!done || *done) {
            break;
        }
        offset = a.next_offset();
    }
    require(block.empty() || (a.complete() && std::equal(block.begin(), block.end(),
                                                         a.block().begin(), a.block().end())));
    return 0;
}
