// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: USB4 control-packet decoders (src/usb4/packets.hpp) and ring-0 framing
// (nhi::ControlRing::decode). Input: byte 0 = PDF (any value, unknown ones included), the rest =
// big-endian dwords as on the wire. Invariants checked besides "no crash, no sanitizer report":
// whatever decodes re-encodes to exactly the same dwords, and a discovery message likewise.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>
#include <variant>
#include <vector>

#include "nhi/control_ring.hpp"
#include "usb4/packets.hpp"
#include "util/endian.hpp"

using namespace tbv;
using namespace tbv::usb4;

namespace {

void require(bool ok) {
    if (!ok) {
        __builtin_trap();
    }
}

bool same(const Result<ControlPacket>& p, unsigned pdf, std::span<const std::uint32_t> dw) {
    return p && p->pdf == pdf && p->payload().size() == dw.size() &&
           std::equal(dw.begin(), dw.end(), p->payload().begin());
}

void check_packets(unsigned pdf, std::span<const std::uint32_t> dw) {
    auto any = decode(pdf, dw);
    if (!any) {
        return;
    }
    std::visit([&](const auto& v) { require(same(encode(v), pdf, dw)); }, *any);
    if (const auto* x = std::get_if<XdomainPacket>(&*any)) {
        auto m = decode_discovery(*x);
        if (m) {
            require(same(encode_discovery(x->route, x->seq, *m), pdf, dw));
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) {
        return 0;
    }
    const unsigned pdf = data[0];
    const std::size_t n = std::min<std::size_t>((size - 1) / 4, 80);  // beyond 63: still refused
    std::vector<std::uint32_t> dw(n);
    for (std::size_t i = 0; i < n; ++i) {
        dw[i] = util::load_be32(data + 1 + 4 * i);
    }
    check_packets(pdf, dw);

    // The same bytes as a received ring-0 buffer: CRC and length checks, then the decoders.
    const auto* bytes = reinterpret_cast<const std::byte*>(data + 1);
    auto p = nhi::ControlRing::decode(0, pdf & 0xf, {bytes, size - 1});
    if (p) {
        check_packets(p->pdf, p->payload());
        std::array<std::byte, 256> again{};
        require(nhi::ControlRing::encode(p->payload(), again) == size - 1);
        require(std::memcmp(again.data(), bytes, size - 1) == 0);
    }
    return 0;
}
