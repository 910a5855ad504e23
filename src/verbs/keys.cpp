// SPDX-License-Identifier: Apache-2.0
// Memory keys: the keyed Feistel permutation and the key table (threat model in keys.hpp).
#include "verbs/keys.hpp"

#include <sys/random.h>

#include <bit>
#include <cerrno>
#include <cstddef>

namespace tbv::verbs {

Result<KeySecret> KeySecret::from_getrandom() {
    KeySecret s;
    auto* p = reinterpret_cast<unsigned char*>(s.round_keys.data());
    std::size_t left = sizeof(s.round_keys);
    while (left > 0) {
        const ssize_t n = ::getrandom(p, left, 0);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return fail_errno(errno);
        }
        p += n;
        left -= static_cast<std::size_t>(n);
    }
    return s;
}

namespace {

// A 64-bit xorshift-multiply finaliser (two odd multipliers with xorshifts between them): every
// input bit affects every output bit, so a one-bit change in the half or the round key flips about
// half of the round output.
constexpr std::uint64_t mix64(std::uint64_t z) noexcept {
    z ^= z >> 31;
    z *= 0x7fb5d329728ea185ull;
    z ^= z >> 27;
    z *= 0x81dadef4bc2dd44dull;
    z ^= z >> 33;
    return z;
}

}  // namespace

std::uint16_t KeyCipher::round(unsigned i, std::uint16_t half, KeyKind kind) const noexcept {
    const std::uint64_t in = secret_.round_keys[i] ^ (std::uint64_t{half} << 8) ^
                             (std::uint64_t{static_cast<std::uint8_t>(kind)} << 40) ^ i;
    return static_cast<std::uint16_t>(mix64(in) >> 48);
}

std::uint32_t KeyCipher::encrypt(std::uint32_t plain, KeyKind kind) const noexcept {
    auto left = static_cast<std::uint16_t>(plain >> 16);
    auto right = static_cast<std::uint16_t>(plain);
    for (unsigned i = 0; i < KeySecret::kRounds; ++i) {
        const auto next = static_cast<std::uint16_t>(left ^ round(i, right, kind));
        left = right;
        right = next;
    }
    return (std::uint32_t{left} << 16) | right;
}

std::uint32_t KeyCipher::decrypt(std::uint32_t key, KeyKind kind) const noexcept {
    auto left = static_cast<std::uint16_t>(key >> 16);
    auto right = static_cast<std::uint16_t>(key);
    for (unsigned i = KeySecret::kRounds; i-- > 0;) {
        const auto prev = static_cast<std::uint16_t>(right ^ round(i, left, kind));
        right = left;
        left = prev;
    }
    return (std::uint32_t{left} << 16) | right;
}

KeyTable::KeyTable(std::uint32_t capacity, const KeySecret& secret)
    : cipher_(secret), slots_(capacity), free_(capacity), free_count_(capacity) {
    index_bits_ = capacity <= 1 ? 1u : static_cast<unsigned>(std::bit_width(capacity - 1));
    index_mask_ = (1u << index_bits_) - 1;
    gen_mask_ = 0xffffffffu >> index_bits_;
    for (std::uint32_t i = 0; i < capacity; ++i) {
        free_[i] = i;
    }
}

Result<KeyTable> KeyTable::create(std::uint32_t capacity, const KeySecret& secret) {
    if (capacity == 0 || capacity > (1u << 24)) {
        return fail(std::errc::invalid_argument);
    }
    return KeyTable(capacity, secret);
}

Result<KeyTable> KeyTable::create(std::uint32_t capacity) {
    auto secret = KeySecret::from_getrandom();
    if (!secret) {
        return Failure{secret.error()};
    }
    return create(capacity, *secret);
}

Result<KeyPair> KeyTable::allocate() {
    if (free_count_ == 0) {
        return fail(std::errc::not_enough_memory);
    }
    const std::uint32_t slot = free_[free_head_];
    free_head_ = (free_head_ + 1) % capacity();
    --free_count_;
    ++in_use_;
    Slot& s = slots_[slot];
    s.in_use = true;
    const std::uint32_t plain = slot | (s.gen << index_bits_);
    return KeyPair{slot, cipher_.encrypt(plain, KeyKind::local),
                   cipher_.encrypt(plain, KeyKind::remote)};
}

void KeyTable::release(std::uint32_t slot) noexcept {
    if (slot >= slots_.size() || !slots_[slot].in_use) {
        return;
    }
    Slot& s = slots_[slot];
    s.in_use = false;
    s.gen = (s.gen + 1) & gen_mask_;
    free_[(free_head_ + free_count_) % capacity()] = slot;
    ++free_count_;
    --in_use_;
}

}  // namespace tbv::verbs
